"""sts.metrics against values computed by hand: normalizers, CER/WER, BLEU, chrF(++), ASR-BLEU."""

from __future__ import annotations

import math

import pytest

from sts.metrics import (
    CONTRACTIONS,
    RAW_TEXT,
    asr_bleu,
    asr_error,
    bleu,
    bleu_tokenizers,
    cer,
    chrf,
    edit_distance,
    error_rate,
    kanji_numerals_to_digits,
    mecab_available,
    normalize,
    sentence_bleu,
    sentence_chrf,
    wer,
)

pytest.importorskip("sacrebleu")


# ---------------------------------------------------------------- normalization


def test_english_normalizer():
    assert normalize("I don't know.", "en") == normalize("I dont know", "en") == "i do not know"
    assert normalize("fifty dollars", "en") == normalize("$50", "en") == "$50"
    assert normalize("\u201cHi\u201d \u2014 it\u2019s me.", "en") == "hi it is me"  # curly quotes
    assert normalize("Im sure youre right, thats it", "en") == "i am sure you are right that is it"
    assert normalize("Hmm, two   cats!", "en") == "2 cats"  # fillers dropped, numbers as digits
    assert normalize("colour", "en") == "colour"  # no British-spelling map (hub-only normalizer.json)


def test_contractions_leave_ordinary_words_alone():
    for word in ("its", "lets", "well", "were", "hell", "shell", "ill", "id", "wed", "shed", "hows"):
        assert word not in CONTRACTIONS
    assert normalize("its well lets go", "en") == "its well lets go"
    assert CONTRACTIONS["dont"] == "don't" and CONTRACTIONS["wont"] == "won't"


def test_japanese_normalizer():
    assert normalize("「今日は、 晴れ。」", "ja") == "今日は晴れ"
    assert normalize("ＡＢＣ！", "ja") == "abc"  # NFKC folds full-width; lowercase
    assert normalize("三百円", "ja") == normalize("300円", "ja") == "300円"
    assert normalize("二千五百", "ja") == normalize("2500", "ja") == "2500"
    assert normalize("十", "ja") == normalize("10", "ja") == "10"
    assert normalize("３００", "ja") == "300" and normalize("1,000円", "ja") == "1000円"
    assert normalize("(笑)今日は", "ja") == "今日は"  # Whisper's normalizer drops bracketed text


def test_kanji_numerals():
    assert kanji_numerals_to_digits("二〇二四年") == "2024年"  # digit by digit
    assert kanji_numerals_to_digits("〇三") == "03"  # leading zero kept
    assert kanji_numerals_to_digits("3万円") == "30000円"  # digits mixed with place values
    assert kanji_numerals_to_digits("一億二千万") == "120000000"
    assert kanji_numerals_to_digits("万一の時") == "万一の時"  # unreadable run: left alone
    assert kanji_numerals_to_digits("一緒") == "1緒"  # on both sides alike, so it never matters


# ---------------------------------------------------------------- error rates


def test_edit_distance_hand_computed():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1
    assert edit_distance("flaw", "lawn") == 2  # -f, +n


def test_issue_cases_score_zero():
    assert asr_error("I don't know", "I dont know", "en") == 0.0
    assert asr_error("三百円", "300円", "ja") == 0.0
    assert asr_error("fifty dollars", "$50", "en") == 0.0
    assert asr_error("三百円の切符を二枚", "300円の切符を2枚", "ja") == 0.0


def test_sentence_error_rates_by_hand():
    assert cer("今日は晴れです", "今日は雨です") == pytest.approx(2 / 7)  # 晴れ -> 雨: 1 sub + 1 del
    assert cer("今日は晴れです。", "今日は晴れです") == 0.0  # punctuation is not an error
    assert cer("あ", "あいう") == 2.0  # insertions can exceed 1
    assert cer("", "") == 0.0 and cer("。", "あ") == 1.0  # empty reference
    assert wer("the cat sat on the mat", "the cat sat on mat") == pytest.approx(1 / 6)
    assert wer("the cat sat", "a cat sat down") == pytest.approx(2 / 3)  # 1 sub + 1 ins
    assert wer("Good morning, how are you?", "good morning how are you") == 0.0
    assert asr_error("今日は", "今日わ", "ja") == pytest.approx(1 / 3)  # CER for Japanese
    assert asr_error("a b", "a c", "en") == 0.5  # WER for English


def test_corpus_error_rate_is_total_edits_over_total_length():
    # ja: hyp 今日は良い天気 / ref 今日はいい天気です: 1 substitution + 2 deletions of 9 characters.
    ja = error_rate(["今日は良い天気。"], ["今日はいい天気です"], "ja")
    assert ja["cer"] == pytest.approx(3 / 9) and ja["ref_chars"] == 9 and ja["wer"] is None
    # en: one deleted word of six, none of two: (1 + 0) / (6 + 2), not the mean of 1/6 and 0.
    en = error_rate(
        ["the cat sat on mat", "Good morning!"], ["The cat sat on the mat.", "good morning"], "en"
    )
    assert en["wer"] == pytest.approx(1 / 8) and en["ref_words"] == 8
    assert en["cer"] == pytest.approx(4 / (22 + 12))  # "the " deleted: 4 of 22 + 12 characters
    assert "EnglishTextNormalizer" in en["normalizer"]
    with pytest.raises(ValueError, match="1 hypotheses but 0 references"):
        error_rate(["a"], [], "en")


# ---------------------------------------------------------------- BLEU and chrF on raw text


