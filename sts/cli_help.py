"""`--help` as a reference card: one line per option, grouped, with its type, default and range.

tyro's own help (boxes, wrapped descriptions) runs to several hundred lines for the training config;
this one prints each option on one line, the way tyro parses it (`tests/test_cli_spelling.py` feeds
every printed flag back to the parser). `--help-full` still shows tyro's.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import tyro

from sts.config import _metadata, constraint_text, field_docs, field_hints, when_off

FOOTER = "--config FILE.yaml reads the options from a file (flags win); --help-full: every detail."


def _arg_config(hint: Any) -> tuple[str | None, tuple[str, ...], bool, bool]:
    """(renamed name, aliases, positional, suppressed) from a field's tyro markers."""
    name, aliases, positional, suppressed = None, (), False, False
    while typing.get_origin(hint) is typing.Annotated:
        hint, *extra = typing.get_args(hint)
        for item in extra:
            if item is tyro.conf.Positional:
                positional = True
            elif item is tyro.conf.Suppress:
                suppressed = True
            elif hasattr(item, "aliases") and hasattr(item, "prefix_name"):
                name = item.name or name
                aliases = tuple(item.aliases or ()) or aliases
    return name, aliases, positional, suppressed


def _metavar(hint: Any, default: Any) -> str:
    bare, _ = _metadata(hint)
    origin, args = typing.get_origin(bare), typing.get_args(bare)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return (
            _metavar(options[0], default)
            if len(options) == 1
            else "|".join(_metavar(a, None) for a in options)
        )
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return " ".join(_metavar(a, None) for a in args)
    if origin in (list, tuple) or bare in (list, tuple):
        return (_metavar(args[0], None) if args else "STR") + "..."
    if origin is dict:
        return f"{_metavar(args[0], None)} {_metavar(args[1], None)}..." if args else "KEY VALUE..."
    if bare is Path:
        return "PATH"
    return getattr(bare, "__name__", str(bare)).upper()


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(map(str, value)) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


def _default(f: dataclasses.Field, instance: Any) -> Any:
    if instance is not None:
        return getattr(instance, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def option_lines(
    cls: type, instance: Any = None, prefix: str = ""
) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(group title, [(invocation, description)])] for `cls` (a `sts.cli.cli_view`), groups after
    the options of their parent; suppressed fields left out."""
    hints, docs = field_hints(cls), field_docs(cls)
    rows: list[tuple[str, str]] = []
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        name, aliases, positional, suppressed = _arg_config(hint)
        if suppressed:
            continue
        bare, _ = _metadata(hint)
        default = _default(f, instance)
        dotted = prefix + (name or f.name).replace("_", "-")
        if dataclasses.is_dataclass(bare) and isinstance(bare, type):
            about = docs.get(f.name) or " ".join((bare.__doc__ or "").split())
            title = f"{prefix}{f.name}" + (f" -- {about}" if about else "")
            inner = option_lines(bare, default if default is not dataclasses.MISSING else None, dotted + ".")
            groups += [(title if i == 0 else t, r) for i, (t, r) in enumerate(inner)]
            continue
        hint_text = constraint_text(hint)
        doc = docs.get(f.name, "")
        if bare is bool and default is True:  # shown as --no-NAME: its text says what turning it off does
            off = when_off(hint)
            on = doc.rstrip(".")
            tail = [f"on by default: {on}" if off and on else "on by default"]
            doc = off[:1].upper() + off[1:] if off else f"Turn off: {doc}" if doc else "Turn it off."
        elif bare is bool:
            tail = []
        else:
            tail = [] if default is dataclasses.MISSING else [f"default {_shown(default)}"]
        tail += [hint_text] if hint_text else []
        doc += f" [{'; '.join(tail)}]" if tail else ""
        if positional:
            rows.append(((name or f.name).upper(), doc))
            continue
        if bare is bool:
            group, _, leaf = dotted.rpartition(".")
            flag = f"--{dotted}" if not default else f"--{group + '.' if group else ''}no-{leaf}"
            rows.append((", ".join([*aliases, flag]), doc))
            continue
        if typing.get_origin(bare) is dict and isinstance(default, dict) and default:
            keys = ",".join(map(str, default))
            rows.append((f"--{dotted}.{{{keys}}} {_metavar(typing.get_args(bare)[1], None)}", doc))
            continue
        rows.append((", ".join([*aliases, f"--{dotted}"]) + f" {_metavar(hint, default)}", doc))
    rows = [r for r in rows if not r[0].startswith("-")] + [
        r for r in rows if r[0].startswith("-")
    ]  # positionals first
    return [(prefix.rstrip(".") or "options", rows), *groups] if rows or not prefix else groups


def render_help(view: type, *, prog: str, description: str | None, default: Any = None) -> str:
    """The reference card of `view` (a `sts.cli.cli_view`), defaults from `default` when given."""
    sections = option_lines(view, default)
    positionals = [inv for _, rows in sections for inv, _ in rows if not inv.startswith("-")]
    lines = [f"usage: {prog} {' '.join(positionals)} [--config FILE.yaml] [OPTIONS]".replace("  ", " ")]
    if description:
        lines += ["", " ".join(description.split())]
    width = min(34, max((len(inv) for _, rows in sections for inv, _ in rows), default=10))
    lines.append("")
    for title, rows in sections:
        if rows:
            lines.append(f"{title}:" if title == "options" else f"{title}")
            lines += [f"  {invocation.ljust(width)}  {doc}".rstrip() for invocation, doc in rows]
    lines += ["", FOOTER]
    return "\n".join(lines)


def flag_arities(cls: type, prefix: str = "") -> dict[str, int | None]:
    """Every flag of `cls` (a `sts.cli.cli_view`) -> how many values follow it (None: any number),
    so that a command line's bare words can be told from flag values."""
    arities: dict[str, int | None] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = field_hints(cls)[f.name]
        name, aliases, positional, suppressed = _arg_config(hint)
        bare, _ = _metadata(hint)
        dotted = prefix + (name or f.name).replace("_", "-")
        if suppressed or positional:
            continue
        if dataclasses.is_dataclass(bare) and isinstance(bare, type):
            arities |= flag_arities(bare, dotted + ".")
            continue
        union = typing.get_origin(bare) in (typing.Union, types.UnionType)
        options = [a for a in typing.get_args(bare) if a is not type(None)] if union else [bare]
        kind = typing.get_origin(options[0]) or options[0]
        default = _default(f, None)
        if kind is dict and isinstance(default, dict) and default:  # tyro: one flag per key
            arities |= {f"--{dotted}.{key}": 1 for key in default}
            continue
        if bare is bool:
            group, _, leaf = dotted.rpartition(".")
            names, arity = [f"--{dotted}", f"--{group + '.' if group else ''}no-{leaf}", *aliases], 0
        elif kind in (list, tuple, dict) and not (
            kind is tuple and Ellipsis not in typing.get_args(options[0])
        ):
            names, arity = [f"--{dotted}", *aliases], None
        elif kind is tuple:
            names, arity = [f"--{dotted}", *aliases], len(typing.get_args(options[0]))
        else:
            names, arity = [f"--{dotted}", *aliases], 1
        arities |= dict.fromkeys(names, arity)
    return arities


def positional_count(cls: type) -> int:
    """How many positional arguments `cls` takes."""
    return sum(_arg_config(field_hints(cls)[f.name])[2] for f in dataclasses.fields(cls) if f.init)
