"""The one metrics module: text normalization, CER/WER, sacreBLEU BLEU / chrF / chrF++ and ASR-BLEU.

    from sts.metrics import asr_bleu, asr_error, bleu, chrf, error_rate, normalize
    normalize("I dont know, fifty dollars.", "en")     # "i do not know $50"
    normalize("三百円です。", "ja")                      # "300円です"
    asr_error("I don't know", "I dont know", "en")     # WER after normalization: 0.0
    error_rate(hyps, refs, "ja")                       # corpus: total edits / total reference length
    [s.name for s in bleu(hyps, refs, "ja")]           # raw text: ["BLEU(ja-mecab)", "BLEU(char)"]
    [s.protocol for s in asr_bleu(hyps, refs, "en")]   # normalized, the SeamlessM4T ASR-BLEU protocol

Normalization (`normalize`, one normalizer per language, always lowercase), applied to both sides:
- English: NFKC, curly apostrophes made straight, apostrophe-less contractions restored ("dont" ->
  "don't", see `CONTRACTIONS`), then Whisper's `EnglishTextNormalizer` (transformers' copy of
  openai-whisper's): contractions expanded ("don't" -> "do not"), spelled numbers and currency
  written as digits ("fifty dollars" -> "$50"), punctuation and fillers (um, hmm) removed. Its
  British->American spelling map ships only on the hub (`normalizer.json`), so it gets `{}` here:
  British spellings are not mapped ("colour" != "color").
- Japanese: NFKC, Whisper's `BasicTextNormalizer` (lowercase, bracketed text dropped, punctuation
  and symbols removed), spaces removed, then runs of kanji numerals read as Arabic digits
  (三百 -> 300, 二千五百 -> 2500, 二〇二四 -> 2024; `kanjize`), on both sides, so Whisper's "300円"
  matches a reference's 三百円 (and 一緒 becomes 1緒 on both sides, which never matters).
- Other languages: Whisper's `BasicTextNormalizer`.

ASR-BLEU (`asr_bleu`) follows SeamlessM4T's scorer (seamless_communication,
`cli/eval_utils/compute_metrics.py`): both sides through the normalizer above, lowercased, sacreBLEU
`char` for Japanese (as for cmn/tha/lao/mya) and `13a` otherwise; `ja-mecab` (sacreBLEU's own
Japanese default) is added beside `char` when MeCab imports; chrF++ on the same normalized text.
It differs from SeamlessM4T's only in the British-spelling map, the restored contractions (English)
and the kanji numerals (Japanese). Text-output tasks (asr, s2tt, t2tt) are scored on raw text
(`bleu`, `chrf`), as SeamlessM4T does. Every corpus score carries its sacreBLEU signature and a
`protocol` naming what was scored. CER/WER compare normalized text: CER for Japanese (no word
boundaries; SeamlessM4T's "char" languages), WER otherwise. sacrebleu is the `eval` extra.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# ---------------------------------------------------------------- normalization

CHAR_LANGUAGES = frozenset({"ja", "zh", "th", "lo", "my"})
"""Languages scored by characters (BLEU `char`, CER): SeamlessM4T's cmn/jpn/tha/lao/mya."""

_NT = "do does did ca could should would is are was were have has had wo must need might"
_APOSTROPHE = (
    "i'm i've you're you've you'll you'd they're they've they'll they'd we've he's she's that's what's "
    "where's who's there's here's it'll that'll would've could've should've might've must've y'all"
)
CONTRACTIONS: dict[str, str] = {f"{w}nt": f"{w}n't" for w in _NT.split()} | {
    w.replace("'", ""): w for w in _APOSTROPHE.split()
}
"""Apostrophe-less spellings restored before Whisper's English normalizer expands them.

Only spellings that are not ordinary English words: "its", "lets", "well", "were", "hell", "shell",
"ill", "id", "wed", "shed" and "hows" are left alone. "cant" and "wont" are words too, but rare
enough in speech that a transcript's "wont" means "won't"."""

_CONTRACTION = re.compile(r"\b(" + "|".join(sorted(CONTRACTIONS, key=len, reverse=True)) + r")\b")
_KANJI_NUMERAL_RUN = re.compile(r"[0-9〇零一二三四五六七八九十百千万億兆]+")
_KANJI_DIGITS = str.maketrans("〇零一二三四五六七八九", "00123456789")

NORMALIZERS = {
    "en": "NFKC, apostrophe-less contractions restored, Whisper EnglishTextNormalizer (no British-spelling map)",
    "ja": "NFKC, Whisper BasicTextNormalizer, lowercase, spaces removed, kanji numerals as digits",
}
"""What `normalize` does per language, as recorded in reports; other languages: Whisper BasicTextNormalizer."""


@functools.cache
def _whisper_normalizers():
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer({}), BasicTextNormalizer()


