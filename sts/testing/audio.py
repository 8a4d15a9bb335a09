"""Synthetic speech-like audio for tests and smoke runs (no TTS, no download)."""

from __future__ import annotations

import numpy as np


def synthetic_utterance(
    seconds: float, base_hz: float, sample_rate: int = 16000, seed: int = 0
) -> np.ndarray:
    """A voiced-speech stand-in: a gliding harmonic tone with syllable-like amplitude bursts. `[N]` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = base_hz * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, np.pi)), 0, None)
    return (0.3 * voiced * syllables + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
