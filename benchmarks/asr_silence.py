"""What Whisper makes of silence and noise, and which gate stops it (the numbers in `sts.asr`'s docstring).

    python benchmarks/asr_silence.py                  # offline Whisper base, CPU, ~2 min on 2 cores
    python benchmarks/asr_silence.py --json out.json

Clips: 3 s of digital silence, 3 s of white noise at RMS 1e-4 / 1e-3 / 1e-2, a Kokoro (ja) and a
Piper (en) sentence (the `offline` extra), and those sentences cut to 0.5 s and 1 s. For each:
RMS, seconds of speech by silero VAD (`sts.asr.speech_seconds`) and by the energy gate
(`energy_speech_seconds`), Whisper's language id, and Whisper's transcript in Japanese and English
without any gate (greedy, temperature 0, as SeamlessM4T's scorer decodes) for int8 and float32
weights, then through `sts.asr.FasterWhisperASR` (gated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from sts.cli import parse_cli


@dataclass
class Args:
    """What the offline ASR hears in silence and noise (see the module docstring)."""

    json: str | None = None
    """Write the measurements here too."""
    cpu_threads: Annotated[int, Ge(1)] = 1
    """Torch CPU threads."""


def clips() -> dict[str, np.ndarray]:
    import soxr

    from corpus_builder.tts.offline import KokoroTTS, PiperTTS

    out: dict[str, np.ndarray] = {"digital silence": np.zeros(48000, np.float32)}
    rng = np.random.default_rng(0)
    for rms in (1e-4, 1e-3, 1e-2):
        out[f"white noise, RMS {rms:g}"] = (rms * rng.standard_normal(48000)).astype(np.float32)
    for lang, tts, text in (
        ("ja", KokoroTTS(), "三百円の切符を二枚ください。"),
        ("en", PiperTTS(), "I don't know where the nearest station is."),
    ):
        wav = soxr.resample(tts.speak(text), tts.sample_rate, 16000).astype(np.float32)
        out[f"{lang} speech"] = wav
        for seconds in (0.5, 1.0):
            out[f"{lang} speech cut to {seconds} s"] = wav[: int(seconds * 16000)]
    return out


def raw_transcript(model, wav: np.ndarray, lang: str) -> str:
    segments, _ = model.transcribe(
        wav, language=lang, beam_size=1, temperature=0.0, vad_filter=False, condition_on_previous_text=False
    )
    return "".join(s.text for s in segments).strip()


def main(args: Args) -> dict:
    from faster_whisper import WhisperModel

    from sts.asr import FasterWhisperASR, energy_speech_seconds, speech_seconds
    from sts.offline_models import default_whisper_model

    path = default_whisper_model("ja")
    models = {
        ct: WhisperModel(path, compute_type=ct, cpu_threads=args.cpu_threads) for ct in ("int8", "float32")
    }
    gated = FasterWhisperASR(path, compute_type="int8", cpu_threads=args.cpu_threads)
    results = {}
    for name, wav in clips().items():
        top, top_p, probs = models["int8"].detect_language(wav)
        probs = dict(probs)
        row = {
            "seconds": round(len(wav) / 16000, 2),
            "rms": float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))),
            "vad_speech_s": round(speech_seconds(wav), 2),
            "energy_speech_s": round(energy_speech_seconds(wav), 2),
            "whisper_language": f"{top} {top_p:.2f} (ja {probs.get('ja', 0):.2f}, en {probs.get('en', 0):.2f})",
            "detect_language": str(gated.detect_language(wav)),
        }
        for lang in ("ja", "en"):
            for ct, model in models.items():
                row[f"raw {ct} {lang}"] = raw_transcript(model, wav, lang)
            row[f"gated {lang}"] = gated.transcribe([wav], lang)[0]
        results[name] = row
        print(f"## {name}")
        for key, value in row.items():
            print(f"   {key}: {value!r}" if isinstance(value, str) else f"   {key}: {value:.3g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, ensure_ascii=False, indent=2)
    return results


if __name__ == "__main__":
    main(parse_cli(Args, prog="benchmarks/asr_silence.py"))
