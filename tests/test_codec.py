import numpy as np
import pytest

from sts.codec import Codec, XCodec2Codec, load_codec
from sts.codec.features import padded_length, xcodec2_inputs
from sts.testing import save_tiny_xcodec2


def speechlike(num_samples: int, seed: int = 0) -> np.ndarray:
    """Noise bursts with pauses: enough structure for varied codes."""
    gate = np.sin(np.arange(num_samples) / 800) > 0
    return (0.1 * np.random.default_rng(seed).standard_normal(num_samples) * gate).astype(np.float32)


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
    assert isinstance(load_codec(str(codec_dir)), XCodec2Codec)


@pytest.mark.parametrize("num_samples", [1, 319, 320, 321, 639, 640, 16000, 16001, 12345, 48000])
def test_code_count_is_exact(codec, num_samples):
    codes = codec.encode([speechlike(num_samples)])[0]
    assert codes.dtype == np.int32 and codes.ndim == 1
    assert len(codes) == codec.num_codes(num_samples) == num_samples // 320 + 1
    assert codes.min() >= 0 and codes.max() < codec.codebook_size


def test_codes_vary_and_order_is_kept(codec):
    waves = [speechlike(n) for n in (8000, 24000, 16000, 8000)]
    codes = codec.encode(waves)
    assert [len(c) for c in codes] == [26, 76, 51, 26]
    assert len(np.unique(np.concatenate(codes))) > 10  # the tiny codec is not degenerate


def test_exact_batches_equal_one_by_one(codec):
    lengths = [16000, 16100, 16319, 8000, 8200, 24000, 30000, 400]  # several share a code count
    waves = [speechlike(n, seed) for seed, n in enumerate(lengths)]
    batched = codec.encode(waves)
    for wave, codes in zip(waves, batched, strict=True):
        np.testing.assert_array_equal(codes, codec.encode([wave])[0])


def test_padded_batch_agrees_with_single(codec_dir):
    """Mixed-length batches keep the documented bound: >= 95 % identical, mismatches in the last 10 frames."""
    mixed = XCodec2Codec(codec_dir, batch_size=6, exact_batches=False)
    lengths = np.random.default_rng(1).integers(8000, 3 * 16000, 12)
    waves = [speechlike(int(n), seed) for seed, n in enumerate(lengths)]
    single = [mixed.encode([w])[0] for w in waves]
    batched = mixed.encode(waves)
    same = sum(int((b == s).sum()) for b, s in zip(batched, single, strict=True))
    assert same / sum(len(s) for s in single) >= 0.95
    for b, s in zip(batched, single, strict=True):
        assert len(b) == len(s)
        mismatches = np.flatnonzero(b != s)
        assert len(mismatches) == 0 or len(s) - mismatches[0] <= 10


def test_decode_shapes_and_same_length_batches(codec):
    codes = codec.encode([speechlike(n) for n in (16000, 16100, 8000)])
    waves = codec.decode(codes)
    assert [len(w) for w in waves] == [len(c) * 320 for c in codes]
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in waves)
    alone = codec.decode([codes[0]])[0]
    np.testing.assert_allclose(waves[0], alone, atol=1e-5)  # batched with an equal-length clip
    np.testing.assert_allclose(codec.decode([codes[2]])[0], waves[2], atol=1e-5)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(0, np.float32), "non-empty 1-D float"),
        (np.zeros((2, 100), np.float32), "non-empty 1-D float"),
        (np.arange(100), "non-empty 1-D float"),
        (np.array([0.0, np.nan], np.float32), "NaN or infinite"),
    ],
)
def test_bad_waveforms_are_refused(codec, bad, message):
    with pytest.raises(ValueError, match=rf"waveform #1: .*{message}"):
        codec.encode([speechlike(400), bad])


@pytest.mark.parametrize("bad", [np.array([0, 1024]), np.array([-1, 3]), np.zeros(0, np.int32), np.ones(3)])
def test_bad_codes_are_refused(codec, bad):
    with pytest.raises(ValueError, match="codes #0"):
        codec.decode([bad])


def test_numpy_features_layout():
    waves = [speechlike(16000), speechlike(5000)]
    values, padding_mask, features, features_mask = xcodec2_inputs(waves)
    total = padded_length(16000)
    assert values.shape == (2, 1, total) and padding_mask.shape == (2, total)
    assert features.shape == (2, total // 320, 160) and features_mask.shape == (2, total // 320)
    assert padding_mask.sum(axis=1).tolist() == [16001, 5001]  # the clip plus XCodec2's one appended zero
    assert features_mask.sum(axis=1).tolist() == [total // 320, padded_length(5000) // 320]
    own = features[1, : features_mask[1].sum()].reshape(-1, 80)  # back to 10 ms mel frames
    np.testing.assert_allclose(own.mean(axis=0), 0, atol=1e-4)  # normalized per clip, per mel bin
    np.testing.assert_allclose(own.std(axis=0, ddof=1), 1, atol=1e-3)
    assert (features[1, features_mask[1].sum() :] == 1.0).all()  # padded with 1.0 like XCodec2


def test_numpy_features_match_xcodec2_feature_extractor():
    pytest.importorskip("torchaudio", exc_type=ImportError)
    from transformers import Xcodec2FeatureExtractor

    waves = [speechlike(16000), speechlike(7000)]
    reference = Xcodec2FeatureExtractor()(waves, sampling_rate=16000, return_tensors="np")
    ours = dict(
        zip(
            ("input_values", "padding_mask", "input_features", "input_features_mask"),
            xcodec2_inputs(waves),
            strict=True,
        )
    )
    for name, array in ours.items():
        np.testing.assert_allclose(
            np.asarray(reference[name], dtype=np.float32), array, atol=1e-3, err_msg=name
        )
