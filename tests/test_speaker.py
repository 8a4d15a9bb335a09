"""`sts.speaker`: resemblyzer cosine similarity (needs resemblyzer; its model loads in well under a second)."""

from __future__ import annotations

import numpy as np
import pytest

from sts.testing import synthetic_utterance

pytest.importorskip("resemblyzer")


def test_same_clip_is_one_and_silence_is_none():
    from sts.speaker import SpeakerEncoder, speaker_similarity

    encoder = SpeakerEncoder()
    assert encoder._model is None  # loads on first use
    clip = synthetic_utterance(1.5, 150.0, seed=7)
    embedding = encoder.embed(clip)
    assert embedding.shape == (256,) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    assert encoder.similarity(clip, clip) == pytest.approx(1.0, abs=1e-5)
    assert speaker_similarity(clip, clip) == pytest.approx(1.0, abs=1e-5)
    other = encoder.similarity(clip, synthetic_utterance(1.5, 230.0, seed=8))
    assert -1.0 <= other < 0.9999
    silence = np.zeros(32000, np.float32)
    assert encoder.embed(silence) is None  # webrtcvad leaves no voice
    assert encoder.similarity(clip, silence) is None and encoder.similarity(None, clip) is None
    assert encoder.similarity(clip, np.zeros(0, np.float32)) is None
