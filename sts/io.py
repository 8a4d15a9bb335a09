"""Atomic file writes that honour the umask: a reader sees the old file or the whole new one, never half.

    from sts.io import write_text_atomic, write_json_atomic, atomic_open, temp_dir_beside, read_json
    write_json_atomic(out_dir / "report.json", report)
    read_json(model_dir / "config.json")                # CorruptFileError naming FILE:LINE:COLUMN
    with atomic_open(out_dir / "cache.bin") as f: f.write(data)
    staging = temp_dir_beside(out_dir / "model")        # fill it, then staging.rename(out_dir / "model")

Each writer writes a hidden temp file in the destination's folder (same filesystem), flushes it and
renames it over the destination (`os.replace`, atomic on POSIX). The temp name carries its writer,
`.NAME.tmp-PID-HOST` (`temp_owner`: the process id and a short hash of the host name), so two
processes never write the same temp file, and a killed run leaves at most such a file (or staging
folder) behind, never a truncated `NAME`; the next run removes those whose writer is gone
(`remove_stale_temps`).

Modes: what this package writes gets the mode an ordinary `open()` / `mkdir()` would give, i.e.
`0o666 & ~umask` for files and `0o777 & ~umask` for folders (0644 / 0755 under the usual umask 022).
`tempfile.mkstemp` / `mkdtemp` create owner-only (0600 / 0700) entries on purpose, which a rename
would carry into the final output: use `atomic_open` and `temp_dir_beside` instead of them.

A full disk while writing is a `sts.errors.DiskFullError` naming the destination (`sts.errors.writing`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sts.errors import CorruptFileError, writing

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, e.g. 0o022.

    Linux reports it in /proc/self/status (since 4.7) without changing it; elsewhere it is read by
    setting and restoring it under a lock (the only portable way, see `os.umask`).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_mode(*, is_dir: bool = False) -> int:
    """The mode `open()` / `mkdir()` give under the current umask: `0o666 & ~umask` (files), `0o777 & ~umask` (dirs)."""
    return (0o777 if is_dir else 0o666) & ~current_umask()


def apply_default_mode(path: str | Path, *, recursive: bool = False) -> Path:
    """chmod `path` to `default_mode` (and, with `recursive`, everything below it); returns `path`.

    For folders other libraries filled: transformers' `save_pretrained` writes `model.safetensors`
    owner-only (0600) through its own temp file, so a model folder is fixed up before its final rename.
    Links are left alone.
    """
    path = Path(path)
    os.chmod(path, default_mode(is_dir=path.is_dir()))
    if recursive and path.is_dir() and not path.is_symlink():
        file_mode, dir_mode = default_mode(), default_mode(is_dir=True)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                if not os.path.islink(os.path.join(root, name)):
                    os.chmod(os.path.join(root, name), dir_mode)
            for name in files:
                if not os.path.islink(os.path.join(root, name)):
                    os.chmod(os.path.join(root, name), file_mode)
    return path


HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
"""This host in temp names (`temp_owner`): 8 hex digits of the host name's SHA-1."""
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.tmp-(?P<pid>\d+)(?:-(?P<host>[0-9a-f]{8}))?(?=$|[-.])")
"""`.NAME.tmp-PID-HOST` and what may follow it (a suffix, a staging folder's random part); names
written before the host was recorded (`.NAME.tmp-PID`) count as this host's."""


def temp_owner() -> str:
    """`PID-HOST`: who writes a temp file, as its name records it (HOST: 8 hex digits of the host name's SHA-1)."""
    return f"{os.getpid()}-{HOST_TAG}"


