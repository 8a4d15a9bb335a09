"""Chunked decoding (`sts.codec.stream_decode`) and the growing wav: the joined chunks stay within the
documented distance of the whole decode, for the demo codec and the tiny XCodec2."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sts.audio import GrowingWav
from sts.codec.stream_decode import StreamSettings, joined_difference
from sts.testing import synthetic_utterance

HOP = 320
# The bounds the module docstring of sts.codec.stream_decode documents for the default settings.
DEMO_MIN_SNR_DB, DEMO_MAX_ABS = 50.0, 0.01
XCODEC2_TINY_MIN_SNR_DB = 5.0


def _speech(seconds: float = 6.0) -> np.ndarray:
    """Speech-like audio: three syllabic tones with pauses between them."""
    parts = [synthetic_utterance(seconds / 3, hz, seed=i) for i, hz in enumerate((120.0, 180.0, 150.0))]
    pause = np.zeros(3200, np.float32)
    return np.concatenate([parts[0], pause, parts[1], pause, parts[2]])


@pytest.fixture(scope="module")
def demo_codec():
    """The demo codec with 32 units taken from speech-like frames (what fitting finds, without k-means)."""
    from sts.codec.melkmeans import MelKMeansCodec

    frames = MelKMeansCodec(np.zeros((1, 80), np.float32)).log_mel(_speech())
    codec = MelKMeansCodec(frames[np.linspace(0, len(frames) - 1, 32).astype(int)])
    codec.magnitudes()  # computed once, outside the timed tests
    return codec


@pytest.fixture(scope="module")
def tiny_xcodec2(tmp_path_factory):
    from sts.codec import XCodec2Codec
    from sts.testing import save_tiny_xcodec2

    return XCodec2Codec(save_tiny_xcodec2(tmp_path_factory.mktemp("codec") / "xcodec2"))


def _joined(codec, codes: np.ndarray, step: int = 1, **settings) -> np.ndarray:
    decoder = codec.stream_decoder(**settings)
    pieces = [decoder.push(codes[i : i + step]) for i in range(0, len(codes), step)]
    return np.concatenate([*pieces, decoder.flush()])


@pytest.mark.parametrize("codec_name", ["demo_codec", "tiny_xcodec2"])
def test_joined_chunks_stay_within_the_documented_bound(codec_name, request):
    codec = request.getfixturevalue(codec_name)
    [codes] = codec.encode([_speech(4.5)])
    [whole] = codec.decode([codes])
    joined = _joined(codec, codes)
    assert joined.dtype == np.float32 and len(joined) == len(codes) * HOP
    d = joined_difference(joined, whole)
    if codec_name == "demo_codec":
        assert d["snr_db"] >= DEMO_MIN_SNR_DB and d["max_abs"] <= DEMO_MAX_ABS, d
    else:
        assert d["snr_db"] >= XCODEC2_TINY_MIN_SNR_DB, d
        assert d["snr_db"] < 30  # approximate: the decoder mixes every frame (this is what the bound is for)
    # A window that sees the whole sequence decodes exactly what `decode` does.
    short = codes[:60]
    exact = _joined(codec, short, left_context=60, lookahead=60)
    assert joined_difference(exact, codec.decode([short])[0])["max_abs"] < 1e-5


def test_audio_does_not_depend_on_how_the_codes_arrive(demo_codec):
    [codes] = demo_codec.encode([_speech(3.0)])
    one = _joined(demo_codec, codes, 1)
    np.testing.assert_array_equal(one, _joined(demo_codec, codes, 7))
    np.testing.assert_array_equal(one, _joined(demo_codec, codes, len(codes)))


def test_first_audio_waits_for_chunk_plus_lookahead_and_flush_cuts(tiny_xcodec2):
    codes = np.arange(100) % 1000
    decoder = tiny_xcodec2.stream_decoder(chunk_frames=25, left_context=50, lookahead=10)
    assert decoder.settings.first_audio_frames == 35
    assert len(decoder.push(codes[:34])) == 0
    assert len(decoder.push(codes[34:35])) == 25 * HOP and decoder.emitted_frames == 25
    assert len(decoder.push(codes[35:])) == 50 * HOP and decoder.emitted_frames == 75
    # a cut at 90 frames (a loop found at the end): only frames 75..90 are left to decode
    assert len(decoder.flush(90)) == 15 * HOP and decoder.emitted_frames == 90
    assert len(decoder.flush()) == 0
    late = tiny_xcodec2.stream_decoder(chunk_frames=25, left_context=50, lookahead=10)
    late.push(codes)
    assert len(late.flush(60)) == 0 and late.emitted_frames == 75  # already streamed past the cut
    fresh = tiny_xcodec2.stream_decoder()
    fresh.push(codes)
    with pytest.raises(ValueError, match="more than the 100 frames"):
        fresh.flush(101)


def test_settings_are_checked_and_codecs_carry_their_defaults(demo_codec, tiny_xcodec2):
    with pytest.raises(ValueError, match="chunk_frames >= 1"):
        StreamSettings(chunk_frames=0)
    with pytest.raises(ValueError, match="crossfade_frames"):
        StreamSettings(lookahead=2, crossfade_frames=3)
    assert demo_codec.stream_decoder().settings == StreamSettings(20, 25, 15, 2)
    assert tiny_xcodec2.stream_decoder().settings == StreamSettings(25, 150, 10, 2)
    assert tiny_xcodec2.stream_decoder(lookahead=4).settings.lookahead == 4


def test_growing_wav_is_valid_after_every_append(tmp_path):
    path = tmp_path / "live" / "out.wav"
    rng = np.random.default_rng(0)
    chunks = [rng.uniform(-1.2, 1.2, n).astype(np.float32) for n in (0, 800, 321, 4000)]
    with GrowingWav(path) as wav:
        assert sf.info(path).frames == 0
        for i, chunk in enumerate(chunks):
            wav.append(chunk)
            audio, rate = sf.read(path, dtype="float32")
            expected = np.clip(np.concatenate(chunks[: i + 1]), -1, 1)
            assert rate == 16000 and audio.shape == expected.shape
            np.testing.assert_allclose(audio, expected, atol=2.0 / 32767)  # int16, read back as x / 32768
    assert path.stat().st_size == 44 + 2 * sum(len(c) for c in chunks)
