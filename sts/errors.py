"""One error policy for every command: expected failures are one line, bugs keep their traceback.

    from sts.errors import InputError, cli_main

    def main(argv=None) -> int:
        return cli_main("sts-encode", _main, argv)      # _main(args: list[str]) -> int

Expected failures are the user's input, files, configuration or machine: a bad flag value, a
missing or corrupt file, a manifest line of the wrong shape, a model folder that does not exist,
a full disk. The library raises them as `InputError` (or one of its subclasses: `VocabError`,
`ConfigError`, `AudioError`, `CorpusError`, `CorpusContractError`, `RowError`, ... all derive from
it), with a message that starts with the file (and line, row or shard) it is about. `cli_main`
prints such an error as ONE line, `PROG: error: <message>`, on stderr and returns exit status 2.
Any other exception is a bug and keeps its traceback (exit status 1, as Python gives it).

Also expected, because they come from the machine rather than the code: `FileNotFoundError`,
`FileExistsError`, `PermissionError`, `IsADirectoryError`, `NotADirectoryError`, an `OSError` whose
errno says the disk is full, read-only or out of quota, and the errno-less `OSError`s that libraries
raise about files, the hub or the network (transformers' "... is not a local folder and is not a
valid model identifier", datasets' `ConnectionError` "Couldn't reach ... on the Hub"). An `OSError`
with another errno (EBADF, EINVAL, ...) is the code's fault and keeps its traceback. Foreign errors that name no file (safetensors' "header too large", a
`json.JSONDecodeError`, torch's "unexpected pos" on a full disk) are caught where the file is known
and raised again as an `InputError` subclass naming it (`writing`, `sts.io.read_json`,
`sts.model_files`).

`--debug` (accepted by every command, anywhere on its command line) or the environment variable
`STS_TRACEBACK=1` shows the traceback of an expected failure too.

A reader that goes away is not a failure either: `sts-train sft --help | head -1` closes the pipe
after one line, and the next write raises `BrokenPipeError`. `cli_main` then points stdout at
/dev/null (so that Python's final flush stays quiet too, as the Python docs' "Note on SIGPIPE"
advises) and ends without a word: the command's own status for `--help` (0), else
`EXIT_BROKEN_PIPE`.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

TRACEBACK_ENV = "STS_TRACEBACK"
"""Environment variable: set to 1 to see the traceback of an expected failure (same as `--debug`)."""
DEBUG_FLAG = "--debug"
"""Flag every command accepts: show the traceback of an expected failure."""
EXIT_ERROR = 2
"""Exit status of an expected failure (argparse's and tyro's status for a usage error)."""
EXIT_BROKEN_PIPE = 141
"""Exit status when stdout's reader went away: 128 + SIGPIPE, what a shell reports for a program
that SIGPIPE ended (Python ignores the signal and raises `BrokenPipeError` instead)."""

_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# torch.save's zip writer reports a failed write as a RuntimeError naming no file, e.g.
# "[enforce fail at inline_container.cc:...] . unexpected pos 64 vs 0" or
# "PytorchStreamWriter failed writing file data/0: file write failed".
_TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


class InputError(Exception):
    """An expected failure: bad input, a missing or corrupt file, a bad setting, a full disk.

    The message starts with the file (and `:LINE`, row or shard) it is about, then the problem;
    `cli_main` prints it as one line.
    """


class UsageError(InputError, ValueError):
    """Flags or arguments that do not fit together (e.g. batch mode without an output folder)."""


class ModelNotFoundError(InputError, FileNotFoundError):
    """A model (or codec) folder that does not exist and is not a loadable Hugging Face id."""


class CorruptFileError(InputError, ValueError):
    """A file that exists but cannot be read as what it should be (truncated weights, bad JSON)."""


class ManifestError(InputError, ValueError):
    """A manifest (JSONL/CSV) line that cannot be used; the message is `FILE:LINE: problem`."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str):
        self.path, self.line, self.problem = Path(path), line, problem
        super().__init__(f"{path}:{line}: {problem}")


class OutputPathError(InputError, ValueError):
    """An output path of the wrong kind (suffix, file vs folder) or that cannot be written."""