def restore_contractions(text: str) -> str:
    """Lowercase text with `CONTRACTIONS` given back their apostrophe: "i dont know" -> "i don't know"."""
    return _CONTRACTION.sub(lambda m: CONTRACTIONS[m.group(1)], text)


def kanji_numerals_to_digits(text: str) -> str:
    """Runs of kanji numerals (mixed with digits) as Arabic digits: 三百円 -> 300円, 3万 -> 30000.

    A run of digit characters only is read digit by digit (〇三 -> 03, 二〇二四 -> 2024); one with
    place values (十百千万億兆) through `kanjize.kanji2number`. A run it cannot read (万一: a place
    value with no number before it) is left as it is.
    """
    from kanjize import kanji2number

    def convert(match: re.Match) -> str:
        run = match.group(0)
        if run.isascii():
            return run
        digits = run.translate(_KANJI_DIGITS)
        if digits.isascii():
            return digits
        try:
            return str(kanji2number(run))
        except ValueError:
            return run

    return _KANJI_NUMERAL_RUN.sub(convert, text)


def normalize_en(text: str) -> str:
    """English as scored: "I dont know, fifty dollars." -> "i do not know $50" (see the module doc)."""
    english, _ = _whisper_normalizers()
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u02bc", "'")
    return english(restore_contractions(text)).strip()


def normalize_ja(text: str) -> str:
    """Japanese as scored: 「三百円です。」 -> 300円です (see the module doc)."""
    _, basic = _whisper_normalizers()
    text = basic(unicodedata.normalize("NFKC", text))
    return kanji_numerals_to_digits("".join(text.split()))


def normalize(text: str, lang: str) -> str:
    """The one normalizer of `lang` (ISO 639-1): `normalize_en`, `normalize_ja`, else Whisper's basic one."""
    if lang == "en":
        return normalize_en(text)
    if lang == "ja":
        return normalize_ja(text)
    return " ".join(_whisper_normalizers()[1](unicodedata.normalize("NFKC", text)).split())


# ---------------------------------------------------------------- error rates


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance between two sequences (substitution, insertion, deletion each cost 1)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def _rate(edits: int, length: int) -> float:
    """edits / length; with an empty reference 0.0 when nothing was said, else 1.0."""
    if length == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / length


def cer(ref: str, hyp: str, lang: str = "ja") -> float:
    """Character error rate of one pair after `normalize(., lang)`: edits / reference characters.

    Can exceed 1 (insertions); an empty reference gives 0.0 for an empty hypothesis, else 1.0.
    """
    ref, hyp = normalize(ref, lang), normalize(hyp, lang)
    return _rate(edit_distance(ref, hyp), len(ref))


def wer(ref: str, hyp: str, lang: str = "en") -> float:
    """Word error rate of one pair after `normalize(., lang)`: edits / reference words (as `cer`)."""
    ref_words, hyp_words = normalize(ref, lang).split(), normalize(hyp, lang).split()
    return _rate(edit_distance(ref_words, hyp_words), len(ref_words))


def asr_error(ref: str, hyp: str, lang: str) -> float:
    """The ASR error of one pair: CER for `CHAR_LANGUAGES` (Japanese), WER otherwise."""
    return cer(ref, hyp, lang) if lang in CHAR_LANGUAGES else wer(ref, hyp, lang)


def error_rate(hyps: Sequence[str], refs: Sequence[str], lang: str) -> dict:
    """Corpus CER (and WER, except for `CHAR_LANGUAGES`): total edits / total reference length.

    Returns {"cer", "ref_chars", "wer", "ref_words", "normalizer"}; "wer" and "ref_words" are None
    for Japanese. Raises ValueError when the lists differ in length or are empty.
    """
    _check(hyps, refs)
    hyps = [normalize(h, lang) for h in hyps]
    refs = [normalize(r, lang) for r in refs]
    chars = sum(len(r) for r in refs)
    out = {
        "cer": _rate(sum(edit_distance(r, h) for h, r in zip(hyps, refs, strict=True)), chars),
        "ref_chars": chars,
        "wer": None,
        "ref_words": None,
        "normalizer": NORMALIZERS.get(lang, "Whisper BasicTextNormalizer"),
    }
    if lang not in CHAR_LANGUAGES:
        words = sum(len(r.split()) for r in refs)
        edits = sum(edit_distance(r.split(), h.split()) for h, r in zip(hyps, refs, strict=True))
        out |= {"wer": _rate(edits, words), "ref_words": words}
    return out


# ---------------------------------------------------------------- sacreBLEU scores

RAW_TEXT = "raw text"
"""The `protocol` of scores on unnormalized text (text-output tasks, MT)."""


