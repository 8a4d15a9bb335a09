"""Typed config dataclasses <-> YAML files, checked the same way as command-line flags.

Every command describes its options as one dataclass (groups of options as nested dataclasses) with
a one-line docstring per field. `sts.cli.parse_cli` turns it into flags (tyro); `load_config` reads
the same dataclass from YAML. A value's constraint is declared once, on its field, and `check_config`
applies it whichever way the value came in (docs/configuration.md says how to add an option):

    batch_size: Annotated[int, Ge(1)] = 8            # annotated_types: Gt, Ge, Lt, Le, Interval
    cfg = load_config(TrainConfig, "train/configs/sft_lfm2_350m.yaml")   # strict: unknown keys fail
    save_config(cfg, out_dir / "train_config.yaml")                       # what a run keeps

A root config may rename keys (`RENAMED_KEYS = {"lr": "optim.lr"}`): an old file or flag that uses
the old name is read under the new one, with one warning.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import logging
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import annotated_types as at
import yaml

from sts.errors import InputError
from sts.io import write_text_atomic
from sts.paths import PATH_OPTIONS, absolute_if_local

T = TypeVar("T")
log = logging.getLogger(__name__)

Renamed = str | Callable[[Any], dict[str, Any]]
"""A renamed key's new dotted name, or a function from its old value to {new dotted name: value}."""


@dataclasses.dataclass(frozen=True)
class WhenOff:
    """What a boolean option does when turned off, on its field: `--help` shows it for the option's
    `--no-NAME` flag (an option on by default), whose text must say what that flag does:

        resume: Annotated[bool, WhenOff("start at step 0 from --model's weights")] = True
    """

    text: str


def when_off(hint: Any) -> str | None:
    """The `WhenOff` text on a field's hint, or None."""
    while typing.get_origin(hint) is Annotated:
        hint, *extra = typing.get_args(hint)
        for item in extra:
            if isinstance(item, WhenOff):
                return item.text
    return None


class ConfigError(InputError, ValueError):
    """A setting that is not allowed: an unknown key, a value of the wrong type or out of range.

    `key` is the option's dotted name (`optim.lr`) when one option is at fault; the command line
    names it as its flag (`--optim.lr`) and a YAML file as `FILE: optim.lr`."""

    def __init__(self, problem: str, *, key: str | None = None, source: str | None = None):
        self.problem, self.key, self.source = problem, key, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key} {problem}" if key else f"{where}{problem}")

    def located(self, *, source: str | None = None, prefix: str = "") -> ConfigError:
        """The same error under a file name and/or below a group (`prefix.key`)."""
        key = f"{prefix}.{self.key}" if prefix and self.key else self.key or (prefix or None)
        return ConfigError(self.problem, key=key, source=source or self.source)


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string right below it in the class body), through the MRO;
    a class whose source cannot be read gives none."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            is_doc = isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


# --- constraints ------------------------------------------------------------------------------------


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """Field name -> type hint with its `Annotated` metadata, forward references resolved."""
    return typing.get_type_hints(cls, include_extras=True)


def _metadata(hint: Any) -> tuple[Any, list[Any]]:
    """(the bare type, the annotated_types constraints) of a hint."""
    constraints: list[Any] = []
    while typing.get_origin(hint) is Annotated:
        hint, *extra = typing.get_args(hint)
        for item in extra:
            items = list(item) if isinstance(item, at.GroupedMetadata) else [item]
            constraints += [c for c in items if isinstance(c, at.BaseMetadata)]
    return hint, constraints


_BOUNDS = ((at.Gt, "gt", ">", lambda v, b: v > b), (at.Ge, "ge", ">=", lambda v, b: v >= b),
           (at.Lt, "lt", "<", lambda v, b: v < b), (at.Le, "le", "<=", lambda v, b: v <= b))  # fmt: skip


def _violation(value: Any, constraint: Any) -> str | None:
    """Why `value` breaks `constraint` ("must be >= 1, got 0"), or None."""
    for kind, attr, sign, holds in _BOUNDS:
        if isinstance(constraint, kind):
            bound = getattr(constraint, attr)
            return None if holds(value, bound) else f"must be {sign} {bound}, got {value!r}"
    if isinstance(constraint, at.MinLen) and len(value) < constraint.min_length:
        return f"needs at least {constraint.min_length} item(s), got {len(value)}"
    if isinstance(constraint, at.Predicate) and not constraint.func(value):
        return f"must satisfy {getattr(constraint.func, '__doc__', None) or constraint.func.__name__}, got {value!r}"
    return None


