"""Paths that files record (a codec in `corpus.json`, a model in `train_config.yaml`): written so that
they resolve from any working folder, and read back the same way.

    record_path("runs/demo/codec", "runs/demo/corpus")      # "../codec": relative to the recording file
    resolve_recorded("../codec", "runs/demo/corpus")         # "/abs/runs/demo/codec", from anywhere
    absolute_if_local("runs/demo/codec")                     # "/abs/runs/demo/codec"; a hub id as given

Two rules, one per kind of file:

- A contract or card that names another file (`sts_vocab.json`'s codec and base model, `corpus.json`'s
  encode codec) records a local path relative to its own folder when both lie under a common folder
  other than the filesystem root, so a tree moved or copied as a whole keeps its links; absolute
  otherwise (`record_path`).
- A saved config (`sts.config.config_to_dict` / `save_config`: `train_config.yaml`, `corpus.json`'s
  config, `extend_config.yaml`) records its path options (`PATH_OPTIONS`) absolute: such a file is fed
  back through `--config`, where paths are read relative to the current folder.

Anything that is not an existing local path (a Hugging Face id such as `HKUSTAudio/xcodec2-hf`, or a
path that does not exist yet) is recorded as given. `resolve_recorded` reads either form: absolute as
is; relative to the recording file's folder when that exists; else relative to the current folder when
that exists (files written before these rules recorded paths as typed, so an older card still works
from the folder it was made in); else as written (a hub id).
"""

from __future__ import annotations

import os
from pathlib import Path

PATH_OPTIONS = frozenset(
    {
        "model", "codec", "base_model", "mt_model", "gen_eval_codec", "asr", "checkpoint",
        "shards", "text_files", "pairs", "path", "tgt_path", "inputs", "input", "manifest",
        "out_dir", "out", "output", "output_dir", "cache_dir", "export_axolotl", "export_dir",
        "corpus_dir", "results", "demo_dir", "run_dir",
    }
)  # fmt: skip
"""Config option names whose values are paths (or a hub id in their place): `sts.config.config_to_dict`
records them with `absolute_if_local`. One spelling per concept keeps this list short."""


def local_path(value: str | os.PathLike | None) -> Path | None:
    """The existing file or folder `value` names (relative to the current folder), resolved; None when
    it names none (empty, a hub id, a path that does not exist)."""
    if value is None or str(value) == "":
        return None
    path = Path(value).expanduser()
    return path.resolve() if path.exists() else None


def absolute_if_local(value):
    """`value` as an absolute path string when it names an existing local path, else unchanged (a hub
    id, a path that does not exist yet, None, a non-string). Lists are mapped element by element."""
    if isinstance(value, list | tuple):
        return [absolute_if_local(v) for v in value]
    if not isinstance(value, str | os.PathLike):
        return value
    path = local_path(value)
    return str(path) if path is not None else (str(value) if isinstance(value, os.PathLike) else value)


def record_path(value: str | os.PathLike | None, record_dir: str | os.PathLike) -> str | None:
    """How a file in `record_dir` should record `value`: a local path relative to `record_dir` (POSIX
    separators) when both lie under a common folder other than the root, else absolute; anything that
    is not an existing local path as given (None stays None)."""
    if value is None:
        return None
    path = local_path(value)
    if path is None:
        return str(value)
    here = Path(record_dir).expanduser().resolve()
    if os.path.commonpath([path, here]) == os.path.sep:
        return str(path)
    return Path(os.path.relpath(path, here)).as_posix()


def resolve_recorded(value: str | os.PathLike | None, record_dir: str | os.PathLike) -> str | None:
    """A path a file in `record_dir` recorded, as an absolute path when it names an existing local one:
    absolute as is; relative to `record_dir` when that exists; else relative to the current folder when
    that exists (older files); else `value` unchanged (a hub id, or a path that is gone: the reader's own
    check then names it)."""
    if value is None or str(value) == "":
        return None if value is None else str(value)
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    beside = Path(record_dir).expanduser() / path
    if beside.exists():
        return str(beside.resolve())
    if path.exists():
        return str(path.resolve())
    return str(value)


def same_location(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    """Whether two recorded or given names mean the same thing: the same existing local path (however
    spelled), or the same string (hub ids)."""
    if a is None or b is None:
        return a is b
    pa_, pb = local_path(a), local_path(b)
    if pa_ is not None or pb is not None:
        return pa_ == pb
    return str(a) == str(b)
