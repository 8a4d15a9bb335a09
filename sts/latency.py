"""Streaming latency as SimulEval defines it: StartOffset, EndOffset and ATD, ideal and computation-aware.

    from sts.latency import SpeechOutputTrace, latency_scores
    trace = SpeechOutputTrace(source_ms=4000, delays=[4000, 4000], elapsed=[4610, 4900], durations=[700, 700])
    latency_scores(trace)     # {"ideal": {"StartOffset", "EndOffset", "ATD"}, "computation_aware": {...}}

Definitions (facebookresearch/SimulEval, `simuleval/evaluator/scorers/latency_scorer.py` and
`instance.py`, speech input and speech output; all times in milliseconds, as SimulEval reports them):

- An output is a list of audio chunks. `delays[i]` is how much source speech had been read when
  chunk i was emitted; `elapsed[i]` is that plus the wall-clock time since the source started
  (SimulEval's `step_to_elapsed`), so it counts computation; `durations[i]` is the chunk's length.
- Playback: chunk i starts at max(end of chunk i-1, its timestamp) and lasts its duration
  (SimulEval's `SpeechOutputInstance.summarize` intervals; a gap is a discontinuity).
- StartOffset = the first timestamp (`StartOffsetScorer`).
- EndOffset = end of the last played chunk - source length (`EndOffsetScorer` for speech output).
- ATD, Average Token Delay (Kano et al., "Average Token Delay: A Latency Metric for Simultaneous
  Translation", 2022; SimulEval's `ATDScorer`): source and target speech are cut into 300 ms
  "tokens"; consecutive chunks with the same delay form one chunk; each target token is paired
  with a source token by its chunk's position (the t-th target token with the t-th source token,
  shifted back by how far the output has run ahead of the input, and never past the source read
  when it was emitted); ATD is the mean of (end time of the target token - end time of its source
  token), target tokens ending at max(their delay, the previous token's end) + 300 ms (+ their
  share of the chunk's computation time in the computation-aware form).

"ideal" uses `delays`, "computation_aware" uses `elapsed` (for ATD: the computation time between
chunks, as SimulEval derives it). One difference, on purpose: SimulEval builds the playback
intervals of EndOffset from the ideal delays in both forms; here the computation-aware EndOffset
plays the chunks at their elapsed times, which is when a listener hears them.

A model that reads the whole utterance before it speaks (`sts-infer`, and `sts-eval --stream`) has
every delay equal to the source length: ideal StartOffset = source length, ideal EndOffset = the
output's duration; computation-aware adds the time to first audio and any stall of the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TOKEN_MS = 300.0
"""SimulEval's length of one speech "token" for ATD (300 ms per word)."""
METRICS = ("StartOffset", "EndOffset", "ATD")


@dataclass
class SpeechOutputTrace:
    """When each chunk of one speech output came out (all in ms), for one source utterance."""

    source_ms: float
    """Length of the source speech."""
    delays: list[float]
    """Per chunk: source speech read when it was emitted (non-decreasing)."""
    elapsed: list[float]
    """Per chunk: the delay plus the wall-clock time since the source started."""
    durations: list[float]
    """Per chunk: its length."""

    @classmethod
    def from_events(cls, source_seconds: float, chunks: Sequence[tuple[float, float]]) -> SpeechOutputTrace:
        """A model that reads the whole source first: `chunks` are (wall seconds since the start, audio seconds)."""
        source_ms = 1000.0 * source_seconds
        return cls(
            source_ms,
            delays=[source_ms] * len(chunks),
            elapsed=[source_ms + 1000.0 * t for t, _ in chunks],
            durations=[1000.0 * d for _, d in chunks],
        )


def playback_end(timestamps: Sequence[float], durations: Sequence[float]) -> float:
    """End of the last chunk when each starts at max(the previous end, its timestamp)."""
    end = timestamps[0]
    for start, duration in zip(timestamps, durations, strict=True):
        end = max(end, start) + duration
    return end


