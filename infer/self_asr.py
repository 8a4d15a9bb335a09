"""The checkpoint's own `asr` task behind `sts.asr`'s ASR interface (`sts-eval --asr self`).

    asr = CheckpointASR(translator)
    asr.transcribe([wav], "ja")          # [N] float32 16 kHz clips -> one transcript each

No Whisper needed, and it measures how the model hears its own output: a weak judge for a weak
model, so Whisper (`sts.asr`) stays the default for reported ASR-BLEU.
"""

from __future__ import annotations

import numpy as np

from infer.translate import Request


class CheckpointASR:
    """Greedy `asr` task of an `infer.Translator` (its decoding constrained to text)."""

    def __init__(self, translator):
        self.translator = translator
        self.name = "sts-checkpoint:asr"

    def model_for(self, lang: str) -> str:
        return self.name

    def load(self, lang: str) -> None:
        pass

    def transcribe(self, waveforms: list[np.ndarray], lang: str) -> list[str]:

        requests = [Request("asr", lang, lang, wav=w, id=str(i)) for i, w in enumerate(waveforms)]
        return [r.text or "" for r in self.translator.run(requests)]
