"""The one command-line mechanism: config dataclasses parsed by tyro, sub-commands, one-line errors.

    cfg = parse_cli(ExtendConfig, args, prog="sts-extend-tokenizer")   # flags; --config FILE.yaml first
    return run_subcommand("sts-train", SUBCOMMANDS, args)              # `sts-train sft ...` -> its function

Every command (each `sts-*` script, `sts STAGE`, every benchmark) parses its flags here, so that
they behave alike: `--config FILE.yaml` (anywhere) loads the defaults from a file that
`sts.config.load_config` checks strictly, flags win over it; a constraint declared on a field
(`Annotated[int, Ge(1)]`) is checked for flags and YAML alike, and `--help` shows it; a bad flag or
value is ONE line naming the flag (`--optim.lr must be > 0, got -1`) and exit status 2 under
`sts.errors.cli_main`, before anything is loaded; an old flag spelling (a root config's
`RENAMED_KEYS`) still works, with one warning. Only `cli` modules import this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import logging
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import tyro
import yaml

from sts.cli_help import flag_arities, positional_count, render_help
from sts.config import (
    ConfigError,
    _metadata,
    check_config,
    config_to_dict,
    constraint_text,
    dict_to_config,
    field_hints,
    renamed_keys,
    upgrade_keys,
)
from sts.errors import UsageError, print_quietly

T = TypeVar("T")
log = logging.getLogger(__name__)

CONFIG_FLAG = "--config"
FULL_HELP_FLAG = "--help-full"


def parse_cli(
    cls: type[T],
    args: Sequence[str] | None = None,
    *,
    prog: str,
    description: str | None = None,
    default: T | None = None,
    hide: Sequence[str] = (),
    fixed: dict[str, Any] | None = None,
) -> T:
    """Parse `args` (default `sys.argv[1:]`) into `cls`.

    `--config FILE.yaml` (anywhere in args) gives the defaults, on top of `default` when given; flags
    win over both. `hide`: top-level fields (groups) that this command does not take: not shown, not
    accepted, left at the default. `fixed`: values the command sets whatever the file says (the
    stage of `sts-train STAGE`). Raises `UsageError`/`ConfigError` (one line, exit 2 under
    `cli_main`) for a bad flag or value; `--help` exits 0 through SystemExit, as tyro does.
    """
    args = list(sys.argv[1:] if args is None else args)
    args, config_path = _take_config(args)
    args = upgrade_flags(cls, args, prog=prog)
    args = upgrade_positionals(cls, args, prog=prog)
    if config_path is not None:
        base = config_to_dict(default) if default is not None else {}
        data = _merge(base, upgrade_keys(cls, _read_yaml(config_path), source=config_path))
        default = dict_to_config(cls, _merge(data, fixed or {}), source=config_path)
    view = cli_view(cls, hide=frozenset(hide))
    if any(a in ("-h", "--help") for a in args):
        shown = to_view(default, view) if default is not None else None
        # quiet when piped into `head` (also for benchmarks, which run without `cli_main`)
        print_quietly(render_help(view, prog=prog, description=description or cls.__doc__, default=shown))
        raise SystemExit(0)
    args = ["--help" if a == FULL_HELP_FLAG else a for a in args]
    buffer = _Utf8Buffer()
    try:
        with contextlib.redirect_stderr(buffer):
            parsed = tyro.cli(
                view,
                args=args,
                prog=prog,
                description=description or cls.__doc__,
                default=to_view(default, view) if default is not None else None,
            )
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        problem = _config_error_of(exit_)
        if problem is not None:  # a constraint or check of the config itself
            raise _as_flag_error(cls, problem) from None
        raise UsageError(tyro_error_line(buffer.getvalue(), prog)) from None
    except ConfigError as err:
        raise _as_flag_error(cls, err) from None
    try:
        cfg = from_view(parsed, cls, default=default, hide=frozenset(hide))
        check_config(cfg)
    except ConfigError as err:
        raise _as_flag_error(cls, err) from None
    return cfg


# --- sub-commands -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subcommand:
    """One sub-command: its name, the function that runs it (`module:function`, called with the rest
    of the arguments, returns the exit status) and a one-line summary for the usage text."""

    name: str
    target: str
    summary: str


def subcommand_usage(prog: str, commands: Sequence[Subcommand], footer: str = "") -> str:
    width = max(len(c.name) for c in commands)
    lines = [f"usage: {prog} {{{','.join(c.name for c in commands)}}} [--config FILE.yaml] [OPTIONS]", ""]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in commands]
    lines += ["", f"`{prog} COMMAND --help` shows a command's options.", *([footer] if footer else [])]
    return "\n".join(lines)


def run_subcommand(prog: str, commands: Sequence[Subcommand], args: Sequence[str], footer: str = "") -> int:
    """Run `args[0]`'s sub-command with the rest of `args`; the usage text for none or `--help`."""
    args = list(args)
    if not args or args[0] in ("-h", "--help"):
        print_quietly(subcommand_usage(prog, commands, footer))
        return 0 if args else 2
    by_name = {c.name: c for c in commands}
    if args[0] not in by_name:
        close = [n for n in by_name if n.startswith(args[0][:3])] or list(by_name)
        raise UsageError(
            f"unknown command {args[0]!r}; commands: {', '.join(by_name)} (did you mean {close[0]!r}?)"
        )
    module, _, function = by_name[args[0]].target.partition(":")
    return getattr(importlib.import_module(module), function)(args[1:]) or 0


