"""Text metrics shared by every evaluation: error rates (CER/WER) and sacreBLEU BLEU / chrF++.

    from sts.metrics import asr_error, bleu, chrf
    asr_error("今日は晴れ。", "今日は雨。", "ja")       # CER after normalization: 0.4
    [s.name for s in bleu(hyps, refs, "ja")]           # ["BLEU(ja-mecab)", "BLEU(char)"] (mecab when installed)
    chrf(hyps, refs).signature                          # "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:..."

Tokenization follows the target language: Japanese BLEU with `ja-mecab` (sacrebleu[ja]: mecab-python3
+ ipadic, when they import) and `char`, English with `13a`. chrF++ is chrF with word bigrams
(`word_order=2`). Every score carries its sacreBLEU signature, so a number can be reproduced.
sacrebleu is imported inside the functions (the `eval` extra).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions each cost 1)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def _error_rate(ref: list, hyp: list) -> float:
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def normalize_ja(text: str) -> str:
    """NFKC, then drop punctuation, symbols and whitespace: 「今日は、晴れ。」 -> 今日は晴れ."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c)[0] not in "PSZC")


def normalize_en(text: str) -> list[str]:
    """NFKC, lowercase, apostrophes removed ("don't" -> "dont"), other punctuation/symbols -> spaces; words."""
    text = unicodedata.normalize("NFKC", text).lower().replace("'", "").replace("\u2019", "")
    text = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)
    return text.split()


def cer(ref: str, hyp: str) -> float:
    """Character error rate after `normalize_ja`: edits / reference characters (1.0 for empty ref, non-empty hyp)."""
    return _error_rate(list(normalize_ja(ref)), list(normalize_ja(hyp)))


def wer(ref: str, hyp: str) -> float:
    """Word error rate after `normalize_en`: edits / reference words (1.0 for empty ref, non-empty hyp)."""
    return _error_rate(normalize_en(ref), normalize_en(hyp))


def asr_error(ref: str, hyp: str, lang: str) -> float:
    """CER for Japanese (no word boundaries), WER otherwise."""
    return cer(ref, hyp) if lang == "ja" else wer(ref, hyp)


@dataclass(frozen=True)
class Score:
    """One corpus-level score and the sacreBLEU signature that reproduces it."""

    name: str
    """E.g. "BLEU(char)", "chrF++"."""
    score: float
    signature: str

    def as_dict(self) -> dict:
        return {"name": self.name, "score": self.score, "signature": self.signature}


def mecab_available() -> bool:
    """Whether sacreBLEU's `ja-mecab` tokenizer can run (mecab-python3 and ipadic import)."""
    try:
        import ipadic  # noqa: F401
        import MeCab  # noqa: F401
    except ImportError:
        return False
    return True


def bleu_tokenizers(lang: str) -> list[str]:
    """sacreBLEU tokenizers for a target language: ja -> ja-mecab (when installed) and char; else 13a."""
    if lang == "ja":
        return (["ja-mecab"] if mecab_available() else []) + ["char"]
    return ["13a"]


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("no sentences to score")


def bleu(hyps: Sequence[str], refs: Sequence[str], lang: str) -> list[Score]:
    """Corpus BLEU of `hyps` against one reference each, once per tokenizer of `bleu_tokenizers(lang)`."""
    from sacrebleu.metrics import BLEU

    _check(hyps, refs)
    scores = []
    for tokenize in bleu_tokenizers(lang):
        metric = BLEU(tokenize=tokenize)
        result = metric.corpus_score(list(hyps), [list(refs)])
        scores.append(Score(f"BLEU({tokenize})", float(result.score), str(metric.get_signature())))
    return scores


def chrf(hyps: Sequence[str], refs: Sequence[str], *, word_order: int = 2) -> Score:
    """Corpus chrF++ (chrF with word n-grams up to `word_order`; 0 gives plain chrF)."""
    from sacrebleu.metrics import CHRF

    _check(hyps, refs)
    metric = CHRF(word_order=word_order)
    result = metric.corpus_score(list(hyps), [list(refs)])
    name = "chrF++" if word_order == 2 else f"chrF(word_order={word_order})"
    return Score(name, float(result.score), str(metric.get_signature()))


def sentence_chrf(hyp: str, ref: str, *, word_order: int = 2) -> float:
    """chrF++ of one sentence (for finding the worst cases; corpus chrF is not their mean)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF(word_order=word_order).sentence_score(hyp, [ref]).score)
