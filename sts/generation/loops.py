"""Repetition loops in generated ids: what counts as one, where the first starts, whether a tail loops.

The first attempt's audio fell into repetition loops (DESIGN.md). A loop is an n-gram repeated
back to back `min_repeats` times and spanning at least `min_span` tokens. `find_loop` finds the
first one anywhere in an output (cut there with `ids[: start + n]`); `tail_is_loop` asks only
whether the last tokens loop, cheap enough to run during generation
(`sts.generation.processors.LoopStoppingCriteria`, which stops such a row early). Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoopGuard:
    """When a run of repeated n-grams counts as a loop."""

    max_ngram: int
    """Longest repeating unit looked for, in tokens."""
    min_repeats: int
    """A unit must repeat at least this many times in a row."""
    min_span: int
    """...and the repeated run must cover at least this many tokens (a 1-token unit needs this many)."""

    def repeats_needed(self, n: int) -> int:
        """Back-to-back copies of an `n`-token unit that make a loop."""
        return max(self.min_repeats, math.ceil(self.min_span / n))


SPEECH_GUARD = LoopGuard(max_ngram=25, min_repeats=4, min_span=100)
"""Speech codes at 50 per second: a pattern of up to 0.5 s repeated 4 times and covering >= 2 s."""
TEXT_GUARD = LoopGuard(max_ngram=10, min_repeats=4, min_span=12)
"""Text tokens: a phrase of up to 10 tokens repeated 4 times, >= 12 tokens in all."""


def find_loop(ids: np.ndarray, guard: LoopGuard) -> tuple[int, int] | None:
    """The first loop in `ids` (`[T]` int): (start, unit length n), or None.

    A loop is `guard.repeats_needed(n)` back-to-back copies of one n-gram; among loops, the one that
    starts first (then the shortest unit) is returned. Cut there with `ids[: start + n]`.
    """
    ids = np.asarray(ids).ravel()
    best: tuple[int, int] | None = None
    for n in range(1, guard.max_ngram + 1):
        need = guard.repeats_needed(n)
        if len(ids) < n * need:
            continue
        # same[i]: ids[i] == ids[i + n]; a run of n*(need-1) Trues from i means `need` copies from i.
        same = (ids[n:] == ids[:-n]).astype(np.int8)
        run = n * (need - 1)
        window = np.convolve(same, np.ones(run, dtype=np.int64), mode="valid") if len(same) >= run else []
        hits = np.flatnonzero(np.asarray(window) == run)
        if len(hits) and (best is None or hits[0] < best[0]):
            best = (int(hits[0]), n)
    return best


def tail_is_loop(ids: np.ndarray, guard: LoopGuard) -> bool | np.ndarray:
    """Whether the last tokens already form a loop (cheaper than `find_loop`).

    `ids`: `[T]` int -> bool, or `[B, T]` (rows of one batch) -> `[B]` bool, vectorized over rows.
    """
    ids = np.asarray(ids)
    rows = ids.reshape(-1, ids.shape[-1])
    looping = np.zeros(len(rows), dtype=bool)
    for n in range(1, guard.max_ngram + 1):
        span = n * guard.repeats_needed(n)
        if rows.shape[1] >= span:
            # `need` copies of an n-gram at the end == the tail shifted by n equals itself.
            looping |= (rows[:, rows.shape[1] - span + n :] == rows[:, rows.shape[1] - span : -n]).all(axis=1)
    return looping if ids.ndim == 2 else bool(looping[0])
