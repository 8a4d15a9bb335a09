"""Long-form input: split speech longer than ~20 s at pauses, join the translated pieces with silence.

    spans = split_at_pauses(wav)                 # [(start, end)] sample indices covering wav, each <= 20 s
    joined = join_waveforms(pieces, gap_seconds=0.3)

Pauses come from silero-vad when it is installed (`vad="auto"`/`"silero"`), otherwise from an
energy detector (`vad="energy"`): 20 ms frames whose RMS level is more than `drop_db` below the
clip's loud frames (95th percentile) count as silent, and runs of at least `min_pause` seconds are
pauses. A cut goes at the middle of the longest pause inside the window that keeps the segment
between `min_seconds` and `max_seconds`; with no pause there, a hard cut at `max_seconds`.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from sts.audio import SAMPLE_RATE

FRAME = 320
"""Energy frame in samples (20 ms at 16 kHz, one codec hop)."""

Vad = Literal["auto", "energy", "silero"]


def energy_pauses(
    wav: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    drop_db: float = 35.0,
    floor_db: float = -55.0,
    min_pause: float = 0.25,
) -> list[tuple[int, int]]:
    """Silent runs of `wav` (`[N]` float) at least `min_pause` s long, as (start, end) samples."""
    n_frames = len(wav) // FRAME
    if n_frames == 0:
        return []
    frames = wav[: n_frames * FRAME].reshape(n_frames, FRAME).astype(np.float64)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)  # [F] dBFS-ish
    threshold = max(np.percentile(level, 95) - drop_db, floor_db)
    silent = level < threshold
    pauses, start = [], None
    for i, s in enumerate(np.append(silent, False)):  # sentinel closes a trailing run
        if s and start is None:
            start = i
        elif not s and start is not None:
            if (i - start) * FRAME >= min_pause * sample_rate:
                pauses.append((start * FRAME, i * FRAME))
            start = None
    return pauses


@functools.cache
def _silero_model():
    """silero-vad's model, loaded once per process."""
    from silero_vad import load_silero_vad

    return load_silero_vad()


def silero_pauses(
    wav: np.ndarray, *, sample_rate: int = SAMPLE_RATE, min_pause: float = 0.25
) -> list[tuple[int, int]] | None:
    """Gaps between silero-vad's speech regions, as (start, end) samples; None when it hears no speech.

    Needs `silero-vad` (ImportError otherwise).
    """
    import torch
    from silero_vad import get_speech_timestamps

    speech = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)),
        _silero_model(),
        sampling_rate=sample_rate,
    )
    if not speech:
        return None
    edges = [0] + [x for s in speech for x in (s["start"], s["end"])] + [len(wav)]
    gaps = zip(edges[::2], edges[1::2], strict=True)
    return [(a, b) for a, b in gaps if b - a >= min_pause * sample_rate]


def find_pauses(
    wav: np.ndarray, *, vad: Vad = "auto", sample_rate: int = SAMPLE_RATE
) -> list[tuple[int, int]]:
    """Pauses by silero-vad (`"silero"`; `"auto"` when installed and it hears speech), else by energy."""
    if vad in ("silero", "auto"):
        try:
            pauses = silero_pauses(wav, sample_rate=sample_rate)
        except ImportError:
            if vad == "silero":
                raise
            pauses = None
        if pauses is not None:
            return pauses
    elif vad != "energy":
        raise ValueError(f"vad must be 'auto', 'energy' or 'silero', got {vad!r}")
    return energy_pauses(wav, sample_rate=sample_rate)


def split_at_pauses(
    wav: np.ndarray,
    *,
    max_seconds: float = 20.0,
    min_seconds: float = 3.0,
    vad: Vad = "auto",
    sample_rate: int = SAMPLE_RATE,
    pauses: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """Contiguous (start, end) sample spans covering `wav`, each at most `max_seconds` long.

    A clip no longer than `max_seconds` is one span. Cuts fall in the middle of pauses (see the
    module docstring); `pauses` overrides the detector.
    """
    total = len(wav)
    longest, shortest = int(max_seconds * sample_rate), int(min_seconds * sample_rate)
    if total <= longest:
        return [(0, total)]
    if pauses is None:
        pauses = find_pauses(wav, vad=vad, sample_rate=sample_rate)
    spans, start = [], 0
    while total - start > longest:
        inside = [
            (b - a, (a + b) // 2) for a, b in pauses if start + shortest < (a + b) // 2 <= start + longest
        ]
        cut = max(inside)[1] if inside else start + longest  # longest pause; ties: the later one
        spans.append((start, cut))
        start = cut
    spans.append((start, total))
    return spans


def join_waveforms(pieces: list[np.ndarray], *, gap_seconds: float = 0.3, sample_rate: int = SAMPLE_RATE):
    """Concatenate `[N_i]` float32 pieces with `gap_seconds` of silence between them: `[sum N_i + gaps]`."""
    gap = np.zeros(int(gap_seconds * sample_rate), dtype=np.float32)
    out: list[np.ndarray] = []
    for i, piece in enumerate(pieces):
        if i:
            out.append(gap)
        out.append(np.asarray(piece, dtype=np.float32))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def join_texts(texts: list[str], lang: str) -> str:
    """Japanese joins without spaces, English with one."""
    sep = "" if lang == "ja" else " "
    return sep.join(t.strip() for t in texts if t and t.strip())
