"""Code sequences for testing loop detection: speech-like codes and the loops a codec LM falls into.

    from sts.testing.loops import speech_like_codes, synthetic_loops
    speech = speech_like_codes(6.0, seed=0)                  # [300] int64, 50 codes per second
    for case in synthetic_loops(speech, codebook_size=1024):  # the loop kinds of issue 13
        loop = detect_loop(case.ids, SPEECH_GUARD)            # cut near case.cut

The loops are those issue 13 measured slipping past the exact n-gram check (a sentence spoken twice,
a 10-code unit repeated with 10 % or 20 % of its codes varied, a random walk over 3 codes) and two
exact ones, each after a stretch of natural speech. `benchmarks/loop_detector.py` runs them on real
encoded speech, the tests on `speech_like_codes`. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoopCase:
    """One synthetic looping output."""

    name: str
    ids: np.ndarray
    """`[T]` int64 codes: natural speech, then the loop."""
    kind: str
    """The rule expected to cut it (`sts.generation.loops.LOOP_KINDS`)."""
    cut: int
    """Where the loop's repeats (or the stuck run) begin: a detector should keep about `ids[:cut]`."""


def speech_like_codes(
    seconds: float,
    *,
    codebook_size: int = 1024,
    seed: int = 0,
    pauses: int = 1,
    pause_seconds: float = 0.8,
    silence_code: int = 0,
    frame_rate: int = 50,
) -> np.ndarray:
    """A stand-in for encoded speech: "phones" of 1-3 frames of one code drawn from the codebook,
    with `pauses` runs of `silence_code` (`pause_seconds` each) spread over it. `[T]` int64."""
    rng = np.random.default_rng(seed)
    total = int(seconds * frame_rate)
    pause = int(pause_seconds * frame_rate)
    speaking = max(total - pauses * pause, 1)
    pieces = []
    for part in np.array_split(np.arange(speaking), pauses + 1):
        codes = []
        while len(codes) < len(part):
            codes += [int(rng.integers(1, codebook_size))] * int(rng.integers(1, 4))
        pieces.append(np.asarray(codes[: len(part)], dtype=np.int64))
        if len(pieces) < 2 * pauses + 1:
            pieces.append(np.full(pause, silence_code, dtype=np.int64))
    return np.concatenate(pieces)[:total]


def synthetic_loops(speech: np.ndarray, *, codebook_size: int, seed: int = 0) -> list[LoopCase]:
    """The loop kinds of issue 13 (+ exact loops), each after `speech` (`[T]` int codes, >= 1 s).

    sentence_twice: `speech` said again right after itself; sentence_twice_varied: the same with
    10 % of the second copy's codes changed; unit10_varied10 / unit10_varied20: 1 s of speech, then a
    10-code unit repeated 20 times with 1 (2) of each copy's codes replaced; walk3: 1 s of speech,
    then 3 s drawn at random from 3 codes; exact5 / exact20: 1 s of speech, then a 5-code unit 30
    times / a 20-code unit 8 times.
    """
    rng = np.random.default_rng(seed)
    speech = np.asarray(speech, dtype=np.int64).ravel()
    head = speech[:50]

    def varied(unit: np.ndarray, copies: int, changed: int) -> np.ndarray:
        out = []
        for _ in range(copies):
            copy = unit.copy()
            at = rng.choice(len(unit), changed, replace=False)
            copy[at] = rng.integers(0, codebook_size, changed)
            out.append(copy)
        return np.concatenate(out)

    def unit(n: int) -> np.ndarray:
        return rng.choice(codebook_size, n, replace=False).astype(np.int64)

    second = speech.copy()
    at = rng.choice(len(speech), len(speech) // 10, replace=False)
    second[at] = rng.integers(0, codebook_size, len(at))
    u10 = unit(10)
    walk_codes = unit(3)
    return [
        LoopCase("sentence_twice", np.concatenate([speech, speech]), "long_repeat", len(speech)),
        LoopCase("sentence_twice_varied", np.concatenate([speech, second]), "long_repeat", len(speech)),
        LoopCase("unit10_varied10", np.concatenate([head, varied(u10, 20, 1)]), "approximate", 60),
        LoopCase("unit10_varied20", np.concatenate([head, varied(u10, 20, 2)]), "approximate", 60),
        LoopCase("walk3", np.concatenate([head, rng.choice(walk_codes, 150)]), "low_diversity", 50),
        LoopCase("exact5", np.concatenate([head, np.tile(unit(5), 30)]), "exact", 55),
        LoopCase("exact20", np.concatenate([head, np.tile(unit(20), 8)]), "exact", 70),
    ]
