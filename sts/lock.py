"""One writer per output folder: an exclusive lock that names its holder.

    from sts.lock import LOCK_NAME, folder_lock
    with folder_lock(out_dir / LOCK_NAME, program="sts-train sft",
                     refusal="{folder}: another run holds this folder: {holder}; wait for it or use another --out-dir"):
        ...   # FolderLockedError: "runs/sft: another run holds this folder: sts-train sft (pid 4242 on
              #                     gpu-node-3, started 2026-12-08T10:00:00Z); ..."

Used by `sts-build-corpus` (one lock per worker, so the workers of an array still share a folder),
`sts-encode`, `sts-infer` batch output folders and `sts-train` run folders (cpt, sft, dpo, dpo-pairs).

The lock is an `fcntl.flock` on a small file that also holds the holder's program, process id,
host and start time (what the refusal shows). The kernel releases a flock when its process dies,
even by SIGKILL, so a killed run leaves no stale lock; the file itself stays (it is hidden, and the
next holder overwrites it). On a network filesystem flock needs its support (NFSv4 has it; Lustre
needs `-o flock`).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sts.errors import InputError

LOCK_NAME = ".sts.lock"
"""The lock file of an output folder (`sts-infer -o DIR`, a `sts-train` run folder)."""


class FolderLockedError(InputError, RuntimeError):
    """Another live process holds the folder's lock; the message names it (program, pid, host, start)."""


@contextmanager
def folder_lock(path: str | Path, *, program: str, refusal: str, wait: bool = False) -> Iterator[None]:
    """Hold the exclusive lock `path` (created with its folder) while the block runs.

    program: what this process is, recorded for a refusal to show (e.g. "sts-infer").
    refusal: the message of the `FolderLockedError` raised when another process holds it, where
        the text `{folder}` becomes the lock's folder and `{holder}` the holder's record (e.g.
        "sts-train sft (pid 4242 on node-3, started 2026-12-08T10:00:00Z)").
    wait: block until the holder is done instead of refusing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "a process that left no record"
            message = refusal.replace("{holder}", holder).replace("{folder}", str(path.parent))
            raise FolderLockedError(message) from None
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = f"{program} (pid {os.getpid()} on {socket.gethostname()}, started {started})\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
