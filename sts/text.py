"""Which language a text is written in, by its script: the one detector every stage uses.

    from sts.text import text_language
    text_language("ｺﾝﾆﾁﾊ")          # "ja" (half-width katakana)
    text_language("ＡＢＣ 123")      # "en" (full-width Latin is not Japanese)

The package translates between Japanese and English only, so the question is "does the text hold
any Japanese letter?". Japanese letters here are the Unicode blocks Japanese is written in
(Unicode 15 block names, https://www.unicode.org/charts/): Hiragana, Katakana, Katakana Phonetic
Extensions, Halfwidth Katakana (U+FF66-FF9F, with the halfwidth 。「」、・ U+FF61-FF65), Kana
Supplement / Extended-A / Small Kana Extension, Kanbun, circled and squared katakana (㋐, ㌀), CJK
Unified Ideographs (with extensions A-H), CJK Compatibility Ideographs (and their supplement), and
the ideographic iteration marks and numerals 々 〆 〇 〻 (ゝ ゞ ヽ ヾ are inside the kana blocks).
Not counted: CJK punctuation alone (「Hello」 is English), full-width Latin letters and digits.
Chinese text also reads as "ja": there is no third language to tell it from.
"""

from __future__ import annotations

import re

JAPANESE_RANGES: tuple[tuple[int, int], ...] = (
    (0x3005, 0x3007),  # 々 〆 〇 (iteration mark, closing mark, ideographic zero)
    (0x303B, 0x303B),  # 〻 (vertical iteration mark)
    (0x3040, 0x309F),  # Hiragana (with ゝ ゞ)
    (0x30A0, 0x30FF),  # Katakana (with ヽ ヾ and the prolonged sound mark ー)
    (0x3190, 0x319F),  # Kanbun
    (0x31F0, 0x31FF),  # Katakana Phonetic Extensions
    (0x32D0, 0x32FE),  # circled katakana (Enclosed CJK Letters and Months)
    (0x3300, 0x3357),  # squared katakana words (CJK Compatibility)
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0xFF61, 0xFF9F),  # Halfwidth Katakana and halfwidth CJK punctuation
    (0x1AFF0, 0x1B16F),  # Kana Extended-B, Kana Supplement, Kana Extended-A, Small Kana Extension
    (0x20000, 0x323AF),  # CJK Unified Ideographs Extensions B-H and the Compatibility Supplement
)
"""Inclusive code point ranges counted as Japanese letters."""

_JAPANESE = re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in JAPANESE_RANGES) + "]")


def has_japanese(text: str) -> bool:
    """Whether `text` holds at least one character of `JAPANESE_RANGES`."""
    return _JAPANESE.search(text) is not None


def text_language(text: str) -> str:
    """ "ja" when `text` holds a Japanese letter (kana in any width, kanji, iteration marks), else "en"."""
    return "ja" if has_japanese(text) else "en"
