"""sts.audio on real files in tmp_path: every format, rate and channel count in, 16 kHz mono out."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import soundfile as sf

from sts.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioWarning,
    duration_seconds,
    is_silent,
    load_audio,
    peak_dbfs,
    rms_dbfs,
    write_audio,
)


def sine(seconds: float, sample_rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """[N] float32 sine."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(waveform: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform))
    return float(np.fft.rfftfreq(len(waveform), 1 / sample_rate)[spectrum.argmax()])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_lossless_formats_load_exactly(tmp_path, suffix):
    original = sine(1.0, SAMPLE_RATE)
    sf.write(tmp_path / f"clip{suffix}", original, SAMPLE_RATE, subtype="PCM_16")

    loaded = load_audio(tmp_path / f"clip{suffix}")

    assert loaded.dtype == np.float32 and loaded.shape == (SAMPLE_RATE,)
    np.testing.assert_allclose(loaded, original, atol=1 / 32768)


@pytest.mark.parametrize("suffix", [".mp3", ".ogg"])
def test_lossy_formats_load_close_to_the_original(tmp_path, suffix):
    original = sine(1.0, SAMPLE_RATE)
    sf.write(tmp_path / f"clip{suffix}", original, SAMPLE_RATE)

    loaded = load_audio(str(tmp_path / f"clip{suffix}"))

    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(duration_seconds(loaded) - 1.0) < 0.1
    assert correlation(loaded, original) > 0.9
    assert abs(peak_frequency(loaded, SAMPLE_RATE) - 440.0) <= 2.0


@pytest.mark.parametrize("native_rate", [44100, 22050, 8000])
def test_stereo_at_any_rate_becomes_16k_mono(tmp_path, native_rate):
    seconds = 1.3  # not a whole number of 16 kHz frames at 44.1k, so length rounding is exercised
    left = sine(seconds, native_rate)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # [N, 2]
    sf.write(tmp_path / "stereo.wav", stereo, native_rate, subtype="FLOAT")

    loaded = load_audio(tmp_path / "stereo.wav")

    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) - len(left) * SAMPLE_RATE / native_rate) <= 1
    assert abs(peak_frequency(loaded, SAMPLE_RATE) - 440.0) <= 2.0
    # Channels are averaged: a 0.5 sine beside silence is a 0.25 sine.
    assert np.abs(loaded[1000:-1000]).max() == pytest.approx(0.25, abs=0.01)


def test_resamples_to_a_requested_rate(tmp_path):
    sf.write(tmp_path / "clip.wav", sine(1.0, SAMPLE_RATE), SAMPLE_RATE)
    assert load_audio(tmp_path / "clip.wav", sample_rate=24000).shape == (24000,)


def test_bytes_input_decodes_from_memory(tmp_path):
    original = sine(1.0, 22050)
    sf.write(tmp_path / "clip.mp3", original, 22050)

    loaded = load_audio((tmp_path / "clip.mp3").read_bytes(), name="shard-0001.tar:clip.mp3")

    assert abs(duration_seconds(loaded) - 1.0) < 0.1
    assert abs(peak_frequency(loaded, SAMPLE_RATE) - 440.0) <= 2.0


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"clip\.wav: no such file"):
        load_audio(tmp_path / "clip.wav")


def test_directory(tmp_path):
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match=r"folder\.wav: is a directory"):
        load_audio(tmp_path / "folder.wav")


def test_corrupt_mp3(tmp_path):
    (tmp_path / "bad.mp3").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError, match=r"bad\.mp3: cannot decode audio"):
        load_audio(tmp_path / "bad.mp3")


def test_corrupt_bytes_are_named_in_the_error():
    with pytest.raises(AudioError, match=r"^<bytes>: cannot decode audio"):
        load_audio(b"not audio at all")
    with pytest.raises(AudioError, match=r"^tar:7\.flac: cannot decode audio"):
        load_audio(b"not audio at all", name="tar:7.flac")


def test_zero_length_wav(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"empty\.wav: contains no samples"):
        load_audio(tmp_path / "empty.wav")


def test_nan_samples(tmp_path):
    samples = sine(0.1, SAMPLE_RATE)
    samples[100] = np.nan
    sf.write(tmp_path / "x.wav", samples, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"x\.wav: contains NaN or infinite samples"):
        load_audio(tmp_path / "x.wav")


def test_too_long_is_measured_before_resampling(tmp_path):
    sf.write(tmp_path / "long.flac", sine(2.5, 8000), 8000)

    with pytest.raises(AudioError, match=r"long\.flac: 2\.5 s is longer than the 2\.0 s limit"):
        load_audio(tmp_path / "long.flac", max_seconds=2.0)
    assert load_audio(tmp_path / "long.flac", max_seconds=2.5).shape == (40000,)


def test_silence_is_detected_and_allowed(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)

    silence = load_audio(tmp_path / "silence.wav")

    assert silence.shape == (SAMPLE_RATE,)
    assert rms_dbfs(silence) == float("-inf") and is_silent(silence)
    quiet = sine(1.0, SAMPLE_RATE, amplitude=1e-4)  # about -83 dBFS
    assert is_silent(quiet) and not is_silent(quiet, threshold_dbfs=-90.0, peak_threshold_dbfs=-90.0)
    assert not is_silent(sine(1.0, SAMPLE_RATE))


