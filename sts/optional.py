"""The one way to load an optional package or model, with one failure policy.

    asr = load_optional("ASR (Whisper)", lambda: default_asr(), install="faster-whisper (the offline extra)")
    if asr is None: ...                          # optional: one warning, and the caller records "not measured"
    codec = load_optional("codec", lambda: load_codec(name), required=True)   # required: a clear error

Where the thing is required, a failure to load it is an `OptionalMissingError` (an `InputError`:
one line, exit 2 under `sts.errors.cli_main`) that says what did not load, why, and what to install.
Where it is optional, the command goes on without it: ONE warning (to the command's `warn` when it
gives one, else logged on `sts.optional` once per process), and `not_measured(what)` gives the
reason the caller records in its report, so a missing score is never a silent gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sts.errors import InputError

T = TypeVar("T")
log = logging.getLogger(__name__)

LOAD_ERRORS = (ImportError, OSError, ValueError, RuntimeError)
"""What a missing package, absent weights or an unusable model raise while loading."""

_REASONS: dict[str, str] = {}


class OptionalMissingError(InputError, RuntimeError):
    """A required optional package or model that did not load; the message says what to install."""


def load_optional(
    what: str,
    factory: Callable[[], T],
    *,
    install: str = "",
    required: bool = False,
    warn: Callable[[str], object] | None = None,
) -> T | None:
    """`factory()`, or None (optional) / `OptionalMissingError` (required) when it raises one of
    `LOAD_ERRORS`. `what` names the thing in messages; `install` says how to get it."""
    try:
        return factory()
    except LOAD_ERRORS as err:
        reason = f"{what} did not load ({type(err).__name__}: {' '.join(str(err).split())})"
        reason += f"; install {install}" if install else ""
        if required:
            raise OptionalMissingError(reason) from err
        if warn is not None:  # the command's own output, once per load
            warn(f"warning: {reason}: not measured")
        elif _REASONS.get(what) != reason:  # else the log, once per thing and process
            log.warning("%s: not measured", reason)
        _REASONS[what] = reason
        return None


def not_measured(what: str) -> str | None:
    """Why `what` was not loaded in this process (the text to record in a report), or None."""
    return _REASONS.get(what)
