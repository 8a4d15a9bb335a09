"""Speaker similarity: the cosine of two utterance embeddings, the one implementation of every stage.

    from sts.speaker import SpeakerEncoder, speaker_similarity
    speaker_similarity(wav_a, wav_b)      # [N] float32 16 kHz clips -> cosine in [-1, 1], None: no score
    SpeakerEncoder().embed(wav)           # [256] unit vector, or None

The encoder is resemblyzer's GE2E speaker encoder (Wan et al. 2018; 256-d, weights in the PyPI
package, CPU): our offline stand-in. Published speaker similarity uses WavLM-large fine-tuned for
speaker verification (Seed-TTS-eval) or ECAPA-TDNN; cosines from different encoders are not
comparable, so a report names the encoder. Same-speaker clips score about 0.75-0.95, one clip
against itself 1.0 (tests/test_speaker.py). It tells engines apart better than the voices of one
engine: two Kokoro voices score >= 0.6 in 67 of 90 whole-clip pairs, and 41 of 90 even at
`MIN_VOICED_SECONDS` (benchmarks/RESULTS.md).

No score on short clips. A clip with less than `MIN_VOICED_SECONDS` of voice (`voiced_seconds`:
silero VAD, unpadded) has no embedding, and a comparison with it no score (None): on short clips
the cosine says little about the voice (the measurement is at `MIN_VOICED_SECONDS`, with silero).
Callers store None as null and count it apart (the corpus check passes it as "unscored"; a DPO pair
score leaves the term out for the whole prompt). Needs the `offline` extra: `resemblyzer` (and
`setuptools<81` for its `pkg_resources` import) and `faster-whisper` for silero VAD. Without
faster-whisper there is no score at all (a warning says so once): an energy gate would count noise
as voice, and the minimum was measured with silero.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

ENCODER = "resemblyzer GE2E (offline stand-in for WavLM-large-SV / ECAPA-TDNN)"
"""How reports name the encoder."""
MIN_VOICED_SECONDS = 1.5
"""Seconds of voice (`voiced_seconds`) a clip needs for an embedding; below it, no score.

Measured by `benchmarks/speaker_min_voice.py` (benchmarks/RESULTS.md, 2026-12-07): 207 pairs of
clips from different offline engines (Kokoro ja, Piper en, espeak-ng en), cut to this much voice and
counted at the corpus check's 0.6. Cut to 0.2 s, 129 of the 131 scored pairs pass; 1.0 s, 9 (as on
whole clips, but with a higher top cosine); 1.25 s, 4; 1.5 s, 2; whole clips, 9. resemblyzer embeds
1.6 s partial windows (`partials_n_frames`, 160 frames of 10 ms) and zero-pads a shorter clip to one
window, so below about that length the embedding rests on padding more than on the voice."""


def _import_resemblyzer():
    with warnings.catch_warnings():  # its webrtcvad dependency imports the deprecated pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import resemblyzer
    return resemblyzer


class SpeakerEncoder:
    """resemblyzer's `VoiceEncoder`, loaded on first use; ImportError at construction when missing."""

    def __init__(self, device: str = "cpu"):
        _import_resemblyzer()
        self.device = device
        self._model = None

    def embed(
        self,
        waveform: np.ndarray,
        sample_rate: int = 16000,
        *,
        min_voiced_seconds: float = MIN_VOICED_SECONDS,
    ) -> np.ndarray | None:
        """`[N]` float clip -> `[256]` float32 unit embedding, or None when it has less than
        `min_voiced_seconds` of voice (`voiced_seconds`; also None, with a warning once, when
        faster-whisper's silero VAD is not installed to tell) or none is left after resemblyzer's
        silence trimming (webrtcvad). `min_voiced_seconds=0` embeds any voice (the benchmark)."""
        resemblyzer = _import_resemblyzer()
        wav = _to_16k(np.asarray(waveform, dtype=np.float32), sample_rate)
        if not np.any(wav):  # digital silence: its volume normalization would divide by zero
            return None
        if min_voiced_seconds > 0:
            voiced = voiced_seconds(wav)
            if voiced is None or voiced < min_voiced_seconds:
                return None
        wav = resemblyzer.preprocess_wav(wav)
        if len(wav) == 0:
            return None
        if self._model is None:
            self._model = resemblyzer.VoiceEncoder(self.device, verbose=False)
        return self._model.embed_utterance(wav)

    def similarity(
        self, a: np.ndarray | None, b: np.ndarray | None, sample_rate: int = 16000
    ) -> float | None:
        """Cosine of the two clips' embeddings, or None (no score) when either is missing, empty or
        has less than `MIN_VOICED_SECONDS` of voice."""
        if a is None or b is None or len(a) == 0 or len(b) == 0:
            return None
        ea, eb = self.embed(a, sample_rate), self.embed(b, sample_rate)
        if ea is None or eb is None:
            return None
        return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))


def voiced_seconds(waveform: np.ndarray, sample_rate: int = 16000) -> float | None:
    """Seconds of voice in a `[N]` float clip: silero VAD without padding, pauses of 100 ms or more
    left out (`sts.asr.speech_seconds(padded=False)`). None, with a warning the first time, when
    faster-whisper (which ships silero) is not installed: `sts.asr`'s energy-gate fallback counts
    noise as voice, and `MIN_VOICED_SECONDS` was measured with silero."""
    try:
        from faster_whisper.vad import get_speech_timestamps  # noqa: F401  (speech_seconds' VAD)
    except ImportError:
        _warn_no_vad()
        return None
    from sts.asr import speech_seconds

    return speech_seconds(_to_16k(np.asarray(waveform, dtype=np.float32), sample_rate), padded=False)


@functools.cache
def _warn_no_vad() -> None:
    warnings.warn(
        "speaker similarity needs faster-whisper's silero VAD to measure voice "
        "(pip install faster-whisper, or the `offline` extra): no speaker scores without it",
        RuntimeWarning,
        stacklevel=3,
    )


def _to_16k(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == 16000 or len(wav) == 0:
        return wav
    import soxr

    return soxr.resample(wav, sample_rate, 16000).astype(np.float32)


@functools.cache
def _shared_encoder(device: str) -> SpeakerEncoder:
    return SpeakerEncoder(device)


def speaker_similarity(a: np.ndarray | None, b: np.ndarray | None, *, device: str = "cpu") -> float | None:
    """`SpeakerEncoder.similarity` with one encoder per device for the whole process."""
    return _shared_encoder(device).similarity(a, b)
