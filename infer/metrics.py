"""Text metrics for `sts-eval`: sacreBLEU BLEU and chrF with their signatures, CER and WER.

    bleu_scores(hyps, refs, "ja")   # {"char": {"score": 41.2, "signature": "nrefs:1|...|tok:char|..."},
                                    #  "ja-mecab": {...}}  (ja-mecab only when mecab-python3 + ipadic import)
    chrf_score(hyps, refs)          # {"score": ..., "signature": ...}
    error_rate(hyps, refs, "ja")    # {"cer": 0.12, "wer": None, ...}  corpus level: sum(edits) / sum(ref length)

BLEU follows Seamless practice: tokenizer `char` for Japanese and `13a` for English; sacreBLEU's
own Japanese default `ja-mecab` is reported beside `char` when MeCab is installed, and when it is
not, the report says so (`"ja-mecab": {"skipped": ...}`) instead of silently scoring something else.
CER/WER compare `normalize_text` of both sides (case, punctuation and, for Japanese, spaces
removed); WER is reported for English only (Japanese has no spaces to split words at).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from sts import metrics
from sts.metrics import edit_distance, mecab_available

__all__ = ["bleu_scores", "chrf_score", "edit_distance", "error_rate", "mecab_available", "sentence_chrf"]

BLEU_TOKENIZERS = {"ja": ("char", "ja-mecab"), "en": ("13a",)}
"""sacreBLEU tokenizers per target language, the first being the headline one."""


def bleu_scores(hyps: Sequence[str], refs: Sequence[str], lang: str) -> dict[str, dict]:
    """Corpus BLEU of `hyps` against one reference each, per tokenizer of `lang`, with signatures."""
    scores = {s.name.removeprefix("BLEU(").removesuffix(")"): s for s in metrics.bleu(hyps, refs, lang)}
    out: dict[str, dict] = {}
    for tokenizer in BLEU_TOKENIZERS[lang]:
        if tokenizer not in scores:
            out[tokenizer] = {"skipped": "mecab-python3 + ipadic not installed; `char` is reported instead"}
            continue
        out[tokenizer] = {
            "score": round(scores[tokenizer].score, 2),
            "signature": scores[tokenizer].signature,
        }
    return out


def chrf_score(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """Corpus chrF (sacreBLEU defaults: character 6-grams, beta 2, no word n-grams) with its signature."""
    score = metrics.chrf(hyps, refs, word_order=0)
    return {"score": round(score.score, 2), "signature": score.signature}


def sentence_chrf(hyp: str, ref: str) -> float:
    """chrF of one pair (for per-utterance rows and plots)."""
    return round(metrics.sentence_chrf(hyp, ref, word_order=0), 2)


def normalize_text(text: str, lang: str) -> str:
    """NFKC, lower case, punctuation and symbols dropped, spaces collapsed (removed for ja)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.replace(" ", "") if lang == "ja" else text


def error_rate(hyps: Sequence[str], refs: Sequence[str], lang: str) -> dict:
    """Corpus CER (and WER for English) after `normalize_text`: total edits / total reference length."""
    _check_pairs(hyps, refs)
    hyps = [normalize_text(h, lang) for h in hyps]
    refs = [normalize_text(r, lang) for r in refs]
    char_edits = sum(edit_distance(h, r) for h, r in zip(hyps, refs, strict=True))
    chars = sum(len(r) for r in refs)
    out = {"cer": round(char_edits / max(chars, 1), 4), "ref_chars": chars, "wer": None}
    if lang == "en":
        word_edits = sum(edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs, strict=True))
        words = sum(len(r.split()) for r in refs)
        out |= {"wer": round(word_edits / max(words, 1), 4), "ref_words": words}
    return out


def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
