"""`infer.metrics` against values computed by hand."""

from __future__ import annotations

import math

import pytest

from infer.metrics import (
    bleu_scores,
    chrf_score,
    edit_distance,
    error_rate,
    mecab_available,
    normalize_text,
    sentence_chrf,
)

pytest.importorskip("sacrebleu")


def test_edit_distance_and_normalization():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert normalize_text("Hello, World!  Bye.", "en") == "hello world bye"
    assert normalize_text("今日は、 いい天気。", "ja") == "今日はいい天気"
    assert normalize_text("ＡＢＣ１", "en") == "abc1"  # NFKC folds full-width forms


def test_cer_and_wer_by_hand():
    # ja: "今日は良い天気" vs "今日はいい天気です": 良->い, 追加 い, plus です: 2 + 2 = 4 edits... by hand:
    # hyp 今 日 は 良 い 天 気 / ref 今 日 は い い 天 気 で す: 1 substitution + 2 deletions = 3 of 9 chars.
    ja = error_rate(["今日は良い天気。"], ["今日はいい天気です"], "ja")
    assert ja["cer"] == round(3 / 9, 4) and ja["wer"] is None and ja["ref_chars"] == 9
    # en: one deleted word of six; corpus level sums edits over utterances: (1 + 0) / (6 + 2).
    en = error_rate(
        ["the cat sat on mat", "Good morning!"], ["The cat sat on the mat.", "good morning"], "en"
    )
    assert en["wer"] == round(1 / 8, 4)
    assert en["cer"] == round(4 / (22 + 12), 4)  # "the " deleted: 4 characters of 22 + 12
    with pytest.raises(ValueError):
        error_rate(["a"], [], "en")


def test_bleu_13a_by_hand():
    # 1- to 4-gram precisions 4/5, 3/4, 2/3, 1/2, same length (BP 1): geometric mean (0.2) ** 0.25.
    scores = bleu_scores(["a b c d e"], ["a b c d f"], "en")
    assert list(scores) == ["13a"]
    assert scores["13a"]["score"] == pytest.approx(100 * 0.2**0.25, abs=0.01)
    assert "tok:13a" in scores["13a"]["signature"]
    # all precisions 1; 13a splits the period: 6 hypothesis vs 7 reference tokens -> BP exp(1 - 7/6).
    short = bleu_scores(["the cat sat on the mat"], ["the cat sat on the mat ."], "en")["13a"]["score"]
    assert short == pytest.approx(100 * math.exp(1 - 7 / 6), abs=0.01)


def test_bleu_char_for_japanese_by_hand():
    # char tokens: 7 hypothesis characters, all n-grams match, 9 reference characters -> BP exp(1 - 9/7).
    scores = bleu_scores(["今日は良い天気"], ["今日は良い天気です"], "ja")
    assert scores["char"]["score"] == pytest.approx(100 * math.exp(1 - 9 / 7), abs=0.01)
    assert "tok:char" in scores["char"]["signature"]
    assert "ja-mecab" in scores


@pytest.mark.skipif(not mecab_available(), reason="mecab-python3 + ipadic not installed")
def test_bleu_ja_mecab_when_installed():
    scores = bleu_scores(["今日は良い天気です"], ["今日は良い天気です"], "ja")
    assert scores["ja-mecab"]["score"] == 100.0 and "tok:ja-mecab" in scores["ja-mecab"]["signature"]


def test_bleu_ja_mecab_missing_says_so(monkeypatch):
    import sts.metrics

    monkeypatch.setattr(sts.metrics, "mecab_available", lambda: False)
    scores = bleu_scores(["今日はいい天気"], ["今日はいい天気"], "ja")
    assert scores["char"]["score"] == 100.0
    assert "score" not in scores["ja-mecab"] and "char" in scores["ja-mecab"]["skipped"]


def test_chrf_by_hand():
    # "abc" vs "abd": 1-grams P=R=2/3, 2-grams 1/2, 3-grams 0; no longer n-grams exist, so sacreBLEU
    # averages the 3 effective orders: P = R = (2/3 + 1/2 + 0) / 3 and F_beta = P when P = R.
    expected = 100 * (2 / 3 + 1 / 2 + 0) / 3
    chrf = chrf_score(["abc"], ["abd"])
    assert chrf["score"] == pytest.approx(expected, abs=0.01) and chrf["signature"].startswith("nrefs:1")
    assert sentence_chrf("abc", "abd") == pytest.approx(expected, abs=0.01)
    assert chrf_score(["same text"], ["same text"])["score"] == 100.0
