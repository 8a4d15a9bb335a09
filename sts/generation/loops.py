"""Repetition loops in generated ids: the four rules, where a loop starts, whether a tail loops.

The first attempt's audio fell into repetition loops (docs/background.md), and an exact n-gram check alone
missed most of the loops a codec LM makes (issue 13). `LoopGuard` holds four rules:

* exact: an n-gram (n <= `max_ngram`) repeated back to back `min_repeats` times, covering
  >= `min_span` tokens. Cut after its first copy.
* approximate: the same unit sizes (2..`max_ngram`) and span, with up to ~20 % of the codes varied:
  at lag n, at least `approx_match` of the window's change points (positions whose id differs from
  the one before) recur n tokens later. Counting change points only keeps a pause (a run of one
  silence code) from looking periodic. Cut after the first copy.
* long_repeat: a segment of `repeat_window` tokens (1 s of speech) that occurs again after it ends
  (at a lag >= `repeat_window`, and > `max_ngram`) with >= `repeat_match` of its change points
  recurring ("a sentence spoken twice"; a unit too long for the rules above, said twice or more).
  The window needs >= `repeat_min_changes` change points: two pauses, or a shared word ending before
  a pause, are not a repeat. Cut at the start of the second copy.
* low_diversity: a window of `stuck_window` tokens (2 s) holding at most
  `stuck_max_distinct_share * stuck_window` distinct ids ("a random walk over 3 codes", a stuck
  silence). Cut at the start of the window.

`detect_loop` runs every enabled rule over a whole output (`rule_loops`) and returns the `Loop`
that cuts earliest (an exact loop is preferred when it cuts within `max_ngram` tokens of that: it
is the most specific description); `find_loop` is the exact rule alone; `rule_scores` says how
close an output came to each rule. `tail_is_loop` asks only whether the last
tokens loop, batch-vectorized and cheap enough to run during generation
(`sts.generation.processors.LoopStoppingCriteria`). Pure numpy.

Calibration (`benchmarks/loop_detector.py`, 2026-11-30, numbers in `benchmarks/RESULTS.md`): on 48
paragraphs of natural speech (Kokoro ja / Piper en, 2-4 sentences joined by 0.5-1.0 s pauses,
306 s in all) encoded with the demo codec (mel k-means, 256 codes) and with the tiny random
XCodec2, no rule of `SPEECH_GUARD` cut anything (0 of 96 sequences), and the closest natural speech
came was 0.59 of the exact rule's span (a 1 s pause), 0.08 recurring change points for the
approximate rule (fires at 0.3), 0.3 for long_repeat (fires at 0.7; with fewer change points
required, a shared sentence ending "...masu" + pause reached 0.63, hence `repeat_min_changes` 20)
and 16 distinct codes per 2 s (fires at <= 4). Every synthetic loop built on those paragraphs (a
sentence said twice, also with 10 % of it varied; a 10-code unit with 10 % / 20 % of its codes
varied; a random walk over 3 codes; exact 5- and 20-code loops) was cut, 669 of 672 within 20
tokens of where its repeats begin. Pauses up to ~1.5 s pass; 2 s of one code is stuck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LoopKind = Literal["exact", "approximate", "long_repeat", "low_diversity"]
LOOP_KINDS: tuple[LoopKind, ...] = ("exact", "approximate", "long_repeat", "low_diversity")


@dataclass(frozen=True)
class LoopGuard:
    """When a run of generated ids counts as a loop (the rules of the module docstring)."""

    max_ngram: int
    """Longest repeating unit looked for by the exact and approximate rules, in tokens."""
    min_repeats: int
    """A unit must repeat at least this many times in a row."""
    min_span: int
    """...and the repeated run must cover at least this many tokens (a 1-token unit needs this many)."""
    approx_match: float | None = None
    """Approximate rule: share of a window's change points that must recur one unit later; None: off."""
    approx_min_changes: float = 0.1
    """Approximate rule: the window must hold at least this share of change points (else it is a
    near-constant run: the low-diversity rule's case)."""
    repeat_window: int = 0
    """Long-repeat rule: length of the segment that must occur again, in tokens; 0: off."""
    repeat_match: float = 0.7
    """Long-repeat rule: share of the segment's change points equal in the later copy."""
    repeat_min_changes: int = 20
    """Long-repeat rule: change points the segment must hold (pauses and stuck runs have few)."""
    stuck_window: int = 0
    """Low-diversity rule: window length in tokens; 0: off."""
    stuck_max_distinct_share: float = 0.04
    """Low-diversity rule: a window with at most this share of distinct ids (x `stuck_window`) is stuck."""

    def repeats_needed(self, n: int) -> int:
        """Back-to-back copies of an `n`-token unit that make a loop."""
        return max(self.min_repeats, math.ceil(self.min_span / n))

    @property
    def stuck_max_distinct(self) -> int:
        """Distinct ids a `stuck_window` may hold and still be stuck (at least 1)."""
        return max(1, math.floor(self.stuck_max_distinct_share * self.stuck_window + 1e-9))


