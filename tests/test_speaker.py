"""`sts.speaker`: resemblyzer cosine similarity (needs resemblyzer; its model loads in well under a second)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from sts.testing import synthetic_utterance
from sts.testing.numerics import rounding_tolerance

pytest.importorskip("resemblyzer")
HAS_VAD = importlib.util.find_spec("faster_whisper") is not None


@pytest.mark.skipif(not HAS_VAD, reason="faster-whisper (silero VAD) not installed")
def test_same_clip_is_one_and_silence_is_none():
    from sts.speaker import SpeakerEncoder, speaker_similarity

    encoder = SpeakerEncoder()
    assert encoder._model is None  # loads on first use
    clip = synthetic_utterance(2.5, 150.0, seed=7)
    embedding = encoder.embed(clip)
    # a float32 unit vector of 256: its norm and its cosine with itself sum 256 squares (and the
    # normalisation rounded them once more): two float32 roundings of a 256-term sum of magnitude 1
    unit = 2 * rounding_tolerance(torch.float32, 256)
    assert embedding.shape == (256,) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=unit)
    assert encoder.similarity(clip, clip) == pytest.approx(1.0, abs=unit)
    assert speaker_similarity(clip, clip) == pytest.approx(1.0, abs=unit)
    other = encoder.similarity(clip, synthetic_utterance(2.5, 230.0, seed=8))
    assert -1.0 <= other < 0.9999
    silence = np.zeros(32000, np.float32)
    assert encoder.embed(silence) is None
    assert encoder.similarity(clip, silence) is None and encoder.similarity(None, clip) is None
    assert encoder.similarity(clip, np.zeros(0, np.float32)) is None


@pytest.mark.skipif(not HAS_VAD, reason="faster-whisper (silero VAD) not installed")
def test_too_little_voice_has_no_score():
    from sts.speaker import MIN_VOICED_SECONDS, SpeakerEncoder, voiced_seconds

    encoder = SpeakerEncoder()
    clip = synthetic_utterance(3.0, 150.0, seed=7)
    pause = np.zeros(16000, np.float32)
    assert voiced_seconds(clip) == pytest.approx(3.0, abs=0.1)
    # one second of silence on each side is not voice (silero, unpadded)
    assert voiced_seconds(np.concatenate([pause, clip, pause])) == pytest.approx(3.0, abs=0.1)
    short = clip[: int(0.8 * MIN_VOICED_SECONDS * 16000)]  # 1.2 s of voice
    padded_short = np.concatenate([pause, pause, short, pause, pause])  # 5.2 s long, 1.2 s voiced
    for wav in (short, padded_short):
        assert voiced_seconds(wav) < MIN_VOICED_SECONDS
        assert encoder.embed(wav) is None and encoder.similarity(clip, wav) is None
        assert encoder.similarity(wav, clip) is None
    assert encoder.embed(short, min_voiced_seconds=0).shape == (256,)  # what the benchmark measures
    enough = clip[: int(1.2 * MIN_VOICED_SECONDS * 16000)]
    assert encoder.similarity(clip, enough) > 0.9  # the same voice, scored again past the minimum


@pytest.mark.skipif(not HAS_VAD, reason="faster-whisper (silero VAD) not installed")
def test_other_sample_rates_are_resampled_before_the_gate():
    import soxr

    from sts.speaker import SpeakerEncoder, voiced_seconds

    clip = synthetic_utterance(3.0, 150.0, seed=7)
    at_24k = soxr.resample(clip, 16000, 24000).astype(np.float32)
    assert voiced_seconds(at_24k, 24000) == pytest.approx(voiced_seconds(clip), abs=0.05)
    encoder = SpeakerEncoder()
    assert float(np.dot(encoder.embed(at_24k, 24000), encoder.embed(clip))) > 0.99


def test_without_silero_there_is_no_score_and_one_warning(monkeypatch):
    """No faster-whisper: no energy-gate stand-in (it counts noise as voice), no score, one warning
    naming the package."""
    import sys
    import warnings

    from sts import speaker

    monkeypatch.setitem(sys.modules, "faster_whisper.vad", None)  # its import now fails
    speaker._warn_no_vad.cache_clear()
    clip = synthetic_utterance(2.5, 150.0, seed=7)
    encoder = speaker.SpeakerEncoder()
    with pytest.warns(RuntimeWarning, match="needs faster-whisper's silero VAD") as caught:
        assert speaker.voiced_seconds(clip) is None
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning is not repeated
        assert encoder.embed(clip) is None and encoder.similarity(clip, clip) is None
    assert encoder.embed(clip, min_voiced_seconds=0).shape == (256,)  # no gate asked for: embeds
    speaker._warn_no_vad.cache_clear()
