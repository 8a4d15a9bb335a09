"""XCodec2Codec on a tiny random checkpoint: exact code counts, batching, decoding, features."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sts.codec import Codec, XCodec2Codec, load_codec
from sts.codec.features import clip_mel_features, kaldi_fbank, padded_length, xcodec2_inputs
from sts.testing.codec import save_tiny_xcodec2, tiny_xcodec2_config
from sts.testing.numerics import assert_close_rounding

LAST_FRAMES = 16
"""Frames at a clip's end that padding in a batch may change (measured reach: 14, see xcodec2.py)."""


def speechlike(num_samples: int, seed: int = 0) -> np.ndarray:
    """A buzzing tone switched on and off, plus noise: enough structure for varied codes."""
    rng = np.random.default_rng([seed, num_samples])
    t = np.arange(num_samples) / 16000
    gate = np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6)) > 0
    wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 250) * t) + 0.05 * rng.standard_normal(num_samples)
    return (wave * gate).astype(np.float32)


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    return save_tiny_xcodec2(tmp_path_factory.mktemp("codec") / "tiny-xcodec2")


@pytest.fixture(scope="module")
def codec(codec_dir) -> XCodec2Codec:
    return XCodec2Codec(codec_dir, batch_size=4)


def test_interface(codec, codec_dir):
    assert isinstance(codec, Codec)
    assert (codec.sample_rate, codec.frame_rate, codec.codebook_size) == (16000, 50.0, 4**5)
    assert codec.name == str(codec_dir)
    assert isinstance(load_codec(codec_dir, batch_size=2), XCodec2Codec)


def test_importing_sts_codec_is_cheap():
    code = "import sys, sts.codec; assert not {'torch', 'transformers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@given(st.integers(1, 10**7))
def test_num_codes_is_one_per_hop_of_the_padded_clip(num_samples):
    assert num_samples // 320 + 1 == padded_length(num_samples) // 320


