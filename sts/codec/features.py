"""XCodec2's model inputs, computed without torchaudio.

`Xcodec2FeatureExtractor` needs torchaudio (for a kaldi fbank) and refuses to build without it.
This module reproduces its output with transformers' numpy kaldi-compatible fbank (the one
`SeamlessM4TFeatureExtractor` uses): same framing, window, mel bank, per-clip normalization,
padding with 1.0 and stride-2 stacking. `tests/test_codec.py` checks the agreement where torchaudio
exists.

    values, padding_mask, features, features_mask = xcodec2_inputs(waveforms)
    # values: [B, 1, L] float32   padding_mask: [B, L] int32
    # features: [B, F, 160] float32   features_mask: [B, F] int32     (L = 320 * F)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

HOP = 320
"""Samples per code at 16 kHz: 50 codes per second."""
MEL_STRIDE = 2
"""Consecutive 10 ms mel frames stacked into one 20 ms semantic frame."""
MEL_PADDING_VALUE = 1.0


def padded_length(num_samples: int, hop: int = HOP) -> int:
    """A clip's length once XCodec2 has appended one zero sample and rounded up to a hop multiple."""
    return -(-(num_samples + 1) // hop) * hop


@cache
def _fbank_extractor():
    from transformers import SeamlessM4TFeatureExtractor

    return SeamlessM4TFeatureExtractor(feature_size=80, sampling_rate=16000, padding_value=MEL_PADDING_VALUE)


def clip_mel_features(waveform: np.ndarray, hop: int = HOP) -> np.ndarray:
    """Normalized 80-bin log-mel frames of one clip, as XCodec2's semantic encoder expects. `[2 * L / hop, 80]`."""
    length = padded_length(len(waveform), hop)
    padded = np.zeros(length + hop, dtype=np.float32)  # hop/2 of zeros on each side centres the frames
    padded[hop // 2 : hop // 2 + len(waveform)] = waveform
    frames = _fbank_extractor()._extract_fbank_features(padded)  # scales to 16-bit range itself
    mean = frames.mean(axis=0)
    var = frames.var(axis=0, ddof=1)
    return ((frames - mean) / np.sqrt(var + 1e-7)).astype(np.float32)


def xcodec2_inputs(
    waveforms: Sequence[np.ndarray], hop: int = HOP
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch model inputs for `Xcodec2Model.encode`, right-padded to the longest clip.

    Returns `input_values [B, 1, L]`, `padding_mask [B, L]`, `input_features [B, F, 160]`,
    `input_features_mask [B, F]` with `L = max padded_length` and `F = L / hop`.
    """
    lengths = [padded_length(len(w), hop) for w in waveforms]
    total = max(lengths)
    batch = len(waveforms)
    values = np.zeros((batch, 1, total), dtype=np.float32)
    padding_mask = np.zeros((batch, total), dtype=np.int32)
    mel_frames = total // hop * MEL_STRIDE
    mels = np.full((batch, mel_frames, 80), MEL_PADDING_VALUE, dtype=np.float32)
    mel_mask = np.zeros((batch, mel_frames), dtype=np.int32)
    for i, waveform in enumerate(waveforms):
        values[i, 0, : len(waveform)] = waveform
        padding_mask[i, : len(waveform) + 1] = 1
        clip = clip_mel_features(waveform, hop)
        mels[i, : len(clip)] = clip
        mel_mask[i, : len(clip)] = 1
    features = mels.reshape(batch, mel_frames // MEL_STRIDE, 80 * MEL_STRIDE)
    features_mask = mel_mask.reshape(batch, mel_frames // MEL_STRIDE, MEL_STRIDE).min(axis=-1)
    return values, padding_mask, features, features_mask