def test_near_silence_by_rms_or_peak():
    rng = np.random.default_rng(0)
    room_tone = (rng.standard_normal(SAMPLE_RATE) * 10 ** (-55 / 20)).astype(np.float32)  # -55 dBFS RMS
    assert is_silent(room_tone)
    faint_hum = sine(1.0, SAMPLE_RATE, amplitude=0.02)  # RMS -37 dBFS, peak -34 dBFS
    assert rms_dbfs(faint_hum) > -50 and peak_dbfs(faint_hum) == pytest.approx(-33.98, abs=0.01)
    assert is_silent(faint_hum) and not is_silent(faint_hum, peak_threshold_dbfs=-40.0)
    quiet_speech = sine(1.0, SAMPLE_RATE, amplitude=0.1)  # peak -20 dBFS: kept
    assert not is_silent(quiet_speech)
    assert peak_dbfs(np.zeros(3, np.float32)) == float("-inf")


def test_samples_beyond_full_scale_are_scaled_down_with_a_warning(tmp_path):
    loud = sine(1.0, SAMPLE_RATE, amplitude=18.0)
    sf.write(tmp_path / "loud.wav", loud, SAMPLE_RATE, subtype="FLOAT")  # only float files can hold it
    with pytest.warns(AudioWarning, match=r"loud.wav: samples reach 18, beyond full scale"):
        wav = load_audio(tmp_path / "loud.wav")
    assert np.abs(wav).max() == pytest.approx(1.0, abs=1e-6)
    assert correlation(wav, loud) > 0.9999  # scaled, not clipped: the shape is kept
    with pytest.warns(AudioWarning):  # resampled too: never beyond full scale
        assert np.abs(load_audio(tmp_path / "loud.wav", sample_rate=24000)).max() <= 1.0

    sf.write(tmp_path / "full.wav", sine(1.0, SAMPLE_RATE, amplitude=1.0), SAMPLE_RATE, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # at full scale: no warning, no change
        np.testing.assert_allclose(load_audio(tmp_path / "full.wav"), sine(1.0, SAMPLE_RATE, amplitude=1.0))


def test_rms_dbfs_of_a_sine():
    # A sine's RMS is amplitude / sqrt(2): 0.5 -> 20 log10(0.3536) = -9.03 dBFS.
    assert rms_dbfs(sine(1.0, SAMPLE_RATE)) == pytest.approx(-9.03, abs=0.01)
    assert rms_dbfs(np.zeros(0, np.float32)) == float("-inf")


def test_duration_seconds():
    assert duration_seconds(np.zeros(24000, np.float32)) == 1.5
    assert duration_seconds(np.zeros(24000, np.float32), sample_rate=24000) == 1.0


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_round_trip(tmp_path, suffix):
    original = sine(1.0, SAMPLE_RATE)

    written = write_audio(tmp_path / "nested" / "dir" / f"out{suffix}", original)

    assert written == tmp_path / "nested" / "dir" / f"out{suffix}"
    info = sf.info(written)
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    np.testing.assert_allclose(load_audio(written), original, atol=1 / 32768)


def test_write_clips_to_full_scale(tmp_path):
    write_audio(tmp_path / "loud.wav", np.array([1.5, -2.0, 0.25], np.float32))
    np.testing.assert_allclose(sf.read(tmp_path / "loud.wav")[0], [1.0, -1.0, 0.25], atol=1 / 32768)


def test_write_refuses_bad_suffix_and_bad_waveforms(tmp_path):
    with pytest.raises(AudioError, match=r"out\.mp3: cannot write '\.mp3'"):
        write_audio(tmp_path / "out.mp3", sine(0.1, SAMPLE_RATE))
    nan = sine(0.1, SAMPLE_RATE)
    nan[3] = np.inf
    with pytest.raises(AudioError, match=r"out\.wav: contains NaN or infinite samples"):
        write_audio(tmp_path / "out.wav", nan)
    with pytest.raises(AudioError, match=r"out\.wav: waveform must be 1-D float"):
        write_audio(tmp_path / "out.wav", np.zeros((2, 100), np.float32))
    with pytest.raises(AudioError, match=r"out\.wav: waveform must be 1-D float"):
        write_audio(tmp_path / "out.wav", np.zeros(100, np.int16))
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_an_existing_file_whole_and_leaves_no_temp(tmp_path):
    target = tmp_path / "clip.wav"
    write_audio(target, sine(3.0, SAMPLE_RATE))

    shorter = sine(0.5, SAMPLE_RATE, freq=1000.0)
    write_audio(target, shorter)

    assert [p.name for p in tmp_path.iterdir()] == ["clip.wav"]
    np.testing.assert_allclose(load_audio(target), shorter, atol=1 / 32768)


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch):
    target = tmp_path / "clip.flac"
    old = sine(0.5, SAMPLE_RATE)
    write_audio(target, old)

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_audio(target, sine(1.0, SAMPLE_RATE, freq=1000.0))

    assert [p.name for p in tmp_path.iterdir()] == ["clip.flac"]
    np.testing.assert_allclose(load_audio(target), old, atol=1 / 32768)
