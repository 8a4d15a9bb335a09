"""Chunked decoding: turn codes into audio while they are still being generated.

    decoder = codec.stream_decoder()                 # the codec's `stream_defaults`, or chunk_frames=..., ...
    for codes in new_codes:                          # [k] int, any k (one id at a time is fine)
        play(decoder.push(codes))                    # [n] float32: audio that is final now, maybe empty
    play(decoder.flush())                            # the rest; joined, `len(codes) * hop` samples

A chunk of `chunk_frames` frames is decoded once `lookahead` frames after it are known: the codec
decodes the window [chunk start - `left_context`, chunk end + `lookahead`), and the chunk's samples
are kept (the context and lookahead frames only give the decoder what it would have seen in the
whole sequence). The first `crossfade_frames` of each chunk are blended linearly from the previous
window's decode of those frames (which saw them only as lookahead) into this window's, so that the
joins do not click. First audio needs `chunk_frames + lookahead` frames; every frame is decoded
about `(left_context + chunk_frames + lookahead) / chunk_frames` times.

How close the joined chunks come to decoding the whole sequence at once depends on the codec
(`python benchmarks/stream_decode.py`, table in `benchmarks/RESULTS.md`, bounds asserted in
tests/test_stream_decode.py and tests/test_stream.py). Measured 2026-11-30 on this CPU, 8 utterances
(53 s) of Kokoro ja / Piper en speech, codes pushed one at a time:

* demo codec (mel k-means + Griffin-Lim, `sts.codec.melkmeans`), defaults 20 / 25 / 15 / 2
  (chunk / left context / lookahead / crossfade): first audio after 35 frames (0.7 s of codes),
  each frame decoded ~3.6 times; SNR 64.0 dB (worst utterance 58.5 dB), max abs difference 0.003.
  Its Griffin-Lim starts every frame from a phase that depends only on the frame's position, so a
  window converges to the whole decode's phases; the lookahead matters most (25 / 50 / 10 / 2:
  40.0 dB; 10 / 25 / 25 / 2: 108 dB at 7x the work). Documented bound: SNR >= 50 dB, max abs <= 0.01.
* XCodec2 (`sts.codec.xcodec2`), defaults 25 / 150 / 10 / 2: its decoder's GroupNorm and unmasked
  transformer mix every frame of the clip, so no window reproduces the whole decode. On the tiny
  random codec (`sts.testing.save_tiny_xcodec2`) the joined chunks are 8.4 dB SNR from the whole
  decode (worst 7.7; 25 / 1000 / 10 / 2, the whole prefix as context: 9.3); with its attention and
  GroupNorm removed the same chunking reaches ~43 dB, so the mixing is the cause. Documented bound
  for the tiny random codec: SNR >= 5 dB. Users of the trained XCodec2 report that a few seconds of
  left context make chunked decoding sound like the whole (zhenye234/X-Codec-2.0 issue 28: "a
  context buffer of a few seconds (e.g. 3s)"), hence 150 frames; that is a report, not our
  measurement (no trained weights offline).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np


class WindowCodec(Protocol):
    """What the chunked decoder needs of a codec (`sts.codec.Codec` has it)."""

    sample_rate: int
    frame_rate: float

    def decode_window(self, codes: np.ndarray, *, start_frame: int) -> np.ndarray: ...


@dataclass(frozen=True)
class StreamSettings:
    """How a `StreamDecoder` cuts the code stream into decoding windows (all counts in codec frames)."""

    chunk_frames: int = 25
    """Frames emitted per decode (25 = 0.5 s at 50 frames/s)."""
    left_context: int = 150
    """Frames before the chunk that the window decodes again (they are not emitted twice)."""
    lookahead: int = 10
    """Frames after the chunk that must be known before it is decoded (the delay the chunking adds)."""
    crossfade_frames: int = 2
    """Frames at the start of a chunk blended from the previous window's decode (<= lookahead)."""

    def __post_init__(self):
        if self.chunk_frames < 1 or self.left_context < 0 or self.lookahead < 0:
            raise ValueError(
                f"need chunk_frames >= 1, left_context >= 0, lookahead >= 0, got {self.chunk_frames}, "
                f"{self.left_context}, {self.lookahead}"
            )
        if not 0 <= self.crossfade_frames <= min(self.lookahead, self.chunk_frames):
            raise ValueError(
                f"crossfade_frames must lie in [0, min(lookahead, chunk_frames)], got {self.crossfade_frames}"
            )

    @property
    def first_audio_frames(self) -> int:
        """Frames that must be known before the first audio comes out."""
        return self.chunk_frames + self.lookahead