SPEECH_GUARD = LoopGuard(
    max_ngram=25,
    min_repeats=4,
    min_span=100,
    approx_match=0.3,
    repeat_window=50,
    repeat_match=0.7,
    stuck_window=100,
    stuck_max_distinct_share=0.04,
)
"""Speech codes at 50 per second: a unit of up to 0.5 s repeated 4 times over >= 2 s (exactly, or
with 30 % of its change points recurring), a 1 s segment said again (70 % recurring), or 2 s with
<= 4 distinct codes."""
TEXT_GUARD = LoopGuard(max_ngram=10, min_repeats=4, min_span=12)
"""Text tokens: a phrase of up to 10 tokens repeated 4 times, >= 12 tokens in all (exact rule only)."""


@dataclass(frozen=True)
class Loop:
    """A loop found in an output: which rule, where it starts, where to cut."""

    kind: LoopKind
    start: int
    """Index of the looping run's first token (first copy, or the stuck window)."""
    cut: int
    """Keep `ids[:cut]`: the first copy stays, the repeats go (the stuck run goes entirely)."""
    unit: int
    """Unit length (exact, approximate) or lag between the copies (long_repeat), in tokens;
    0 for low_diversity."""

    def describe(self, frame_rate: float | None = None, where: str = "") -> str:
        """One warning line, e.g. "repetition loop at 3.2 s (a 5-token unit repeating): output cut there".

        `frame_rate`: tokens per second (speech: positions in seconds); None: token positions (text).
        `where` follows the position (e.g. " of segment 2/3").
        """
        at = (f"{self.start / frame_rate:.1f} s" if frame_rate else f"token {self.start}") + where
        if self.kind == "exact":
            what = f"repetition loop at {at} (a {self.unit}-token unit repeating)"
        elif self.kind == "approximate":
            what = f"approximate repetition loop at {at} (a {self.unit}-token unit repeating with variations)"
        elif self.kind == "long_repeat":
            lag = f"{self.unit / frame_rate:.1f} s" if frame_rate else f"{self.unit} tokens"
            what = f"repeated segment at {at} (said again {lag} later)"
        else:
            what = f"stuck output at {at} (very few distinct tokens)"
        return f"{what}: output cut there"


