"""sts.metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from sts.metrics import asr_error, bleu, bleu_tokenizers, chrf, mecab_available, sentence_chrf

pytest.importorskip("sacrebleu")


def test_error_rates_by_hand():
    # 今日は晴れ (5 chars) -> 今日は雨: one substitution + one deletion.
    assert asr_error("今日は、晴れ。", "今日は雨。", "ja") == pytest.approx(2 / 5)
    # "the cats on the mat" (5 words) -> "cats on rug": both "the" deleted, "mat"->"rug": 3 edits.
    assert asr_error("The cat's on the mat.", "cats on rug", "en") == pytest.approx(3 / 5)


def test_bleu_13a_by_hand():
    # hyp "a b c d e" vs ref "a b c d f": n-gram precisions 4/5, 3/4, 2/3, 1/2; equal lengths, BP 1.
    [score] = bleu(["a b c d e"], ["a b c d f"], "en")
    expected = 100 * math.exp(sum(math.log(p) for p in (4 / 5, 3 / 4, 2 / 3, 1 / 2)) / 4)
    assert score.name == "BLEU(13a)"
    assert score.score == pytest.approx(expected, abs=1e-6)  # 66.87
    assert "tok:13a" in score.signature and "nrefs:1" in score.signature


def test_bleu_char_for_japanese_by_hand():
    # char tokens: hyp 今 日 は 晴 れ で す (7), ref 今 日 は 晴 れ だ (6).
    # matches: 1-gram 5/7, 2-gram 4/6, 3-gram 3/5, 4-gram 2/4; BP 1 (hyp longer).
    scores = {s.name: s for s in bleu(["今日は晴れです"], ["今日は晴れだ"], "ja")}
    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 7, 4 / 6, 3 / 5, 2 / 4)) / 4)
    assert scores["BLEU(char)"].score == pytest.approx(expected, abs=1e-6)
    assert "tok:char" in scores["BLEU(char)"].signature
    assert ("BLEU(ja-mecab)" in scores) == mecab_available()


def test_tokenizers_follow_the_target_language():
    assert bleu_tokenizers("en") == ["13a"]
    assert bleu_tokenizers("ja")[-1] == "char"


def test_chrf_plus_plus():
    perfect = chrf(["the cat sat"], ["the cat sat"])
    assert perfect.name == "chrF++" and perfect.score == pytest.approx(100.0)
    assert "nw:2" in perfect.signature
    assert chrf(["xyz"], ["the cat sat"]).score == pytest.approx(0.0)
    assert 0 < sentence_chrf("the cat sat", "the cat sat down") < 100


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"], "en")
    with pytest.raises(ValueError, match="no sentences"):
        chrf([], [])