def test_code_counts_are_exact(codec):
    lengths = [1, 319, 320, 321, 639, 640, 16000, 16001, *np.random.default_rng(0).integers(1, 48000, 4)]
    codes = codec.encode([speechlike(int(n)) for n in lengths])
    for n, c in zip(lengths, codes, strict=True):
        assert c.dtype == np.int32 and c.shape == (n // 320 + 1,) == (codec.num_codes(n),)
        assert c.min() >= 0 and c.max() < codec.codebook_size
    assert len(np.unique(np.concatenate(codes))) > 10  # the tiny codec is not degenerate
    for n in (319, 320, 16001):  # the model itself gives one frame per hop of the padded clip
        frames = codec.model.encode(**xcodec2_inputs([speechlike(n)])).audio_codes.shape[-1]
        assert frames == codec.num_codes(n)


def test_equal_code_counts_batch_exactly_and_order_is_kept(codec_dir):
    exact = XCodec2Codec(codec_dir, batch_size=4, max_pad_ratio=0.0)
    lengths = [8000, 16000, 400, 16100, 8100, 16319, 500]  # three groups of equal code count
    waves = [speechlike(n) for n in lengths]
    batched = exact.encode(waves)
    assert [len(c) for c in batched] == [26, 51, 2, 51, 26, 51, 2]
    for wave, codes in zip(waves, batched, strict=True):
        np.testing.assert_array_equal(codes, exact.encode([wave])[0])


def test_default_batching_is_exact_and_fuller_batches_are_opt_in(codec_dir):
    """A 1.9 s and a 2.0 s clip (96 and 101 codes): by default each gets its one-by-one codes; with
    `max_pad_ratio=0.1` they share a forward pass and the shorter one may change in its last 14 frames."""
    waves = [speechlike(30400, seed=2), speechlike(32000, seed=2)]
    default = XCodec2Codec(codec_dir, batch_size=4)
    assert default.max_pad_ratio == 0.0
    alone = [default.encode([w])[0] for w in waves]
    assert [len(c) for c in alone] == [96, 101]
    passes = []
    default.model.quantizer.register_forward_hook(lambda module, args, out: passes.append(args[0].shape[0]))
    for got, expected in zip(default.encode(waves), alone, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert passes == [1, 1]  # never in one batch

    fuller = XCodec2Codec(codec_dir, batch_size=4, max_pad_ratio=0.1)
    fuller.model.quantizer.register_forward_hook(lambda module, args, out: passes.append(args[0].shape[0]))
    shorter, longer = fuller.encode(waves)
    assert passes[2:] == [2]  # one forward pass for both
    np.testing.assert_array_equal(longer, alone[1])  # the longest clip is not padded
    differ = np.flatnonzero(shorter != alone[0])
    assert len(shorter) == 96 and (differ >= 96 - 14).all(), differ  # only in the documented reach


def test_padded_batches_change_only_the_last_frames(codec_dir):
    mixed = XCodec2Codec(codec_dir, batch_size=4, max_pad_ratio=1.0)
    latents = []  # pre-quantization latents of each forward pass, [B, T, D]
    mixed.model.quantizer.register_forward_hook(lambda module, args, out: latents.append(args[0]))
    waves = [speechlike(int(n), seed=1) for n in np.random.default_rng(1).integers(16000, 48000, 8)]
    order = sorted(range(8), key=lambda i: -len(waves[i]))  # how `encode` batches them
    batched = mixed.encode(waves)
    batched_latents = {i: latents[k // 4][k % 4] for k, i in enumerate(order)}
    same = tail_free_same = tail_free = 0
    for i, wave in enumerate(waves):
        single = mixed.encode([wave])[0]
        num = len(single)
        assert len(batched[i]) == num
        same += int((batched[i] == single).sum())
        tail_free_same += int((batched[i] == single)[:-LAST_FRAMES].sum())
        tail_free += num - LAST_FRAMES
        # The latents move only near the end; elsewhere codes can flip only at FSQ rounding boundaries.
        diff = (batched_latents[i][:num] - latents[-1][0]).abs().amax(dim=-1)
        assert diff[:-LAST_FRAMES].max() <= 1e-4 * latents[-1].abs().max()
    assert same / sum(len(w) // 320 + 1 for w in waves) >= 0.97  # measured: 0.988
    assert tail_free_same / tail_free >= 0.995  # measured: 0.9998


def test_decode_lengths_and_exact_batches(codec):
    codes = codec.encode([speechlike(n) for n in (16000, 16100, 8000, 1)])
    waves = codec.decode(codes)
    assert [len(w) for w in waves] == [len(c) * 320 for c in codes] == [51 * 320, 51 * 320, 26 * 320, 320]
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in waves)
    # float32 along the decoder: the quantizer projection, each layer's attention/MLP widths, attention
    # over the frames, the inverse STFT's overlap-add (taken as 4 hops); magnitude: max|alone|
    cfg = tiny_xcodec2_config()
    hop = int(np.prod(cfg.downsampling_ratios))
    n = (
        cfg.quantization_dim
        + cfg.num_hidden_layers * (cfg.hidden_size + cfg.intermediate_size)
        + 51
        + 4 * hop
    )
    for c, w in zip(codes, waves, strict=True):  # two share a batch; the others are decoded alone
        alone = codec.decode([c])[0]
        assert_close_rounding(w, alone, reduction_size=n)
    assert codec.encode([]) == [] and codec.decode([]) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(0, np.float32), "non-empty 1-D float"),
        (np.zeros((2, 100), np.float32), "non-empty 1-D float"),
        (np.arange(100), "non-empty 1-D float"),
        (np.array([0.0, np.nan], np.float32), "NaN or infinite"),
        (np.array([0.0, np.inf]), "NaN or infinite"),
    ],
)
def test_bad_waveforms_are_refused(codec, bad, message):
    with pytest.raises(ValueError, match=rf"waveform #1: .*{message}"):
        codec.encode([speechlike(400), bad])


@pytest.mark.parametrize(
    "bad", [np.array([0, 1024]), np.array([-1, 3]), np.zeros(0, np.int32), np.ones(3), np.zeros((2, 2), int)]
)
def test_bad_codes_are_refused(codec, bad):
    with pytest.raises(ValueError, match="codes #0"):
        codec.decode([bad])


def test_a_lone_array_is_refused(codec):
    with pytest.raises(TypeError, match="list of 1-D arrays"):
        codec.encode(speechlike(400))
    with pytest.raises(TypeError, match="list of 1-D arrays"):
        codec.decode(np.zeros(5, np.int32))


def test_features_layout_mask_and_normalization():
    inputs = xcodec2_inputs([speechlike(16000), speechlike(5000)])
    total = padded_length(16000)
    assert inputs["input_values"].shape == (2, 1, total) and inputs["padding_mask"].shape == (2, total)
    assert inputs["input_features"].shape == (2, total // 320, 160)
    assert inputs["padding_mask"].sum(dim=1).tolist() == [16001, 5001]  # the clip + one appended zero
    np.testing.assert_array_equal(inputs["input_values"][1, 0, :5000].numpy(), speechlike(5000))
    assert inputs["input_values"][1, 0, 5000:].abs().max() == 0
    own = padded_length(5000) // 320
    assert inputs["input_features_mask"].sum(dim=1).tolist() == [total // 320, own]
    mels = inputs["input_features"][1, :own].reshape(-1, 80)  # back to 10 ms frames
    torch.testing.assert_close(mels.mean(dim=0), torch.zeros(80), atol=1e-4, rtol=0)  # per clip, per bin
    torch.testing.assert_close(mels.std(dim=0), torch.ones(80), atol=1e-3, rtol=0)
    assert (inputs["input_features"][1, own:] == 1.0).all()  # padded with 1.0 like XCodec2
    torch.testing.assert_close(
        inputs["input_features"][1, :own].reshape(-1, 80),
        clip_mel_features(torch.from_numpy(speechlike(5000))),
    )


def test_fbank_matches_transformers_numpy_kaldi_fbank():
    from transformers import SeamlessM4TFeatureExtractor

    wave = speechlike(12345)
    reference = SeamlessM4TFeatureExtractor()._extract_fbank_features(wave)  # float64 numpy
    ours = kaldi_fbank(torch.from_numpy(wave)).numpy()
    assert ours.shape == reference.shape == (1 + (12345 - 400) // 160, 80)
    np.testing.assert_allclose(ours, reference, atol=2e-3)


def test_features_match_xcodec2_feature_extractor():
    pytest.importorskip("torchaudio", exc_type=ImportError)
    from transformers import Xcodec2FeatureExtractor

    waves = [speechlike(n) for n in (48000, 12345, 640, 639, 1)]
    reference = Xcodec2FeatureExtractor()(waves, sampling_rate=16000, return_tensors="pt")
    for name, ours in xcodec2_inputs(waves).items():
        torch.testing.assert_close(ours, reference[name].to(ours.dtype), atol=1e-4, rtol=0, msg=name)
