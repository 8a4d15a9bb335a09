"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

    from sts.io import write_text_atomic, write_json_atomic
    write_json_atomic(out_dir / "report.json", report)

Each writer writes a hidden temp file in the destination's folder (same filesystem), flushes it and
renames it over the destination (`os.replace`, atomic on POSIX). The temp name carries the process
id, so two processes never write the same temp file, and a killed run leaves at most a
`.NAME.tmp-PID` file behind, never a truncated `NAME`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def temp_path(path: str | Path) -> Path:
    """The hidden temp name `path` is written under before the rename: `.NAME.tmp-PID` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parent folders are created); returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns `path`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data, *, indent: int = 2) -> Path:
    """Write `data` as UTF-8 JSON (non-ASCII kept as is) to `path` atomically; returns `path`."""
    return write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
