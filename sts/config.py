"""Typed config dataclasses <-> command-line flags and YAML files.

Every stage describes its options as one dataclass with a docstring per field; `parse_cli` turns
it into flags (through tyro), and `--config FILE.yaml` loads defaults from a file first, so a run
can be reproduced from the YAML its output folder keeps (`save_config`):

    cfg = parse_cli(ExtendConfig, prog="sts-extend-tokenizer")      # flags, optionally --config x.yaml
    save_config(cfg, out_dir / "extend_config.yaml")
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sts.errors import InputError
from sts.paths import PATH_OPTIONS, absolute_if_local

T = TypeVar("T")


class ConfigError(InputError, ValueError):
    """A YAML config that does not match its dataclass, or a `--config` flag without its file."""


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
    from sts.io import write_text_atomic

    return write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))


def load_config(cls: type[T], path: str | Path, **overrides: Any) -> T:
    """Build `cls` from a YAML file; unknown keys and wrong types are errors naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read YAML config ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    data.update(overrides)
    return dict_to_config(cls, data, source=str(path))


def dict_to_config(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build `cls` from a mapping, converting paths and checking names and simple types."""
    hints = typing.get_type_hints(cls, include_extras=False)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = dict_to_config(hint, value, source=f"{source}:{name}")
        elif value is not None and Path in _type_options(hint):
            value = Path(value)
        elif not _matches(value, hint):
            raise ConfigError(f"{source}: option {name!r} expects {hint}, got {value!r}")
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from err


def parse_cli(
    cls: type[T], args: Sequence[str] | None = None, *, prog: str, description: str | None = None
) -> T:
    """Parse flags into `cls`; `--config FILE.yaml` (anywhere in args) supplies the defaults."""
    import tyro

    args = list(sys.argv[1:] if args is None else args)
    default = None
    if "--config" in args:
        at = args.index("--config")
        if at + 1 >= len(args):
            raise ConfigError("--config needs a YAML file")
        default = load_config(cls, args[at + 1])
        del args[at : at + 2]
    return tyro.cli(cls, args=args, prog=prog, description=description or cls.__doc__, default=default)


def _type_options(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _matches(value: Any, hint: Any) -> bool:
    """A lenient check for the simple types configs use; anything more complex is accepted."""
    for option in _type_options(hint):
        if option is type(None) and value is None:
            return True
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if option in (int, str, bool) and type(value) is option:
            return True
        origin = typing.get_origin(option) or option
        if origin in (list, tuple) and isinstance(value, list | tuple):
            return True
        if origin is dict and isinstance(value, dict):
            return True
        if typing.get_origin(option) is typing.Literal and value in typing.get_args(option):
            return True
        if option is typing.Any:
            return True
    return False
