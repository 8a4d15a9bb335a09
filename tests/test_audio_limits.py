"""`load_audio`'s limits on real files: refused from the header before decoding (the memory a refusal
takes is measured), a stream of unknown length decoded in blocks and stopped at the limit, clips
within the limits decoded exactly as without them, the audioread fallback, `sts serve`'s input check
and the corpus builder's drop reasons."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr

from corpus_builder.sources import SourceRow, audio_drop_reason
from recipes.serve_service import MB, Limits, ServeError, read_input
from sts.audio import (
    BLOCK_FRAMES,
    DECODED_BYTES_PER_SECOND,
    SAMPLE_RATE,
    AudioError,
    AudioLimitError,
    load_audio,
)

BOMB_SECONDS, BOMB_RATE, BOMB_CHANNELS = 600, 48000, 2
BOMB_DECODED_BYTES = BOMB_SECONDS * BOMB_RATE * BOMB_CHANNELS * 4  # 230.4 MB of float32


def write_silence(path, seconds: int, rate: int, channels: int) -> None:
    """A silent 16-bit FLAC/WAV written 10 s at a time (the test never holds it whole)."""
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as f:
        block = np.zeros((10 * rate, channels), np.int16)
        for _ in range(seconds // 10):
            f.write(block)


def without_length(flac: bytes) -> bytes:
    """The same FLAC with STREAMINFO's total-samples field set to 0 ("unknown"), as an encoder that
    writes to a pipe leaves it. STREAMINFO is the first metadata block: "fLaC", a 4-byte block header,
    then 34 bytes whose bytes 13..17 end with the 36-bit sample count."""
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0, "STREAMINFO is not the first block"
    data = bytearray(flac)
    data[8 + 13] &= 0xF0
    data[8 + 14 : 8 + 18] = bytes(4)
    return bytes(data)


def peak_traced_bytes(call) -> tuple[int, BaseException | None]:
    """(peak bytes Python and numpy allocated during `call()`, the exception it raised)."""
    tracemalloc.start()
    try:
        call()
        error = None
    except Exception as err:  # noqa: BLE001 (returned to the test, which checks its type)
        error = err
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


def reference_decode(path) -> np.ndarray:
    """What `load_audio` returned before it had limits: one `sf.read`, channels averaged, soxr HQ."""
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1, dtype=np.float32)
    if rate != SAMPLE_RATE:
        mono = np.clip(soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ"), -1.0, 1.0)
    return mono


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """600 s of 48 kHz stereo silence: about 0.1 MB of FLAC, 230 MB once decoded to float32."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.flac"
    write_silence(path, BOMB_SECONDS, BOMB_RATE, BOMB_CHANNELS)
    assert path.stat().st_size < 1 * MB
    return path


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(bomb):
    peak, error = peak_traced_bytes(
        lambda: load_audio(bomb, max_seconds=30.0, limit_hint="raise it with --max-audio-seconds")
    )
    assert isinstance(error, AudioLimitError) and error.limit == "seconds"
    assert str(error) == (
        f"{bomb}: 600.0 s is longer than the 30.0 s limit (raise it with --max-audio-seconds)"
    )
    # decoding it would allocate its 230 MB of float32 (288 MB traced before the header check)
    assert peak < BOMB_DECODED_BYTES / 100, f"{peak / 1e6:.2f} MB traced"


def test_the_decoded_size_is_limited_too(tmp_path):
    """2 s, but 8 channels at 96 kHz: 6.1 MB of float32, more than 5 s of 48 kHz stereo (1.9 MB)."""
    path = tmp_path / "wide.flac"
    sf.write(path, np.zeros((2 * 96000, 8), np.int16), 96000)
    assert 5 * DECODED_BYTES_PER_SECOND == 1_920_000
    with pytest.raises(
        AudioLimitError, match=r"wide\.flac: 2\.0 s of 8 channel\(s\) at 96000 Hz decode to 6\.1 MB"
    ) as err:
        load_audio(path, max_seconds=5.0)
    assert err.value.limit == "bytes" and "more than the 1.9 MB limit" in str(err.value)
    assert load_audio(path, max_seconds=5.0, max_decoded_bytes=7_000_000).shape == (2 * SAMPLE_RATE,)
    with pytest.raises(AudioLimitError, match=r"more than the 1\.0 MB limit"):
        load_audio(path, max_decoded_bytes=1_000_000)  # a size limit alone