# --- views: what tyro parses ------------------------------------------------------------------------


_VIEWS: dict[tuple[type, frozenset[str]], type] = {}


def cli_view(cls: type, hide: frozenset[str] = frozenset()) -> type:
    """A subclass of `cls` for tyro: hidden fields suppressed, each constrained field's help hint
    showing its constraint, nested groups as views too. Parsed values go back with `from_view`."""
    key = (cls, hide)
    if key in _VIEWS:
        return _VIEWS[key]
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = field_hints(cls)[f.name]
        bare, _ = _metadata(hint)
        if f.name in hide:
            hint = Annotated[hint, tyro.conf.Suppress]
        elif dataclasses.is_dataclass(bare) and isinstance(bare, type):
            hint = cli_view(bare)
            fields.append((f.name, hint, _view_field(f, hint)))
            continue
        elif constraint_text(hint):
            text = constraint_text(hint)
            hint = Annotated[hint, tyro.conf.arg(help_behavior_hint=lambda d, t=text: f"(default: {d}; {t})")]
        else:
            continue
        fields.append((f.name, hint, _view_field(f)))
    params = cls.__dataclass_params__
    view = dataclasses.make_dataclass(cls.__name__, fields, bases=(cls,), frozen=params.frozen, eq=params.eq,
                                      namespace={"__post_init__": _no_checks})  # fmt: skip
    view.__doc__, view.__module__, view.__qualname__ = cls.__doc__, cls.__module__, cls.__qualname__
    _VIEWS[key] = view
    return view


def _view_field(f: dataclasses.Field, group_view: type | None = None) -> dataclasses.Field:
    """The view's field: `f`'s default (a group's default as an instance of its view), `kw_only` kept."""
    kw = {"kw_only": f.kw_only} if f.kw_only is not dataclasses.MISSING else {}
    if group_view is not None:
        if f.default_factory is not dataclasses.MISSING:
            return dataclasses.field(default_factory=lambda: to_view(f.default_factory(), group_view), **kw)
        if f.default is not dataclasses.MISSING:
            return dataclasses.field(default_factory=lambda: to_view(f.default, group_view), **kw)
    if f.default is not dataclasses.MISSING:
        return dataclasses.field(default=f.default, **kw)
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, **kw)
    return dataclasses.field(**kw)


def to_view(cfg: Any, view: type) -> Any:
    """`cfg` rebuilt as an instance of `view` (its groups as their views)."""
    values = {}
    for f in dataclasses.fields(view):
        if not f.init:
            continue
        value = getattr(cfg, f.name)
        bare, _ = _metadata(field_hints(view)[f.name])
        if dataclasses.is_dataclass(bare) and isinstance(bare, type) and dataclasses.is_dataclass(value):
            value = to_view(value, bare)
        values[f.name] = value
    return view(**values)