def test_bleu_13a_by_hand():
    # hyp "a b c d e" vs ref "a b c d f": n-gram precisions 4/5, 3/4, 2/3, 1/2; equal lengths, BP 1.
    [score] = bleu(["a b c d e"], ["a b c d f"], "en")
    assert score.name == "BLEU(13a)" and score.protocol == RAW_TEXT
    assert score.score == pytest.approx(100 * 0.2**0.25, abs=1e-6)  # 66.87
    assert "tok:13a" in score.signature and "case:mixed" in score.signature
    # all precisions 1; 13a splits the period: 6 hypothesis vs 7 reference tokens -> BP exp(1 - 7/6).
    [short] = bleu(["the cat sat on the mat"], ["the cat sat on the mat ."], "en")
    assert short.score == pytest.approx(100 * math.exp(1 - 7 / 6), abs=1e-6)


def test_bleu_char_for_japanese_by_hand():
    # char tokens: hyp 今 日 は 晴 れ で す (7), ref 今 日 は 晴 れ だ (6).
    # matches: 1-gram 5/7, 2-gram 4/6, 3-gram 3/5, 4-gram 2/4; BP 1 (hyp longer).
    scores = {s.name: s for s in bleu(["今日は晴れです"], ["今日は晴れだ"], "ja")}
    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 7, 4 / 6, 3 / 5, 2 / 4)) / 4)
    assert scores["BLEU(char)"].score == pytest.approx(expected, abs=1e-6)
    assert "tok:char" in scores["BLEU(char)"].signature
    assert ("BLEU(ja-mecab)" in scores) == mecab_available()
    assert bleu_tokenizers("en") == ["13a"] and bleu_tokenizers("ja")[-1] == "char"


def test_sentence_bleu():
    assert sentence_bleu("a b c d e", "a b c d f", "en") == pytest.approx(100 * 0.2**0.25, abs=1e-6)
    assert sentence_bleu("今日は晴れ", "今日は晴れ", "ja") == pytest.approx(100.0)  # char, effective order


def test_chrf_and_chrf_plus_plus():
    # "abc" vs "abd": 1-grams P=R=2/3, 2-grams 1/2, 3-grams 0; no longer n-grams exist, so sacreBLEU
    # averages the 3 effective orders: P = R = (2/3 + 1/2 + 0) / 3 and F_beta = P when P = R.
    expected = 100 * (2 / 3 + 1 / 2 + 0) / 3
    plain = chrf(["abc"], ["abd"], word_order=0)
    assert plain.name == "chrF" and plain.score == pytest.approx(expected, abs=1e-6)
    assert sentence_chrf("abc", "abd", word_order=0) == pytest.approx(expected, abs=1e-6)
    perfect = chrf(["the cat sat"], ["the cat sat"])
    assert perfect.name == "chrF++" and perfect.score == pytest.approx(100.0) and "nw:2" in perfect.signature
    assert chrf(["xyz"], ["the cat sat"]).score == pytest.approx(0.0)
    assert 0 < sentence_chrf("the cat sat", "the cat sat down") < 100


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"], "en")
    with pytest.raises(ValueError, match="no sentences"):
        chrf([], [])
    with pytest.raises(ValueError, match="no sentences"):
        asr_bleu([], [], "en")


# ---------------------------------------------------------------- ASR-BLEU


def test_asr_bleu_english_by_hand():
    # normalized: "the train station is near" (5 tokens) vs "the train station is near here" (6):
    # every n-gram precision 1, BP exp(1 - 6/5). Raw text: "The" != "the" and "." is a token.
    hyp, ref = "The train station is near.", "the train station is near here"
    bleu_en, chrf_en = asr_bleu([hyp], [ref], "en")
    assert bleu_en.name == "BLEU(13a)" and bleu_en.score == pytest.approx(100 * math.exp(1 - 6 / 5), abs=1e-6)
    assert (
        bleu_en.protocol
        == "ASR-BLEU (Whisper normalizer, lowercase, sacreBLEU tok:13a; SeamlessM4T protocol)"
    )
    assert "case:lc" in bleu_en.signature and "tok:13a" in bleu_en.signature
    assert chrf_en.name == "chrF++" and chrf_en.protocol.startswith("ASR-chrF++ (Whisper normalizer")
    assert bleu([hyp], [ref], "en")[0].score < bleu_en.score  # raw text scores the casing and the period
    [perfect, _] = asr_bleu(["I dont know, fifty dollars."], ["I don't know $50"], "en")
    assert perfect.score == pytest.approx(100.0)


def test_asr_bleu_japanese_by_hand():
    # 今日は良い天気 (7 chars) vs 今日は良い天気です (9, after the 。 goes): all n-grams match, BP exp(1 - 9/7).
    scores = {s.name: s for s in asr_bleu(["今日は良い天気"], ["今日は良い天気です。"], "ja")}
    assert scores["BLEU(char)"].score == pytest.approx(100 * math.exp(1 - 9 / 7), abs=1e-6)
    assert scores["BLEU(char)"].protocol == (
        "ASR-BLEU (Whisper normalizer, lowercase, sacreBLEU tok:char; SeamlessM4T protocol)"
    )
    assert ("BLEU(ja-mecab)" in scores) == mecab_available()
    if mecab_available():
        assert "tok:ja-mecab" in scores["BLEU(ja-mecab)"].signature
        assert "ja default" in scores["BLEU(ja-mecab)"].protocol
    # Whisper's digits against a reference's kanji numerals: the same after normalization.
    digits = {
        s.name: s for s in asr_bleu(["300円の切符を2枚ください"], ["三百円の切符を二枚ください。"], "ja")
    }
    assert digits["BLEU(char)"].score == pytest.approx(100.0) and digits["chrF++"].score == pytest.approx(
        100.0
    )
    assert scores["BLEU(char)"].as_dict()["protocol"] == scores["BLEU(char)"].protocol