def temp_path(path: str | Path) -> Path:
    """The hidden temp name `path` is written under before the rename: `.NAME.tmp-PID-HOST` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{temp_owner()}")


def writer_is_gone(temp: str | Path) -> bool:
    """Whether the process that wrote the temp file or folder `temp` (named by `temp_path`,
    `temp_dir_beside` or another `.NAME.tmp-PID-HOST...` name) has ended: its process id runs no
    longer on this host. False for a name that is not such a temp, or one written on another host
    (a process there cannot be seen from here)."""
    match = _TEMP_NAME.match(Path(temp).name)
    if match is None or match["host"] not in (None, HOST_TAG):
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temps(folder: str | Path, names: str = "*", *, any_writer: bool = False) -> list[Path]:
    """Remove the temp files and staging folders in `folder` (not below it) for destinations named
    like the glob `names` whose writer is gone (`writer_is_gone`): what a killed run left behind.

    any_writer: remove them whoever wrote them; only for a caller whose lock keeps every other writer
    of such names out (a corpus worker's own chunks). Returns what was removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if match is None or not fnmatch.fnmatchcase(match["name"], names):
            continue
        if not (any_writer or writer_is_gone(entry)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_open(
    path: str | Path, mode: str = "wb", encoding: str | None = None, *, durable: bool = False
) -> Iterator[IO]:
    """Open `temp_path(path)` for writing; on a clean exit flush it and rename it over `path`.

    mode: "wb" or "w" (then `encoding` defaults to UTF-8). Parent folders are created. On an
    exception the temp file is removed and `path` is left as it was. The file gets `default_mode()`.
    durable: fsync the file before the rename (it survives a power cut, not only a killed process).
    Raises `sts.errors.DiskFullError` naming `path` when the disk is full.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with writing(path), open(tmp, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temp_dir_beside(path: str | Path) -> Path:
    """A new empty hidden folder `.NAME.tmp-PID-HOST-XXXX` beside `path` (same filesystem, so it can
    be renamed onto `path` when complete; `remove_stale_temps` finds it once its writer is gone),
    with `default_mode(is_dir=True)` rather than mkdtemp's 0700."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-{temp_owner()}-")
    return apply_default_mode(staging)


@contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """Build a whole output folder under a temp name beside `out_dir`; on success it replaces
    `out_dir` (any previous one) with the modes the umask gives, on failure it is removed (after a
    kill, by the next call's `remove_stale_temps`: staging folders of gone writers beside `out_dir`).

        with staged_dir(out) as staging:
            model.save_pretrained(staging)          # a reader never sees half a folder at `out`
    """
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir.parent, out_dir.name)
    staging = temp_dir_beside(out_dir)
    try:
        with writing(out_dir):  # a full disk names the output folder
            yield staging
        apply_default_mode(staging, recursive=True)  # save_pretrained writes its weights 0600
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parent folders are created); returns `path`."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns `path`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data, *, indent: int = 2) -> Path:
    """Write `data` as UTF-8 JSON (non-ASCII kept as is) to `path` atomically; returns `path`."""
    return write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def append_text_durable(path: str | Path, text: str) -> Path:
    """Append UTF-8 `text` to `path` (created with its folders if missing), then flush and fsync it.

    For ledgers such as `sts-infer`'s results.jsonl: once this returns, the line is on disk. A
    process killed during the call leaves at most a partial last line, which readers skip
    (`infer.batch.read_ledger` does). Raises `sts.errors.DiskFullError` naming `path` when the disk is full.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path


def read_json(path: str | Path, *, what: str = "the file"):
    """Parse a UTF-8 (BOM allowed) JSON file; a syntax or encoding error is a `CorruptFileError`
    naming `path:LINE:COLUMN` and the problem (json's own message names no file). `what` says what
    the file should be, e.g. "the vocabulary contract". FileNotFoundError passes through."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CorruptFileError(f"{path}:{line}: cannot read {what}: not UTF-8 text ({err.reason})") from err
    except json.JSONDecodeError as err:
        raise CorruptFileError(
            f"{path}:{err.lineno}:{err.colno}: cannot read {what}: not valid JSON ({err.msg})"
        ) from err