class DiskFullError(InputError, OSError):
    """A write that failed because the disk (or quota) is full; names the file being written."""


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem holding `path` (or its nearest existing parent); None if unknown."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _write_failure(path: Path, err: BaseException, needs_bytes: int | None) -> DiskFullError | None:
    """The `DiskFullError` that `err` (raised while writing `path`) means, or None if it is not one."""
    free = free_bytes(path)
    is_full = isinstance(err, OSError) and err.errno in _FULL_ERRNOS
    is_torch = isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_WRITE_FAILURES)
    # libsndfile reports a failed write as a RuntimeError without errno: judge by the room left
    no_room = needs_bytes is not None and isinstance(err, RuntimeError) and free is not None
    is_full = is_full or (no_room and free < needs_bytes)
    if not (is_full or is_torch):
        return None
    room = f"; {free / 1e6:.1f} MB free there" if free is not None else ""
    if is_full:
        return DiskFullError(errno.ENOSPC, f"{path}: no space left on device{room}")
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DiskFullError(errno.EIO, f"{path}: the write failed ({first_line}); is the disk full?{room}")


@contextmanager
def writing(path: str | os.PathLike, *, needs_bytes: int | None = None) -> Iterator[None]:
    """Turn a full disk while writing `path` into a `DiskFullError` naming it.

    Catches `OSError` with errno ENOSPC/EDQUOT (Python's own writes, pyarrow), torch's zip writer's
    RuntimeError ("unexpected pos", "PytorchStreamWriter failed ..."), which names no file, and, when
    `needs_bytes` is given, any RuntimeError (libsndfile's) while less than that is free. Anything
    else passes through unchanged.
    """
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, DiskFullError):
            raise
        mapped = _write_failure(Path(path), err, needs_bytes)
        if mapped is None:
            raise
        raise mapped from err


def _foreign_expected(err: BaseException) -> bool:
    """Typed input errors of base modules that predate `InputError` (looked up only if imported)."""
    tasks = sys.modules.get("sts.tasks")  # MissingFieldError, SpecialTokenTextError, PromptPrefixError
    if tasks is not None:
        names = ("MissingFieldError", "SpecialTokenTextError", "PromptPrefixError")
        return isinstance(err, tuple(getattr(tasks, n) for n in names if hasattr(tasks, n)))
    return False


def error_message(err: BaseException) -> str | None:
    """The one-line message of an expected failure, or None when `err` is a bug (keep its traceback)."""
    if isinstance(err, InputError) or _foreign_expected(err):
        text = str(err)
    elif isinstance(err, OSError):
        machine = isinstance(
            err,
            FileNotFoundError | FileExistsError | PermissionError | IsADirectoryError | NotADirectoryError,
        )
        if not (machine or err.errno in _MACHINE_ERRNOS or err.errno is None):
            return None
        if err.errno in _FULL_ERRNOS and err.filename is None:
            text = "no space left on device (the file being written is not known here)"
        elif err.filename is not None:
            text = f"{err.filename}: {err.strerror or err}"
        else:
            text = str(err)
    else:
        return None
    return " ".join(text.split()) or type(err).__name__  # one line, whatever the message held


def silence_stdout() -> None:
    """Send the rest of stdout to /dev/null after its reader closed the pipe (`BrokenPipeError`), so
    that no later write or flush, the interpreter's last one included, raises again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def print_quietly(text: str) -> None:
    """Print `text` (help, usage) to stdout; when its reader is gone, stop quietly (`silence_stdout`)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        silence_stdout()


def debug_requested(args: Sequence[str]) -> bool:
    """`--debug` among `args`, or `STS_TRACEBACK` set to anything but "", "0"."""
    return DEBUG_FLAG in args or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def cli_main(prog: str, run: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's `run(args)` under the error policy; returns its exit status.

    `--debug` is taken out of `argv` (default `sys.argv[1:]`) before `run` sees it. An expected
    failure prints `PROG: error: <message>` on one line and returns `EXIT_ERROR` (2); with `--debug`
    or `STS_TRACEBACK=1` it is raised instead, traceback and all. Any other exception is raised.
    Nested commands (`sts infer ...` runs `sts-infer`'s main) see the same `--debug`.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != DEBUG_FLAG]
    if debug:
        args_env = os.environ.get(TRACEBACK_ENV)
        os.environ[TRACEBACK_ENV] = "1"  # nested mains and worker processes see it too
    try:
        status = run(args) or 0
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except SystemExit:  # --help and the like: their status, quietly when the pipe is closed
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
        raise
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as err:
        message = error_message(err)
        if message is None or debug:
            raise
        sys.stdout.flush()
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    finally:
        if debug:
            if args_env is None:
                os.environ.pop(TRACEBACK_ENV, None)
            else:
                os.environ[TRACEBACK_ENV] = args_env
