"""One corpus a recipe builds with the offline voices: its sentence pairs, voices and checks
(`recipes.demo.build_corpora` builds it; `recipes.domain` chooses the domain's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CorpusSpec:
    """One corpus the demo builds: its pairs (dicts with ja, en), the offline voices that speak them
    (`corpus_builder.tts.offline.offline_tts`) and the checks run on them."""

    pairs: Sequence[dict]
    ja_voice: str = "jf_alpha"
    en: str = "auto"  # "auto" (Piper, else espeak-ng), "piper" or "espeak"
    checks: tuple[str, ...] = ("default",)