def test_a_stream_of_unknown_length_is_decoded_in_blocks_and_stopped_at_the_limit(tmp_path):
    """A FLAC whose header gives no length: libsndfile reports SF_COUNT_MAX frames, and one read of
    that many fails (before limits, such a file was undecodable). Block decoding reads it exactly,
    and with a limit stops as soon as the limit is crossed."""
    wave = (0.3 * np.sin(np.arange(120 * SAMPLE_RATE) * 0.07)).astype(np.float32)  # 120 s, 7.7 MB float32
    sf.write(tmp_path / "known.flac", wave, SAMPLE_RATE, subtype="PCM_16")
    stream = tmp_path / "stream.flac"
    stream.write_bytes(without_length((tmp_path / "known.flac").read_bytes()))
    assert sf.info(stream).frames == 2**63 - 1

    peak, error = peak_traced_bytes(lambda: load_audio(stream, max_seconds=10.0))
    assert isinstance(error, AudioLimitError)
    prefix = (
        f"{stream}: longer than the 10.0 s limit: the header gives no length, and decoding stopped after "
    )
    assert str(error).startswith(prefix)
    stopped_after = float(str(error).removeprefix(prefix).removesuffix(" s"))
    assert 10.0 < stopped_after <= 10.0 + BLOCK_FRAMES / SAMPLE_RATE  # at the first block past the limit
    assert peak < 2 * MB, f"{peak / 1e6:.2f} MB traced"  # 10 s is 0.64 MB; the whole stream 7.7 MB

    whole = load_audio(stream, max_seconds=121.0)
    np.testing.assert_array_equal(whole, load_audio(tmp_path / "known.flac"))
    np.testing.assert_array_equal(load_audio(stream.read_bytes()), whole)  # bytes: the same blocks


def test_a_header_that_understates_the_length_bounds_the_decode(tmp_path):
    """A FLAC whose STREAMINFO says 1 s but holds 60 s: libsndfile stops at the header's count, so
    what is decoded (and allocated) never exceeds what the limit was checked against."""
    sf.write(
        tmp_path / "full.flac", np.full(60 * SAMPLE_RATE, 0.25, np.float32), SAMPLE_RATE, subtype="PCM_16"
    )
    data = bytearray(without_length((tmp_path / "full.flac").read_bytes()))
    data[8 + 14 : 8 + 18] = SAMPLE_RATE.to_bytes(4, "big")
    (tmp_path / "short.flac").write_bytes(bytes(data))
    assert sf.info(tmp_path / "short.flac").frames == SAMPLE_RATE
    assert load_audio(tmp_path / "short.flac", max_seconds=2.0).shape == (SAMPLE_RATE,)


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [("clip.wav", 44100, 2), ("clip.flac", 16000, 1), ("clip.ogg", 24000, 1), ("clip.mp3", 22050, 2)],
)
def test_clips_within_the_limits_decode_exactly_as_without_them(tmp_path, name, rate, channels):
    t = np.arange(int(1.3 * rate)) / rate
    wave = np.stack([0.4 * np.sin(2 * np.pi * (300 + 50 * c) * t) for c in range(channels)], axis=1)
    sf.write(tmp_path / name, wave.astype(np.float32), rate)
    expected = reference_decode(tmp_path / name)
    for limits in ({}, {"max_seconds": 1.5}, {"max_seconds": 3600.0}, {"max_decoded_bytes": 10**9}):
        np.testing.assert_array_equal(load_audio(tmp_path / name, **limits), expected)
    np.testing.assert_array_equal(load_audio((tmp_path / name).read_bytes(), max_seconds=1.5), expected)


