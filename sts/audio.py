"""Audio I/O: decode any wav/flac/mp3/ogg to the codec's 16 kHz mono float32, write wav/flac atomically.

Every stage reads speech through `load_audio`, so every bad clip fails the same way: an `AudioError`
whose message starts with the file it is about.

    from sts.audio import load_audio, write_audio
    wav = load_audio("clip.mp3", max_seconds=30.0)      # [N] float32 at 16 kHz, mono
    write_audio("out/clip.wav", wav)                      # PCM_16, written to a temp name then renamed
    GrowingWav("out/live.wav").append(chunk)              # a wav that stays valid while it grows
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sts.errors import InputError, writing
from sts.io import temp_path

SAMPLE_RATE = 16000
"""The speech codec's sample rate: the default target of `load_audio` and rate of `write_audio`."""

_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


class AudioError(InputError, ValueError):
    """A clip that cannot be used; the message starts with the file's path (or given name)."""


class AudioWarning(UserWarning):
    """A clip that was usable only after a change (e.g. scaled down from beyond full scale)."""


SILENCE_RMS_DBFS = -50.0
"""`is_silent` default: a clip whose RMS level is below this holds no usable speech. Ordinary speech
recordings sit around -30..-15 dBFS RMS and a quiet room's noise floor around -60..-50 dBFS, so the
threshold sits at the top of room tone (chosen for this project, not taken from a standard)."""
SILENCE_PEAK_DBFS = -30.0
"""`is_silent` default: a clip whose loudest sample is below this (3 % of full scale) is near-silence
even if its RMS is not; normalized speech peaks within a few dB of full scale."""


def load_audio(
    source: str | os.PathLike | bytes,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode a clip to mono float32 at `sample_rate`.

    Args:
        source: a path to a wav/flac/mp3/ogg file (any rate, any channel count), or its bytes
            (e.g. an mp3 member of a WebDataset tar).
        sample_rate: rate of the returned waveform; resampled with soxr HQ when the file differs.
        max_seconds: refuse clips longer than this (measured at the file's own rate).
        name: what error messages call the clip; defaults to the path, or "<bytes>".

    Returns:
        waveform: [N] float32, channels averaged. Silence is returned as is, not refused (callers
        that need speech test it with `is_silent`). Samples beyond full scale, which only float
        files can hold, are handled here and nowhere else: a clip whose peak exceeds 1.0 is scaled
        down to peak 1.0 (its shape kept, unlike clipping; such a file is usually mis-scaled, e.g.
        integer sample values stored as float) with an `AudioWarning` naming the file and the peak.
        The resampler's few-sample overshoot past 1.0 is clipped silently.

    Raises:
        AudioError: missing file, a directory, undecodable data, no samples, NaN/inf samples,
            or longer than `max_seconds`.
    """
    if isinstance(source, bytes):
        label = name or "<bytes>"
    else:
        path = Path(source)
        label = name or str(path)
        if path.is_dir():
            raise AudioError(f"{label}: is a directory, not an audio file")
        if not path.exists():
            raise AudioError(f"{label}: no such file")

    samples, native_rate = _decode(source, label)  # samples: [N, C] float32
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise AudioError(f"{label}: contains no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{label}: contains NaN or infinite samples")
    seconds = samples.shape[0] / native_rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{label}: {seconds:.1f} s is longer than the {max_seconds:.1f} s limit")

    mono = samples.mean(axis=1, dtype=np.float32)
    peak = float(np.max(np.abs(mono)))
    if peak > 1.0:
        warnings.warn(
            f"{label}: samples reach {peak:.3g}, beyond full scale (1.0); scaled down by {peak:.3g}",
            AudioWarning,
            stacklevel=2,
        )
        mono = mono / np.float32(peak)
    if native_rate != sample_rate:
        mono = np.clip(soxr.resample(mono, native_rate, sample_rate, quality="HQ"), -1.0, 1.0)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _decode(source: str | os.PathLike | bytes, label: str) -> tuple[np.ndarray, int]:
    """Decode with soundfile (libsndfile reads all four formats); fall back to audioread.

    Returns (samples: [N, C] float32, native sample rate).
    """
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
        samples, rate = sf.read(file, dtype="float32", always_2d=True)
        return samples, int(rate)
    except Exception as soundfile_error:  # libsndfile raises several types for bad data
        try:
            return _decode_with_audioread(source, label)
        except Exception as fallback_error:
            # error_string drops the path that LibsndfileError repeats; audioread's errors are often blank.
            soundfile_reason = getattr(soundfile_error, "error_string", None) or str(soundfile_error)
            fallback_reason = str(fallback_error) or type(fallback_error).__name__
            raise AudioError(
                f"{label}: cannot decode audio (soundfile: {soundfile_reason}; audioread: {fallback_reason})"
            ) from soundfile_error


def _decode_with_audioread(source: str | os.PathLike | bytes, label: str) -> tuple[np.ndarray, int]:
    """The fallback for what libsndfile cannot open (e.g. m4a when ffmpeg is installed).

    audioread directly rather than `librosa.load`, which costs seconds of numba warm-up to reach the
    same call. audioread reads only paths, so bytes go through a temp file that keeps the name's
    suffix as a format hint.
    """
    import audioread

    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp_dir:
        # audioread's raw backend (loaded by audio_open) imports aifc/audioop/sunau, deprecated in 3.11.
        warnings.simplefilter("ignore", DeprecationWarning)
        if isinstance(source, bytes):
            path = Path(tmp_dir) / f"clip{Path(label).suffix}"
            path.write_bytes(source)
        else:
            path = Path(source)
        with audioread.audio_open(os.fspath(path)) as decoder:
            rate, channels = decoder.samplerate, decoder.channels
            pcm = b"".join(decoder)  # interleaved 16-bit little-endian PCM, whatever the backend
    samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels)
    return samples.astype(np.float32) / 32768.0, int(rate)


def write_audio(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write a waveform as 16-bit PCM wav or flac (chosen by suffix), atomically.

    Args:
        path: destination ending in .wav or .flac; parent directories are created.
        waveform: [N] float, nominally in [-1, 1].
        sample_rate: rate to record in the file header.

    Returns:
        The path written.

    Raises:
        AudioError: another suffix, a waveform that is not 1-D float, or NaN/inf samples.
        sts.errors.DiskFullError: the disk is full (names `path`).
    """
    path = Path(path)
    audio_format = _WRITE_FORMATS.get(path.suffix.lower())
    if audio_format is None:
        raise AudioError(f"{path}: cannot write '{path.suffix}' files (use .wav or .flac)")
    waveform = np.asarray(waveform)
    if waveform.ndim != 1 or not np.issubdtype(waveform.dtype, np.floating):
        raise AudioError(f"{path}: waveform must be 1-D float, got {waveform.dtype} {list(waveform.shape)}")
    if not np.isfinite(waveform).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    # PCM_16 cannot represent |x| > 1: clip here rather than let libsndfile wrap or saturate silently.
    waveform = np.clip(waveform, -1.0, 1.0)

    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename on one filesystem; a crash leaves only the hidden temp.
    tmp_path = temp_path(path)
    try:
        with writing(path, needs_bytes=2 * len(waveform) + 1024):  # PCM_16 + header (flac: at most that)
            sf.write(tmp_path, waveform, sample_rate, format=audio_format, subtype="PCM_16")
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def rms_dbfs(waveform: np.ndarray) -> float:
    """RMS level of a [N] waveform in dB relative to full scale (a full-scale sine is -3 dBFS).

    Returns -inf for an all-zero or empty waveform.
    """
    waveform = np.asarray(waveform, dtype=np.float64)
    if waveform.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(waveform))))
    return 20.0 * float(np.log10(rms)) if rms > 0.0 else float("-inf")