def find_loop(ids: np.ndarray, guard: LoopGuard) -> tuple[int, int] | None:
    """The first exact loop in `ids` (`[T]` int): (start, unit length n), or None.

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
        hits = np.flatnonzero(_window_sums(ids[n:] == ids[:-n], n * (need - 1)) == n * (need - 1))
        if len(hits) and (best is None or hits[0] < best[0]):
            best = (int(hits[0]), n)
    return best


def rule_loops(ids: np.ndarray, guard: LoopGuard) -> list[Loop]:
    """The first loop each enabled rule of `guard` finds in `ids` (`[T]` int), in `LOOP_KINDS` order."""
    ids = np.asarray(ids).ravel()
    found: list[Loop] = []
    exact = find_loop(ids, guard)
    if exact is not None:
        found.append(Loop("exact", exact[0], exact[0] + exact[1], exact[1]))
    if len(ids) > 1:
        for rule in (_approximate, _long_repeat, _low_diversity):
            loop = rule(ids, guard)
            if loop is not None:
                found.append(loop)
    return found


def rule_scores(ids: np.ndarray, guard: LoopGuard) -> dict[str, float | None]:
    """How close `ids` (`[T]` int) comes to each enabled rule's threshold (calibration, benchmarks).

    exact: the longest back-to-back run of a unit <= max_ngram, over the span it would need (>= 1
    fires); approximate / long_repeat: the highest share of recurring change points in a window that
    has enough of them (fires at `approx_match` / `repeat_match`); low_diversity: the fewest distinct
    ids in a `stuck_window` (fires at <= `stuck_max_distinct`). None: the rule is off or `ids` too short.
    """
    ids = np.asarray(ids).ravel()
    changes = _change_points(ids[None])[0]
    scores: dict[str, float | None] = dict.fromkeys(LOOP_KINDS)
    for n in range(1, min(guard.max_ngram, len(ids) - 1) + 1):
        same = ids[n:] == ids[:-n]
        runs = np.diff(np.flatnonzero(np.concatenate([[True], ~same, [True]]))) - 1
        need = n * guard.repeats_needed(n)
        scores["exact"] = max(scores["exact"] or 0.0, float(runs.max() + n) / need)
        run = n * (guard.repeats_needed(n) - 1)
        if guard.approx_match is not None and n > 1 and len(ids) >= n + run:
            count, hit = _window_sums(changes[:-n], run), _window_sums(_recurs(ids, n) & changes[:-n], run)
            ok = count >= guard.approx_min_changes * run
            if ok.any():
                scores["approximate"] = max(scores["approximate"] or 0.0, float((hit[ok] / count[ok]).max()))
    window = guard.repeat_window
    for lag in range(_min_lag(guard), len(ids) - window + 1) if window else ():
        count = _window_sums(changes[:-lag], window)
        hit = _window_sums(_recurs(ids, lag) & changes[:-lag], window)
        ok = count >= guard.repeat_min_changes
        if ok.any():
            scores["long_repeat"] = max(scores["long_repeat"] or 0.0, float((hit[ok] / count[ok]).max()))
    if guard.stuck_window and len(ids) >= guard.stuck_window:
        scores["low_diversity"] = float(_distinct(sliding_window_view(ids, guard.stuck_window)).min())
    return scores


def detect_loop(ids: np.ndarray, guard: LoopGuard) -> Loop | None:
    """The loop every enabled rule of `guard` agrees to cut first in `ids` (`[T]` int), or None."""
    found = rule_loops(ids, guard)
    if not found:
        return None
    first = min(found, key=lambda loop: (loop.cut, LOOP_KINDS.index(loop.kind)))
    if found[0].kind == "exact" and found[0].cut <= first.cut + guard.max_ngram:
        return found[0]
    return first


def tail_is_loop(ids: np.ndarray, guard: LoopGuard) -> bool | np.ndarray:
    """Whether the last tokens already loop by any enabled rule (cheaper than `detect_loop`).

    `ids`: `[T]` int -> bool, or `[B, T]` (rows of one batch) -> `[B]` bool, vectorized over rows.
    """
    ids = np.asarray(ids)
    rows = ids.reshape(-1, ids.shape[-1])
    looping = np.zeros(len(rows), dtype=bool)
    width = rows.shape[1]
    changes = _change_points(rows)
    for n in range(1, guard.max_ngram + 1):
        span = n * guard.repeats_needed(n)
        if width < span:
            continue
        # `need` copies of an n-gram at the end == the tail shifted by n equals itself.
        same = rows[:, width - span + n :] == rows[:, width - span : -n]
        looping |= same.all(axis=1)
        if guard.approx_match is not None and n > 1:
            recurs = same.copy()
            recurs[:, 1:] &= same[:, :-1]  # the transition into each position recurs n later
            cp = changes[:, width - span : -n]
            count = cp.sum(axis=1)
            looping |= (count >= guard.approx_min_changes * cp.shape[1]) & (
                (recurs & cp).sum(axis=1) >= guard.approx_match * np.maximum(count, 1)
            )
    window = guard.repeat_window
    if window and width >= window + _min_lag(guard) + 1:
        # The last `window` tokens against every earlier window at least `_min_lag` before them (one
        # token wider, so a transition can be compared at its first position too).
        starts = width - window - _min_lag(guard)
        earlier = sliding_window_view(rows, window + 1, axis=1)[:, :starts]  # [B, S, W + 1]
        same = earlier == rows[:, None, width - window - 1 :]
        recurs = same[:, :, 1:] & same[:, :, :-1]
        cp = sliding_window_view(changes[:, 1:], window, axis=1)[:, :starts]
        count = cp.sum(axis=2)
        looping |= (
            (count >= guard.repeat_min_changes)
            & ((recurs & cp).sum(axis=2) >= guard.repeat_match * np.maximum(count, 1))
        ).any(axis=1)
    if guard.stuck_window and width >= guard.stuck_window:
        looping |= _distinct(rows[:, width - guard.stuck_window :]) <= guard.stuck_max_distinct
    return looping if ids.ndim == 2 else bool(looping[0])


def _approximate(ids: np.ndarray, guard: LoopGuard) -> Loop | None:
    """First window (per unit size 2..max_ngram) where enough change points recur one unit later."""
    if guard.approx_match is None:
        return None
    changes = _change_points(ids[None])[0]
    best: Loop | None = None
    for n in range(2, guard.max_ngram + 1):
        run = n * (guard.repeats_needed(n) - 1)  # comparisons spanning `need` copies
        if len(ids) < n + run:
            continue
        cp = changes[:-n]
        same = _recurs(ids, n) & cp
        count = _window_sums(cp, run)
        hit = _window_sums(same, run)
        ok = (count >= guard.approx_min_changes * run) & (hit >= guard.approx_match * np.maximum(count, 1))
        starts = np.flatnonzero(ok)
        if len(starts):
            first = _run_start(same, starts[0], run, n)
            if best is None or first + n < best.cut:
                best = Loop("approximate", first, first + n, n)
    return best


def _long_repeat(ids: np.ndarray, guard: LoopGuard) -> Loop | None:
    """The earliest second copy of a `repeat_window`-token segment, at a lag of at least `_min_lag`."""
    window = guard.repeat_window
    if not window or len(ids) < window + _min_lag(guard):
        return None
    changes = _change_points(ids[None])[0]
    best: Loop | None = None
    for lag in range(_min_lag(guard), len(ids) - window + 1):
        if best is not None and lag >= best.cut:  # any later copy starts after the best cut
            break
        cp = changes[:-lag]
        good = _recurs(ids, lag) & cp
        count, hit = _window_sums(cp, window), _window_sums(good, window)
        enough = count >= guard.repeat_min_changes
        starts = np.flatnonzero(enough & (hit >= guard.repeat_match * np.maximum(count, 1)))
        if len(starts):
            # Confirmed at `repeat_match`; the copy reaches back over the windows where at least half
            # the change points still recur (a varied copy's first window can miss the stricter bar)
            # and over those too still to judge (a pause inside the copy).
            against = enough & (hit < 0.5 * np.maximum(count, 1))
            begin = starts[0]
            while begin > 0 and not against[begin - 1]:
                begin -= 1
            first = _run_start(good, begin, window, guard.max_ngram)
            if best is None or first + lag < best.cut:
                best = Loop("long_repeat", first, first + lag, lag)
    return best


def _min_lag(guard: LoopGuard) -> int:
    """The long-repeat rule's shortest lag: the copy starts after the segment ends, and the unit is
    longer than the exact and approximate rules look for."""
    return max(guard.repeat_window, guard.max_ngram + 1)


def _low_diversity(ids: np.ndarray, guard: LoopGuard) -> Loop | None:
    """The first `stuck_window` tokens with at most `stuck_max_distinct` distinct ids."""
    if not guard.stuck_window or len(ids) < guard.stuck_window:
        return None
    distinct = _distinct(sliding_window_view(ids, guard.stuck_window))
    starts = np.flatnonzero(distinct <= guard.stuck_max_distinct)
    return Loop("low_diversity", int(starts[0]), int(starts[0]), 0) if len(starts) else None


def _run_start(recurring: np.ndarray, start: int, width: int, near: int) -> int:
    """Where the recurrences of the window `[start, start + width)` begin: its first recurring
    transition followed by another within `near` tokens (a lone chance match before the loop is
    skipped); the first recurring one when none is."""
    hits = start + np.flatnonzero(recurring[start : start + width])
    dense = np.flatnonzero(np.diff(hits) <= near)
    return int(hits[dense[0]] if len(dense) else hits[0])


def _recurs(ids: np.ndarray, lag: int) -> np.ndarray:
    """`[T]` ids -> `[T - lag]` bool: the transition into t (ids[t-1], ids[t]) recurs `lag` tokens later."""
    same = ids[lag:] == ids[:-lag]
    out = same.copy()
    out[1:] &= same[:-1]
    return out


def _change_points(rows: np.ndarray) -> np.ndarray:
    """`[B, T]` ids -> `[B, T]` bool: the id differs from the one before (the first token counts)."""
    out = np.ones(rows.shape, dtype=bool)
    out[:, 1:] = rows[:, 1:] != rows[:, :-1]
    return out


def _window_sums(flags: np.ndarray, width: int) -> np.ndarray:
    """`[N]` bool -> `[N - width + 1]` int: how many are set in each window of `width`."""
    if len(flags) < width or width < 1:
        return np.zeros(0, dtype=np.int64)
    total = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return total[width:] - total[:-width]


def _distinct(windows: np.ndarray) -> np.ndarray:
    """`[..., W]` ids -> `[...]` number of distinct ids per window."""
    ordered = np.sort(windows, axis=-1)
    return 1 + (ordered[..., 1:] != ordered[..., :-1]).sum(axis=-1)
