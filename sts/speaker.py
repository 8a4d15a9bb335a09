"""Speaker similarity: the cosine of two utterance embeddings, the one implementation of every stage.

    from sts.speaker import SpeakerEncoder, speaker_similarity
    speaker_similarity(wav_a, wav_b)      # [N] float32 16 kHz clips -> cosine in [-1, 1], None: no speech
    SpeakerEncoder().embed(wav)           # [256] unit vector, or None

The encoder is resemblyzer's GE2E speaker encoder (Wan et al. 2018; 256-d, weights in the PyPI
package, CPU): our offline stand-in. Published speaker similarity uses WavLM-large fine-tuned for
speaker verification (Seed-TTS-eval) or ECAPA-TDNN; cosines from different encoders are not
comparable, so a report names the encoder. resemblyzer trims silences with webrtcvad first; when
less than `MIN_VOICED_SECONDS` of voice is left the embedding is None, and so is the similarity.
Same-speaker clips score about 0.75-0.95, one clip against itself 1.0 (tests/test_speaker.py).
Needs the `offline` extra (`resemblyzer`, and `setuptools<81` for its `pkg_resources` import).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

ENCODER = "resemblyzer GE2E (offline stand-in for WavLM-large-SV / ECAPA-TDNN)"
"""How reports name the encoder."""
MIN_VOICED_SECONDS = 0.1
"""Less voice than this after resemblyzer's silence trimming: no embedding."""


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

    def embed(self, waveform: np.ndarray, sample_rate: int = 16000) -> np.ndarray | None:
        """`[N]` float clip -> `[256]` float32 unit embedding, or None when no voice is left after VAD."""
        resemblyzer = _import_resemblyzer()
        wav = np.asarray(waveform, dtype=np.float32)
        if not np.any(wav):  # digital silence: its volume normalization would divide by zero
            return None
        wav = resemblyzer.preprocess_wav(wav, source_sr=sample_rate)
        if len(wav) < MIN_VOICED_SECONDS * resemblyzer.sampling_rate:
            return None
        if self._model is None:
            self._model = resemblyzer.VoiceEncoder(self.device, verbose=False)
        return self._model.embed_utterance(wav)

    def similarity(
        self, a: np.ndarray | None, b: np.ndarray | None, sample_rate: int = 16000
    ) -> float | None:
        """Cosine of the two clips' embeddings, or None when either is missing, empty or has no voice."""
        if a is None or b is None or len(a) == 0 or len(b) == 0:
            return None
        ea, eb = self.embed(a, sample_rate), self.embed(b, sample_rate)
        if ea is None or eb is None:
            return None
        return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))


@functools.cache
def _shared_encoder(device: str) -> SpeakerEncoder:
    return SpeakerEncoder(device)


def speaker_similarity(a: np.ndarray | None, b: np.ndarray | None, *, device: str = "cpu") -> float | None:
    """`SpeakerEncoder.similarity` with one encoder per device for the whole process."""
    return _shared_encoder(device).similarity(a, b)
