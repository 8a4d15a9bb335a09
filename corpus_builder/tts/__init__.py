"""TTS backends of the corpus builder, picked by a spec string.

    from corpus_builder.tts import load_tts
    tts = load_tts("llasa:HKUSTAudio/Llasa-1B", device="cuda", dtype="bfloat16")   # or "llasa:/local/dir"
    tts = load_tts("llasa-vllm:HKUSTAudio/Llasa-1B")     # GPU, `gpu` extra
    tts = load_tts("offline")                            # Kokoro ja + Piper en (espeak-ng fallback)
    results = tts.synthesize([TTSRequest("おはようございます。", "ja")])

Each backend imports its heavy packages in its constructor; importing this package is cheap.
"""

from __future__ import annotations

from corpus_builder.interfaces import TTSBackend
from sts.errors import UsageError

KNOWN_SPECS = (
    "llasa:<hf-id-or-dir>",
    "llasa-vllm:<hf-id-or-dir>",
    "kokoro",
    "piper",
    "espeak",
    "offline",
)


def load_tts(spec: str, **kwargs) -> TTSBackend:
    """The TTS backend for `spec`; `kwargs` go to its constructor.

    Specs: "llasa:HKUSTAudio/Llasa-1B" (transformers), "llasa-vllm:HKUSTAudio/Llasa-1B" (vLLM),
    "kokoro" (ja), "piper" (en), "espeak" (en), "offline" (Kokoro ja + Piper en, espeak-ng fallback).
    """
    kind, _, model = spec.partition(":")
    if kind in ("llasa", "llasa-vllm"):
        if not model:
            raise UsageError(
                f"{spec!r}: name the model, e.g. '{kind}:HKUSTAudio/Llasa-1B' or '{kind}:/local/dir'"
            )
        from sts.model_files import resolve_model

        resolve_model(model, what="TTS model")  # a missing local folder named as such
        if kind == "llasa":
            from corpus_builder.tts.llasa import LlasaTTS

            return LlasaTTS(model, **kwargs)
        from corpus_builder.tts.llasa_vllm import LlasaVllm

        return LlasaVllm(model, **kwargs)
    if not model:
        from corpus_builder.tts import offline

        factories = {
            "kokoro": offline.KokoroTTS,
            "piper": offline.PiperTTS,
            "espeak": offline.EspeakTTS,
            "offline": offline.offline_tts,
        }
        if kind in factories:
            return factories[kind](**kwargs)
    raise UsageError(f"unknown TTS spec {spec!r}; known: {', '.join(KNOWN_SPECS)}")


__all__ = ["KNOWN_SPECS", "load_tts"]