def test_the_audioread_fallback_checks_its_stream_info_and_counts_what_it_decodes(tmp_path, monkeypatch):
    """When libsndfile cannot open a file, audioread decodes it (its raw backend reads this wav):
    refused by the stream info's duration, or, when the backend gives none, by the PCM it yields."""
    import sts.audio

    with warnings.catch_warnings():  # the raw backend imports aifc, audioop, sunau (deprecated in 3.11)
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioread.rawread

    wave = (0.3 * np.sin(np.arange(5 * SAMPLE_RATE) * 0.05)).astype(np.float32)
    sf.write(tmp_path / "clip.wav", wave, SAMPLE_RATE, subtype="PCM_16")
    expected = load_audio(tmp_path / "clip.wav")

    def libsndfile_refuses(file, limits):
        raise sf.LibsndfileError(1, "cannot open: ")

    monkeypatch.setattr(sts.audio, "_decode_with_soundfile", libsndfile_refuses)
    np.testing.assert_array_equal(load_audio(tmp_path / "clip.wav", max_seconds=6.0), expected)
    with pytest.raises(AudioLimitError, match=r"clip\.wav: 5\.0 s is longer than the 2\.0 s limit$"):
        load_audio(tmp_path / "clip.wav", max_seconds=2.0)
    monkeypatch.setattr(audioread.rawread.RawAudioFile, "duration", property(lambda self: 0))
    with pytest.raises(
        AudioLimitError, match=r"limit: the stream info gives no length, and decoding stopped"
    ):
        load_audio(tmp_path / "clip.wav", max_seconds=2.0)


def test_serve_refuses_a_bomb_under_its_upload_cap_from_the_header(bomb, tmp_path):
    uploads = tmp_path / "gradio"
    uploads.mkdir()
    upload = uploads / "bomb.flac"
    upload.write_bytes(bomb.read_bytes())
    limits = Limits(max_seconds=30.0, max_bytes=10 * MB, roots=(uploads,))
    peak, error = peak_traced_bytes(lambda: read_input(upload, limits))
    assert isinstance(error, ServeError)
    assert str(error) == "bomb.flac: 600.0 s is longer than the 30.0 s limit"  # a page shows no server flags
    assert peak < BOMB_DECODED_BYTES / 100, f"{peak / 1e6:.2f} MB traced"


def test_the_corpus_builder_drops_a_long_clip_from_its_header(bomb, tmp_path):
    from corpus_builder.card import dataset_readme
    from corpus_builder.pipeline import PipelineConfig, _prepare

    row = SourceRow(id="emilia-1", lang="ja", text="x", source="emilia", audio=bomb.read_bytes())
    work = None

    def prepare():
        nonlocal work
        work = _prepare(row, PipelineConfig(), set())

    peak, _ = peak_traced_bytes(prepare)
    assert work.drop == "duration_long" and work.src_audio is None and peak < BOMB_DECODED_BYTES / 100
    assert work.detail == "emilia-1: 600.0 s is longer than the 30.0 s limit (raise it with --max-duration)"
    card = dataset_readme(
        tmp_path, {"config": {"source": "emilia", "min_duration": 3.0, "max_duration": 30.0}}
    )
    assert (
        "- source clips: 3 to 30 s; a longer clip is refused from its file header before it is decoded"
        in card
    )

    with pytest.raises(AudioLimitError) as err:
        row.load_audio(max_seconds=30.0)
    assert (
        str(err.value) == "emilia-1: 600.0 s is longer than the 30.0 s limit (raise it with --max-duration)"
    )
    assert audio_drop_reason(err.value) == "duration_long"
    assert audio_drop_reason(AudioLimitError("x", "bytes")) == "audio_too_large"
    assert audio_drop_reason(AudioError("x: cannot decode audio")) == "audio_undecodable"