def check_config(cfg: Any, prefix: str = "") -> None:
    """Check every field's declared constraints, nested groups included.

    Raises `ConfigError` with the dotted name of the first field that breaks one; None passes any
    constraint (an optional field that is not set)."""
    names = {f.name for f in dataclasses.fields(cfg)}
    for name, hint in field_hints(type(cfg)).items():
        if name not in names:
            continue
        value, key = getattr(cfg, name), f"{prefix}{name}"
        _, constraints = _metadata(hint)
        for constraint in constraints if value is not None else ():
            problem = _violation(value, constraint)
            if problem:
                raise ConfigError(problem, key=key)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value, f"{key}.")


def constraint_text(hint: Any) -> str:
    """The constraints of a field as help text shows them (">= 1", "> 0, <= 1"), or ""."""
    _, constraints = _metadata(hint)
    parts = []
    for constraint in constraints:
        for kind, attr, sign, _ in _BOUNDS:
            if isinstance(constraint, kind):
                parts.append(f"{sign} {getattr(constraint, attr)}")
    return ", ".join(parts)


# --- YAML -------------------------------------------------------------------------------------------


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-able values, as a run records it: paths become strings, and the path
    options (`sts.paths.PATH_OPTIONS`: model, codec, shards, out_dir, ...) that name an existing local
    path become absolute, so the record means the same from any folder (hub ids stay as given)."""

    def plain(value: Any, key: str = "") -> Any:
        if key in PATH_OPTIONS:
            value = absolute_if_local(value)
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v, k) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return {k: plain(v, k) for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write `cfg` as YAML, atomically."""
    return write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))