@dataclass(frozen=True)
class Score:
    """One corpus-level score, the sacreBLEU signature that reproduces it and what was scored."""

    name: str
    """E.g. "BLEU(char)", "chrF++"."""
    score: float
    """0-100."""
    signature: str
    """sacreBLEU's, e.g. "nrefs:1|case:lc|eff:no|tok:char|smooth:exp|version:2.6.0"."""
    protocol: str = RAW_TEXT
    """"raw text", or the ASR-BLEU protocol and tokenizer (see `asr_bleu`)."""

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "score": self.score,
            "signature": self.signature,
            "protocol": self.protocol,
        }


def mecab_available() -> bool:
    """Whether sacreBLEU's `ja-mecab` tokenizer can run (mecab-python3 and ipadic import)."""
    try:
        import ipadic  # noqa: F401
        import MeCab  # noqa: F401
    except ImportError:
        return False
    return True


def headline_tokenizer(lang: str) -> str:
    """The SeamlessM4T protocol's sacreBLEU tokenizer: `char` for `CHAR_LANGUAGES`, else `13a`."""
    return "char" if lang in CHAR_LANGUAGES else "13a"


def bleu_tokenizers(lang: str) -> list[str]:
    """sacreBLEU tokenizers for a target language: ja -> ja-mecab (when installed) and char; else 13a."""
    if lang == "ja":
        return (["ja-mecab"] if mecab_available() else []) + ["char"]
    return [headline_tokenizer(lang)]


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("no sentences to score")


def _chrf_name(word_order: int) -> str:
    return {2: "chrF++", 0: "chrF"}.get(word_order, f"chrF(word_order={word_order})")


def _bleu(hyps, refs, lang: str, *, lowercase: bool, protocol) -> list[Score]:
    from sacrebleu.metrics import BLEU

    _check(hyps, refs)
    scores = []
    for tokenize in bleu_tokenizers(lang):
        metric = BLEU(tokenize=tokenize, lowercase=lowercase)
        result = metric.corpus_score(list(hyps), [list(refs)])
        signature = str(metric.get_signature())
        scores.append(Score(f"BLEU({tokenize})", float(result.score), signature, protocol(tokenize)))
    return scores


def bleu(hyps: Sequence[str], refs: Sequence[str], lang: str) -> list[Score]:
    """Corpus BLEU on raw text, one reference each, once per tokenizer of `bleu_tokenizers(lang)`."""
    return _bleu(hyps, refs, lang, lowercase=False, protocol=lambda _: RAW_TEXT)


def chrf(hyps: Sequence[str], refs: Sequence[str], *, word_order: int = 2) -> Score:
    """Corpus chrF++ on raw text (character 6-grams plus word n-grams up to `word_order`; 0: chrF)."""
    from sacrebleu.metrics import CHRF

    _check(hyps, refs)
    metric = CHRF(word_order=word_order)
    result = metric.corpus_score(list(hyps), [list(refs)])
    return Score(_chrf_name(word_order), float(result.score), str(metric.get_signature()))


def sentence_chrf(hyp: str, ref: str, *, word_order: int = 2) -> float:
    """chrF++ (`word_order=0`: chrF) of one pair, for finding the worst cases (corpus chrF is not their mean)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF(word_order=word_order).sentence_score(hyp, [ref]).score)


def sentence_bleu(hyp: str, ref: str, lang: str) -> float:
    """BLEU of one pair with `headline_tokenizer(lang)` and effective n-gram order (short sentences)."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize=headline_tokenizer(lang), effective_order=True)
    return float(metric.sentence_score(hyp, [ref]).score)


def asr_bleu_protocol(tokenizer: str) -> str:
    """The name an ASR-BLEU score carries: what was normalized, the tokenizer, whose protocol it is."""
    whose = "SeamlessM4T protocol" if tokenizer in ("char", "13a") else "sacreBLEU's ja default, beside it"
    return f"ASR-BLEU (Whisper normalizer, lowercase, sacreBLEU tok:{tokenizer}; {whose})"


ASR_CHRF_PROTOCOL = "ASR-chrF++ (Whisper normalizer, lowercase)"


def asr_bleu(hyps: Sequence[str], refs: Sequence[str], lang: str) -> list[Score]:
    """ASR-BLEU and ASR-chrF++ of transcripts of speech output against reference text, in `lang`.

    Both sides go through `normalize(., lang)`; BLEU (lowercase) per `bleu_tokenizers(lang)`, then
    chrF++, each with its signature and `protocol`. Source of the protocol: SeamlessM4T's
    `compute_corpus_metric_score` (see the module doc). ValueError on mismatched or empty lists.
    """
    from sacrebleu.metrics import CHRF

    _check(hyps, refs)
    hyps = [normalize(h, lang) for h in hyps]
    refs = [normalize(r, lang) for r in refs]
    scores = _bleu(hyps, refs, lang, lowercase=True, protocol=asr_bleu_protocol)
    metric = CHRF(word_order=2, lowercase=True)
    result = metric.corpus_score(hyps, [refs])
    return scores + [Score("chrF++", float(result.score), str(metric.get_signature()), ASR_CHRF_PROTOCOL)]
