"""`sts demo --size domain`: does the recipe translate speech it has not heard? The closed bilingual
domain of `sts.domain` (a traveller in shops, stations and restaurants), spoken by the offline voices,
with held-out sentences that are new combinations of words the model has heard.

    sts demo -o runs/domain --size domain          # builds, trains, evaluates; report.md

The corpora it builds (`CorpusSpec`s for `recipes.demo.build_corpora`):

- `train`: the training pairs, Japanese in two Kokoro voices (jf_alpha, jf_gongitsune, one per
  sentence by a hash of its text), English in Piper's voice;
- `test`: held-out combinations (`sts.domain.split_pairs`), in the training voices (jf_alpha, Piper);
- `test-voice`: the first held-out combinations again, in voices the model never heard (Kokoro's
  male jm_kumo, espeak-ng), when the size asks for them and espeak-ng is installed.

The training corpus skips the Whisper and speaker checks: every sentence is a template filled from a
known list, spoken by a deterministic TTS, and the held-out corpora (checked) and the codec ceiling
measure what a check would; skipping it saves a Whisper pass per clip (docs/measurements.md).
"""

from __future__ import annotations

import shutil

from recipes.corpus_spec import CorpusSpec
from sts.domain import split_pairs

TRAIN_VOICES = "jf_alpha,jf_gongitsune"
HELD_OUT_JA_VOICE, HELD_OUT_EN = "jm_kumo", "espeak"


def _as_dicts(pairs) -> list[dict]:
    return [{"id": p.id, "ja": p.ja, "en": p.en} for p in pairs]


def domain_specs(size: dict, seed: int, log=print) -> dict:
    """The `CorpusSpec`s of a domain size: {"train", "test"[, "test-voice"]}."""
    split = split_pairs(seed=seed, n_test=size["test"], n_train=size["train"])
    specs = {
        "train": CorpusSpec(_as_dicts(split.train), ja_voice=TRAIN_VOICES, en="piper", checks=("none",)),
        "test": CorpusSpec(_as_dicts(split.test), ja_voice="jf_alpha", en="piper"),
    }
    if size.get("voice_test") and shutil.which("espeak-ng"):
        specs["test-voice"] = CorpusSpec(
            _as_dicts(split.test[: size["voice_test"]]), ja_voice=HELD_OUT_JA_VOICE, en=HELD_OUT_EN
        )
    elif size.get("voice_test"):
        log("   no held-out-voice set: espeak-ng (the unheard English voice) is not installed")
    return specs