def load_config(cls: type[T], path: str | Path, **overrides: Any) -> T:
    """Build `cls` from a YAML file, strictly: an unknown or misplaced key, a wrong type or a value
    out of range is a `ConfigError` naming the file and the key (with the closest valid key).
    `overrides` (dotted names, `**{"optim.lr": 1e-3}`, or renamed old names) win over the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(
            f"cannot read YAML config ({' '.join(str(err).split())})", source=str(path)
        ) from err
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of option names to values", source=str(path))
    data = upgrade_keys(cls, data, source=str(path))
    for key, value in overrides.items():
        set_dotted(data, upgrade_key(cls, key), value)
    return dict_to_config(cls, data, source=str(path))


def make_config(cls: type[T], **options: Any) -> T:
    """`cls` from keyword options, a group's options as `group__option` (`optim__lr=1e-4` sets
    `optim.lr`), checked as a YAML file is (strict names and types, constraints)."""
    data: dict[str, Any] = {}
    for key, value in options.items():
        set_dotted(data, key.replace("__", "."), value)
    return dict_to_config(cls, data, source=cls.__name__)


def dict_to_config(
    cls: type[T],
    data: dict[str, Any],
    *,
    source: str = "config",
    prefix: str = "",
    root: type | None = None,
    base: Any = None,
) -> T:
    """Build `cls` from a mapping (nested mappings for nested groups), checking every key and type.

    Options the mapping leaves out keep their value in `base` (an instance of `cls`), else the
    field's default; a group left partly out keeps the rest of ITS default (the parent's default
    instance of the group, which may differ from the group class's own defaults). `prefix` and
    `root`: where a nested group sits in its root config (for names and suggestions)."""
    root = root or cls
    hints = field_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {name: getattr(base, name) for name in fields} if base is not None else {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(f"is not an option{suggest(root, name, prefix)}", key=key, source=source)
        bare, _ = _metadata(hints[name])
        if dataclasses.is_dataclass(bare) and isinstance(value, dict):
            group_base = values.get(name, _field_default(fields[name]))
            values[name] = dict_to_config(
                bare, value, source=source, prefix=f"{key}.", root=root, base=group_base
            )
        else:
            values[name] = convert(value, hints[name], key=key, source=source, root=root)
    try:
        cfg = cls(**values)
        if not prefix:
            check_config(cfg)
    except ConfigError as err:
        raise err.located(source=source, prefix=prefix.rstrip(".")) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(" ".join(str(err).split()), key=prefix.rstrip(".") or None, source=source) from err
    return cfg


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def convert(value: Any, hint: Any, *, key: str, source: str, root: type | None = None) -> Any:
    """`value` (as YAML gives it) as type `hint`: paths from strings, tuples from lists, nested
    dataclasses from mappings; a `ConfigError` naming `key` when it is not of that type."""
    hint, _ = _metadata(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(value, option, key=key, source=source, root=root)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:  # `X | None`: the error of X says more than "expects X | None"
            raise errors[0]
        raise ConfigError(f"expects {type_name(hint)}, got {value!r}", key=key, source=source)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"is a group of options: expects a mapping, got {value!r}", key=key, source=source
            )
        return dict_to_config(hint, value, source=source, prefix=f"{key}.", root=root)
    ok = True
    if origin is typing.Literal:
        ok = value in args
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is Path:
        ok = isinstance(value, str | Path)
        value = Path(value) if ok else value
    elif origin in (list, tuple, Sequence) or hint in (list, tuple):
        ok = isinstance(value, list | tuple)
        if ok and args:
            fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
            if fixed and len(value) != len(args):
                raise ConfigError(f"expects {len(args)} values, got {value!r}", key=key, source=source)
            kinds = args if fixed else [args[0]] * len(value)
            value = [
                convert(v, k, key=f"{key}[{i}]", source=source)
                for i, (v, k) in enumerate(zip(value, kinds, strict=True))
            ]
        value = tuple(value) if ok and origin is tuple else value
    elif origin is dict or hint is dict:
        ok = isinstance(value, dict)
        if ok and args:
            value = {convert(k, args[0], key=key, source=source): convert(v, args[1], key=f"{key}.{k}", source=source)
                     for k, v in value.items()}  # fmt: skip
    if not ok:
        raise ConfigError(f"expects {type_name(hint)}, got {value!r}", key=key, source=source)
    return value


def type_name(hint: Any) -> str:
    """A type as a user reads it: `int`, `one of ['cpt', 'sft']`, `list of str`, `float or None`."""
    hint, _ = _metadata(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple, Sequence) and args:
        return f"list of {type_name(args[0])}"
    if origin is dict and args:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    return "path" if hint is Path else getattr(hint, "__name__", str(hint))


# --- names: dotted keys, suggestions, renamed keys --------------------------------------------------


def option_names(cls: type, prefix: str = "") -> Iterator[str]:
    """Every dotted option name of `cls`, groups expanded (`optim.lr`, ...)."""
    for name, hint in field_hints(cls).items():
        bare, _ = _metadata(hint)
        if dataclasses.is_dataclass(bare):
            yield from option_names(bare, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def suggest(root: type, name: str, prefix: str = "") -> str:
    """ "; did you mean 'optim.lr'?" for an unknown key `name` under `prefix` of config `root`, or ""."""
    root_names = list(option_names(root))
    here = [n[len(prefix) :] for n in root_names if n.startswith(prefix)]
    misplaced = [n for n in root_names if n.rsplit(".", 1)[-1] == name and not n.startswith(prefix)]
    close = misplaced or [prefix + n for n in difflib.get_close_matches(name, here, n=1, cutoff=0.6)]
    close = close or difflib.get_close_matches(prefix + name, root_names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def renamed_keys(cls: type) -> dict[str, Renamed]:
    """The class's `RENAMED_KEYS` (old flat name -> new dotted name or converter), or {}."""
    return dict(getattr(cls, "RENAMED_KEYS", {}))


def upgrade_key(cls: type, key: str) -> str:
    """The current dotted name of `key` (a renamed key's new name; others unchanged)."""
    target = renamed_keys(cls).get(key)
    return target if isinstance(target, str) else key


def upgrade_keys(cls: type, data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """`data` with its renamed top-level keys moved to their new dotted places, one warning naming
    them. A key that is both current and renamed stays where it is."""
    renamed, current = renamed_keys(cls), {f.name for f in dataclasses.fields(cls)}
    old = [k for k in data if k in renamed and k not in current]
    if not old:
        return data
    upgraded = {k: v for k, v in data.items() if k not in old}
    for key in old:
        target = renamed[key]
        moved = target(data[key]) if callable(target) else {target: data[key]}
        for new_key, value in moved.items():
            set_dotted(upgraded, new_key, value)
    shown = ", ".join(f"{k} -> {renamed[k] if isinstance(renamed[k], str) else 'see docs'}" for k in old[:3])
    more = f" and {len(old) - 3} more" if len(old) > 3 else ""
    log.warning(
        "%s: old flat option names read as the nested ones (%s%s); docs/configuration.md shows the new layout",
        source, shown, more,
    )  # fmt: skip
    return upgraded


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """`data[a][b] = value` for key "a.b" (creating the inner mappings)."""
    *groups, last = key.split(".")
    for group in groups:
        data = data.setdefault(group, {})
    data[last] = value