def peak_dbfs(waveform: np.ndarray) -> float:
    """Level of the loudest sample of a [N] waveform in dB relative to full scale; -inf when all zero or empty."""
    waveform = np.asarray(waveform)
    peak = float(np.max(np.abs(waveform))) if waveform.size else 0.0
    return 20.0 * float(np.log10(peak)) if peak > 0.0 else float("-inf")


def is_silent(
    waveform: np.ndarray,
    threshold_dbfs: float = SILENCE_RMS_DBFS,
    peak_threshold_dbfs: float = SILENCE_PEAK_DBFS,
) -> bool:
    """Whether a [N] waveform is silence or near-silence: RMS below `threshold_dbfs` or peak below
    `peak_threshold_dbfs` (defaults `SILENCE_RMS_DBFS` = -50, `SILENCE_PEAK_DBFS` = -30 dBFS).

    The one silence test of the package: the corpus builder drops such source clips (`silent_audio`).
    """
    return rms_dbfs(waveform) < threshold_dbfs or peak_dbfs(waveform) < peak_threshold_dbfs


def duration_seconds(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Length of a [N] waveform in seconds."""
    return waveform.shape[-1] / sample_rate


class GrowingWav:
    """A 16-bit PCM mono wav that grows as audio arrives, valid after every `append`.

        with GrowingWav("out.wav") as wav:     # writes a header for 0 samples
            wav.append(chunk)                  # [N] float in [-1, 1]; the header's sizes are rewritten

    A player or a reader can open the file at any moment and get the samples so far. The header is
    the canonical 44-byte RIFF/WAVE layout (a "fmt " chunk of 16 bytes: PCM, 1 channel, the rate,
    16 bits; then the "data" chunk), whose RIFF and data sizes are patched after each append. Not
    atomic by design: the writer of the finished file replaces it (`write_audio`) when it is done.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int = SAMPLE_RATE):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.samples = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 (kept open across appends; closed in close())
        self._file.write(self._header(0))
        self._file.flush()

    def _header(self, samples: int) -> bytes:
        data = 2 * samples
        fmt = struct.pack("<HHIIHH", 1, 1, self.sample_rate, 2 * self.sample_rate, 2, 16)
        return (
            b"RIFF"
            + struct.pack("<I", 36 + data)
            + b"WAVEfmt "
            + struct.pack("<I", 16)
            + fmt
            + (b"data" + struct.pack("<I", data))
        )

    def append(self, waveform: np.ndarray) -> None:
        """Add `[N]` float samples (clipped to [-1, 1]) and rewrite the header's sizes."""
        waveform = np.asarray(waveform, dtype=np.float64).ravel()
        if not np.isfinite(waveform).all():
            raise AudioError(f"{self.path}: contains NaN or infinite samples")
        pcm = np.round(np.clip(waveform, -1.0, 1.0) * 32767).astype("<i2")
        self._file.seek(0, os.SEEK_END)
        self._file.write(pcm.tobytes())
        self.samples += len(pcm)
        self._file.seek(0)
        self._file.write(self._header(self.samples))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> GrowingWav:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