def from_view(
    parsed: Any, cls: type, *, default: Any = None, hide: frozenset[str] = frozenset(), prefix: str = ""
) -> Any:
    """The parsed view as a plain `cls` (groups as their own classes), rebuilt through `__init__` so
    that its checks run now (a view checks nothing); hidden fields come from `default`. A check that
    fails is a `ConfigError` under the group's dotted name."""
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        value = getattr(default if f.name in hide and default is not None else parsed, f.name)
        bare, _ = _metadata(field_hints(cls)[f.name])
        if dataclasses.is_dataclass(bare) and isinstance(bare, type) and dataclasses.is_dataclass(value):
            value = from_view(value, bare, prefix=f"{prefix}{f.name}.")
        values[f.name] = value
    try:
        return cls(**values)
    except ConfigError as err:
        raise err.located(prefix=prefix.rstrip(".")) from None


def _no_checks(self) -> None:
    """A view's `__post_init__`: the real class checks the values when `from_view` rebuilds it."""


# --- flags: --config, renamed spellings, error lines ------------------------------------------------


def _take_config(args: list[str]) -> tuple[list[str], str | None]:
    rest, path = [], None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == CONFIG_FLAG:
            if i + 1 >= len(args):
                raise ConfigError("needs a YAML file", key=CONFIG_FLAG)
            path, i = args[i + 1], i + 2
            continue
        if arg.startswith(CONFIG_FLAG + "="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return rest, path


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.safe_load(file) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read YAML config ({' '.join(str(err).split())})", source=path) from err
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of option names to values", source=path)
    return data


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def flag(key: str) -> str:
    """The flag of a dotted option name as tyro spells it: `optim.warmup_steps` -> `--optim.warmup-steps`."""
    return "--" + key.replace("_", "-")


def flag_of(cls: type, key: str) -> str:
    """The flag (or positional name) that sets dotted option `key` of `cls`, renames included."""
    target, parts = cls, key.split(".")
    names = []
    for i, part in enumerate(parts):
        hints = field_hints(target) if dataclasses.is_dataclass(target) else {}
        hint = hints.get(part)
        name = part
        for item in typing_metadata(hint):
            if getattr(item, "name", None):
                name = item.name
        if hint is not None and i == len(parts) - 1 and _is_positional(hint):
            return part.upper()
        names.append(name)
        target, _ = _metadata(hint) if hint is not None else (None, [])
    return flag(".".join(names))


def typing_metadata(hint: Any) -> list[Any]:
    """Every `Annotated` item on `hint`, outermost last."""
    found = []
    while hint is not None and typing.get_origin(hint) is Annotated:
        hint, *extra = typing.get_args(hint)
        found += extra
    return found


def _is_positional(hint: Any) -> bool:
    return any(item is tyro.conf.Positional for item in typing_metadata(hint))


def _config_error_of(exit_: SystemExit) -> ConfigError | None:
    """The `ConfigError` a config's `__post_init__` raised while tyro built it (tyro prints it and
    exits; the error stays in the exception context), placed under the group tyro was building."""
    err, prefix = exit_.__context__, ""
    if type(err).__name__ == "InstantiationError" and isinstance(err.__context__, ConfigError):
        prefix = getattr(err, "arg", "") if isinstance(getattr(err, "arg", ""), str) else ""
        err = err.__context__
    return err.located(prefix=prefix.strip(".")) if isinstance(err, ConfigError) else None


def _as_flag_error(cls: type, err: ConfigError) -> ConfigError:
    if err.key is None or err.source is not None:
        return err
    return ConfigError(err.problem, key=flag_of(cls, err.key.split("[")[0]))


def upgrade_flags(cls: type, args: list[str], *, prog: str) -> list[str]:
    """`args` with old flag spellings (the class's `RENAMED_KEYS`) in their new form, one warning."""
    renamed = renamed_keys(cls)
    if not renamed:
        return args
    exact: dict[str, str] = {}
    for old, new in renamed.items():
        if isinstance(new, str):
            exact[flag(old)] = flag(new)
            group, _, leaf = new.rpartition(".")
            exact[flag(f"no_{old}")] = flag(f"{group}.no_{leaf}" if group else f"no_{leaf}")
    out, used = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        key = name[2:].replace("-", "_") if name.startswith("--") else ""
        negated = key.startswith("no_") and callable(renamed.get(key[3:]))
        converter = renamed.get(key[3:] if negated else key)
        if callable(converter):
            has_value = eq or (not negated and i + 1 < len(args) and not args[i + 1].startswith("--"))
            raw = value if eq else args[i + 1] if has_value else ("false" if negated else "true")
            i += 2 if has_value and not eq else 1
            out += _flags_from(converter(yaml.safe_load(raw)))
            used.append(f"{name} -> {' '.join(_flags_from(converter(yaml.safe_load(raw))))}")
            continue
        prefix = next((o for o in exact if name.startswith(o + ".")), None)
        if name in exact or prefix:
            new = exact[name] if name in exact else exact[prefix] + name[len(prefix) :]
            out.append(new + eq + value)
            used.append(f"{name} -> {new}")
        else:
            out.append(arg)
        i += 1
    if used:
        log.warning("%s: old flag spelling(s) %s; the old ones will be removed", prog, ", ".join(used))
    return out


def upgrade_positionals(cls: type, args: list[str], *, prog: str) -> list[str]:
    """`args` with the bare words a command used to take as positional arguments (the class's
    `RENAMED_POSITIONALS`, after its current positionals, e.g. `("out_dir",)`) given as their flags,
    one warning. `sts demo runs/demo` reads as `sts demo --out-dir runs/demo`."""
    renamed = tuple(getattr(cls, "RENAMED_POSITIONALS", ()))
    if not renamed:
        return args
    view = cli_view(cls)
    arities, current = flag_arities(view), positional_count(view)
    bare, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and not _is_number(arg):
            name, eq, _ = arg.partition("=")
            arity = arities.get(name, 1)
            if eq:
                i += 1
            elif arity is None:
                i += 1
                while i < len(args) and not (args[i].startswith("-") and not _is_number(args[i])):
                    i += 1
            else:
                i += 1 + arity
            continue
        bare.append(i)
        i += 1
    extra = bare[current : current + len(renamed)]
    if not extra:
        return args
    out, moved = list(args), []
    for index, name in zip(extra, renamed, strict=False):
        moved.append(f"{args[index]} -> {flag(name)} {args[index]}")
        out[index] = f"{flag(name)}={args[index]}"
    log.warning(
        "%s: positional %s is now a flag: %s", prog, "/".join(n.upper() for n in renamed), ", ".join(moved)
    )
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _flags_from(values: dict[str, Any]) -> list[str]:
    flags = []
    for key, value in values.items():
        group, _, leaf = key.rpartition(".")
        if isinstance(value, bool):
            flags.append(flag(key) if value else flag(f"{group}.no_{leaf}" if group else f"no_{leaf}"))
        else:
            flags += [flag(key), str(value)]
    return flags


def tyro_error_line(text: str, prog: str) -> str:
    """tyro's boxed error (unicode or ASCII box) as one line: its message and the first flag it suggests."""
    rows = [line.strip().strip("│|").strip() for line in text.splitlines()]
    rows = [r for r in rows if r][1:]  # the first line is the box's top with its title
    sections: list[list[str]] = [[]]
    for row in rows:
        if set(row) <= set("─━-=+╰╯ "):
            sections.append([])
        else:
            sections[-1].append(row)
    sections = [s for s in sections if s]
    head = " ".join(sections[0]) if sections else "bad command line"
    head = re.sub(r"^Error parsing (\S+?):\s*", r"\1: ", head)
    head = head.replace("invalid literal for int() with base 10:", "expects an integer, got")
    head = head.replace("could not convert string to float:", "expects a number, got")
    head = re.sub(r"^Unrecognized options: ", "unrecognized option(s) ", head)
    for section in sections[1:]:
        if section and section[0].startswith("Perhaps you meant"):
            suggestion = next((s.split()[0] for s in section[1:] if s.startswith("-")), None)
            head += f"; did you mean {suggestion}?" if suggestion else ""
    return f"{head} (see {prog} --help)"


class _Utf8Buffer(io.StringIO):
    """Where tyro's error box is caught; says UTF-8 so that rich draws the same box everywhere."""

    encoding = "utf-8"