class StreamDecoder:
    """Decodes a growing code sequence chunk by chunk (see the module docstring).

    `push(codes)` returns the audio that became final, `flush()` the rest. `emitted_frames` counts
    the frames whose audio has been returned; `frames` the codes pushed.
    """

    def __init__(self, codec: WindowCodec, settings: StreamSettings):
        self.codec = codec
        self.settings = settings
        self.hop = int(round(codec.sample_rate / codec.frame_rate))
        self._codes = np.zeros(0, np.int64)
        self.emitted_frames = 0
        self._held: np.ndarray | None = None  # previous window's audio of the next crossfade frames

    @property
    def frames(self) -> int:
        """Codes pushed so far."""
        return len(self._codes)

    def push(self, codes) -> np.ndarray:
        """Append codes `[k]` int; returns `[n]` float32 audio that is final now (n a multiple of the hop)."""
        codes = np.asarray(codes, dtype=np.int64).ravel()
        self._codes = np.concatenate([self._codes, codes])
        s = self.settings
        out = []
        while self.frames - self.emitted_frames >= s.chunk_frames + s.lookahead:
            out.append(self._emit(self.emitted_frames + s.chunk_frames))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self, total_frames: int | None = None) -> np.ndarray:
        """Audio of every frame not yet emitted, `[n]` float32; the decoder is then done.

        `total_frames` (<= `frames`) drops the codes after it first (a loop cut at the end of the
        sequence); frames already emitted stay emitted: a `total_frames` below `emitted_frames` gives
        no audio, and the caller says that the streamed audio ran past the cut.
        """
        if total_frames is not None:
            if total_frames > self.frames:
                raise ValueError(f"total_frames {total_frames} is more than the {self.frames} frames pushed")
            self._codes = self._codes[: max(total_frames, self.emitted_frames)]
        if self.emitted_frames >= self.frames:
            return np.zeros(0, np.float32)
        return self._emit(self.frames)

    def _emit(self, end: int) -> np.ndarray:
        """Decode the window around frames [emitted, end) and return their audio `[(end - emitted) * hop]`."""
        s, hop = self.settings, self.hop
        start = self.emitted_frames
        first = max(0, start - s.left_context)
        last = min(self.frames, end + s.lookahead)
        window = self.codec.decode_window(self._codes[first:last], start_frame=first)
        chunk = window[(start - first) * hop : (end - first) * hop].astype(np.float32, copy=True)
        if self._held is not None:
            n = min(len(self._held), len(chunk))
            ramp = np.arange(1, n + 1, dtype=np.float32) / (n + 1)
            chunk[:n] = self._held[:n] * (1 - ramp) + chunk[:n] * ramp
        fade_end = min(last, end + s.crossfade_frames)
        self._held = window[(end - first) * hop : (fade_end - first) * hop] if fade_end > end else None
        self.emitted_frames = end
        return chunk


def stream_decoder(codec: WindowCodec, settings: StreamSettings | None = None, **overrides) -> StreamDecoder:
    """A `StreamDecoder` with `settings` (default: the codec's `stream_defaults`), fields overridden by
    the keyword arguments that are not None (`chunk_frames=`, `left_context=`, `lookahead=`, ...)."""
    base = settings or getattr(codec, "stream_defaults", None) or StreamSettings()
    return StreamDecoder(codec, replace(base, **{k: v for k, v in overrides.items() if v is not None}))


def joined_difference(joined: np.ndarray, whole: np.ndarray) -> dict[str, float]:
    """How far chunked audio lies from the whole decode: max abs and RMS difference (full scale 1.0),
    and the SNR in dB (whole decode's power over the difference's; inf when they are equal)."""
    joined, whole = np.asarray(joined, np.float64), np.asarray(whole, np.float64)
    if joined.shape != whole.shape:
        raise ValueError(f"joined audio has {joined.shape} samples, the whole decode {whole.shape}")
    diff = joined - whole
    rms = float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0
    power = float(np.sqrt(np.mean(whole**2))) if whole.size else 0.0
    snr = float("inf") if rms == 0 else 20 * float(np.log10(max(power, 1e-12) / rms))
    return {"max_abs": float(np.abs(diff).max()) if diff.size else 0.0, "rms": rms, "snr_db": snr}
