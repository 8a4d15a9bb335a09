"""Long-form input: splitting a ~2-minute synthetic recording at its pauses, and joining the pieces."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from infer.segment import energy_pauses, find_pauses, join_texts, join_waveforms, split_at_pauses
from sts.testing import synthetic_utterance

SR = 16000


def long_recording(seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """~2 minutes: 15 utterances of 5-9 s separated by 0.6-1.2 s pauses (low noise). Returns the
    waveform `[N]` float32 and the true pauses as (start, end) samples."""
    rng = np.random.default_rng(seed)
    pieces, pauses, at = [], [], 0
    for i in range(15):
        speech = synthetic_utterance(float(rng.uniform(5, 9)), float(rng.uniform(110, 220)), seed=seed + i)
        pieces.append(speech)
        at += len(speech)
        gap = int(rng.uniform(0.6, 1.2) * SR)
        pieces.append(0.002 * rng.standard_normal(gap).astype(np.float32))
        pauses.append((at, at + gap))
        at += gap
    return np.concatenate(pieces), pauses[:-1]


@pytest.fixture(scope="module")
def recording():
    return long_recording()


def test_energy_finds_the_pauses(recording):
    wav, truth = recording
    found = energy_pauses(wav)
    # Every true pause is found, to within a 20 ms frame plus the silent half of a 4 Hz syllable
    # (125 ms) where an utterance happens to end or start between syllables; nothing else is found.
    tolerance = int(0.15 * SR)
    for a, b in truth:
        assert any(abs(a - fa) <= tolerance and abs(b - fb) <= tolerance for fa, fb in found), (a, b)
    assert len(found) == len(truth) + 1  # plus the trailing silence


def test_split_cuts_inside_pauses(recording):
    wav, truth = recording
    assert 110 * SR < len(wav) < 140 * SR
    spans = split_at_pauses(wav, max_seconds=20.0, vad="energy")
    assert spans[0][0] == 0 and spans[-1][1] == len(wav)
    assert all(a == b for (_, a), (b, _) in zip(spans, spans[1:], strict=False))  # contiguous
    assert all(0 < b - a <= 20 * SR for a, b in spans)
    assert len(spans) >= 6
    for _, cut in spans[:-1]:
        assert any(a <= cut <= b for a, b in truth), cut


def test_short_input_is_one_span_and_no_pause_means_hard_cuts():
    assert split_at_pauses(np.zeros(5 * SR, np.float32)) == [(0, 5 * SR)]
    tone = synthetic_utterance(50.0, 150.0)
    tone = np.sin(np.arange(len(tone)) / 10).astype(np.float32)  # never silent
    spans = split_at_pauses(tone, max_seconds=20.0, vad="energy")
    assert spans == [(0, 20 * SR), (20 * SR, 40 * SR), (40 * SR, len(tone))]
    with pytest.raises(ValueError):
        find_pauses(tone, vad="webrtc")


@pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None, reason="silero-vad not installed")
def test_silero_splits_real_shaped_input_within_bounds(recording):
    wav, _ = recording
    spans = split_at_pauses(wav, max_seconds=20.0, vad="silero")
    assert spans[0][0] == 0 and spans[-1][1] == len(wav)
    assert all(0 < b - a <= 20 * SR for a, b in spans)


def test_join():
    pieces = [np.ones(100, np.float32), np.ones(50, np.float32), np.ones(10, np.float32)]
    joined = join_waveforms(pieces, gap_seconds=0.3)
    assert joined.shape == (160 + 2 * int(0.3 * SR),) and joined.dtype == np.float32
    assert joined[100 : 100 + int(0.3 * SR)].max() == 0.0
    assert join_waveforms([]).shape == (0,)
    assert join_texts(["Hello.", " ", "How are you?"], "en") == "Hello. How are you?"
    assert join_texts(["こんにちは。", "元気？"], "ja") == "こんにちは。元気？"
