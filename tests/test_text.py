"""sts.text.text_language: Japanese in every form it is written in, and what is not Japanese."""

from __future__ import annotations

import pytest

from sts.text import has_japanese, text_language


@pytest.mark.parametrize(
    "text",
    [
        "こんにちは",  # hiragana
        "カタカナ",  # katakana
        "ｺﾝﾆﾁﾊ",  # half-width katakana (U+FF7A ...)
        "ｰ",  # half-width prolonged sound mark U+FF70
        "ㇰㇱㇲ",  # Katakana Phonetic Extensions (Ainu small kana)
        "駅",  # CJK Unified Ideograph
        "\U00020b9f",  # CJK Extension B (𠮟)
        "\uf929",  # CJK Compatibility Ideograph
        "々",  # iteration mark alone
        "〆切",
        "㋐",  # circled katakana
        "㌀",  # squared katakana word
        "\U0001b001",  # Kana Supplement (hentaigana)
        "Meeting at 3pm 会議",  # mixed
    ],
)
def test_japanese_forms(text):
    assert has_japanese(text) and text_language(text) == "ja"


@pytest.mark.parametrize(
    "text",
    ["Hello, world.", "ＡＢＣ １２３", "「Hello」。", "", "café naïve", "Привет", "123 !?"],
)
def test_not_japanese(text):
    assert not has_japanese(text) and text_language(text) == "en"


def test_infer_cli_uses_the_one_detector():
    import infer.run
    import sts.text

    assert infer.run.text_language is sts.text.text_language