def start_offset(timestamps: Sequence[float]) -> float:
    return float(timestamps[0])


def end_offset(timestamps: Sequence[float], durations: Sequence[float], source_ms: float) -> float:
    return float(playback_end(timestamps, durations) - source_ms)


def _split(length: float) -> list[float]:
    """A span cut into `TOKEN_MS` tokens and the remainder (none when it is 0)."""
    whole, rest = divmod(length, TOKEN_MS)
    return [TOKEN_MS] * int(whole) + ([rest] if rest else [])


def average_token_delay(trace: SpeechOutputTrace, *, computation_aware: bool = False) -> float:
    """SimulEval's ATD for speech input and speech output (see the module docstring), in ms."""
    delays = list(trace.delays)
    if computation_aware:
        compute = [e - d for e, d in zip(trace.elapsed, delays, strict=True)]
        step_compute = [c - p for c, p in zip(compute, [0.0, *compute[:-1]], strict=True)]
    else:
        step_compute = [0.0] * len(delays)
    # Chunks: consecutive outputs with the same delay are one chunk (durations and compute summed).
    chunks: list[list[float]] = []  # [delay, duration, compute]
    for delay, duration, comp in zip(delays, trace.durations, step_compute, strict=True):
        if chunks and chunks[-1][0] == delay:
            chunks[-1][1] += duration
            chunks[-1][2] += comp
        else:
            chunks.append([delay, duration, comp])
    # Target tokens: (chunk index from 1, delay, length, compute share).
    tgt_sizes, tgt_tokens = [0], []
    for index, (delay, duration, comp) in enumerate(chunks, start=1):
        lengths = _split(duration)
        tgt_sizes.append(len(lengths))
        tgt_tokens += [(index, delay, length, comp / (len(lengths) or 1)) for length in lengths]
    # Source tokens: the speech read between consecutive delays, with their end times.
    src_sizes, src_ends, previous = [0], [0.0], 0.0
    for delay, *_ in chunks:
        lengths = _split(delay - previous)
        src_sizes.append(len(lengths))
        for length in lengths:
            src_ends.append(src_ends[-1] + length)
        previous = delay
    tgt_ends = [0.0]
    for _, delay, length, comp in tgt_tokens:
        tgt_ends.append(max(delay, tgt_ends[-1]) + length + comp)
    gaps = []
    for t, (chunk, *_rest) in enumerate(tgt_tokens, start=1):
        ahead = sum(tgt_sizes[:chunk]) - sum(src_sizes[:chunk])
        paired = t - max(0, ahead)
        read = sum(src_sizes[: chunk + 1])
        gaps.append(tgt_ends[t] - src_ends[min(paired, read)])
    return float(sum(gaps) / len(gaps)) if gaps else 0.0


def latency_scores(trace: SpeechOutputTrace) -> dict:
    """{"ideal": {metric: ms}, "computation_aware": {metric: ms}}; {} for an output without audio."""
    if not trace.delays:
        return {}
    out = {}
    for form, stamps, aware in (("ideal", trace.delays, False), ("computation_aware", trace.elapsed, True)):
        out[form] = {
            "StartOffset": round(start_offset(stamps), 1),
            "EndOffset": round(end_offset(stamps, trace.durations, trace.source_ms), 1),
            "ATD": round(average_token_delay(trace, computation_aware=aware), 1),
        }
    return out


def mean_scores(per_output: Sequence[dict]) -> dict:
    """Corpus latency: each metric's mean over the outputs that have one (SimulEval averages instances)."""
    out: dict = {"n": sum(bool(s) for s in per_output), "unit": "ms"}
    for form in ("ideal", "computation_aware"):
        values = [s[form] for s in per_output if s]
        out[form] = {
            m: round(sum(v[m] for v in values) / len(values), 1) if values else None for m in METRICS
        }
    return out
