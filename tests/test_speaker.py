"""`sts.speaker`: resemblyzer cosine similarity (needs resemblyzer; its model loads in well under a second)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sts.testing import synthetic_utterance
from sts.testing.numerics import rounding_tolerance

pytest.importorskip("resemblyzer")


def test_same_clip_is_one_and_silence_is_none():
    from sts.speaker import SpeakerEncoder, speaker_similarity

    encoder = SpeakerEncoder()
    assert encoder._model is None  # loads on first use
    clip = synthetic_utterance(1.5, 150.0, seed=7)
    embedding = encoder.embed(clip)
    # a float32 unit vector of 256: its norm and its cosine with itself sum 256 squares (and the
    # normalisation rounded them once more): two float32 roundings of a 256-term sum of magnitude 1
    unit = 2 * rounding_tolerance(torch.float32, 256)
    assert embedding.shape == (256,) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=unit)
    assert encoder.similarity(clip, clip) == pytest.approx(1.0, abs=unit)
    assert speaker_similarity(clip, clip) == pytest.approx(1.0, abs=unit)
    other = encoder.similarity(clip, synthetic_utterance(1.5, 230.0, seed=8))
    assert -1.0 <= other < 0.9999
    silence = np.zeros(32000, np.float32)
    assert encoder.embed(silence) is None  # webrtcvad leaves no voice
    assert encoder.similarity(clip, silence) is None and encoder.similarity(None, clip) is None
    assert encoder.similarity(clip, np.zeros(0, np.float32)) is None
