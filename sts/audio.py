"""Audio I/O: decode any wav/flac/mp3/ogg to the codec's 16 kHz mono float32, write wav/flac atomically.

Every stage reads speech through `load_audio`, so every bad clip fails the same way: an `AudioError`
whose message starts with the file it is about. Its limits (`max_seconds`, `max_decoded_bytes`) are
checked against the file's header before anything is decoded, so a small file that expands to
gigabytes (a decompression bomb: an hour of 48 kHz silence is a few MB of FLAC) is refused at the
cost of reading its header; a stream whose header gives no length is decoded in blocks and stopped
as soon as it crosses the limit.

    from sts.audio import load_audio, write_audio
    wav = load_audio("clip.mp3", max_seconds=30.0)      # [N] float32 at 16 kHz, mono; longer: AudioLimitError
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


class AudioLimitError(AudioError):
    """A clip longer, or bigger once decoded, than the caller's limit; raised before decoding (from the
    header) or while decoding in blocks (a stream of unknown length), never after the whole clip is in memory."""

    def __init__(self, message: str, limit: str):
        super().__init__(message)
        self.limit = limit
        """Which limit: "seconds" (`max_seconds`) or "bytes" (`max_decoded_bytes`)."""


class AudioWarning(UserWarning):
    """A clip that was usable only after a change (e.g. scaled down from beyond full scale)."""


SILENCE_RMS_DBFS = -50.0
"""`is_silent` default: a clip whose RMS level is below this holds no usable speech. Ordinary speech
recordings sit around -30..-15 dBFS RMS and a quiet room's noise floor around -60..-50 dBFS, so the
threshold sits at the top of room tone (chosen for this project, not taken from a standard)."""
SILENCE_PEAK_DBFS = -30.0
"""`is_silent` default: a clip whose loudest sample is below this (3 % of full scale) is near-silence
even if its RMS is not; normalized speech peaks within a few dB of full scale."""


DEFAULT_MAX_AUDIO_SECONDS = 3600.0
"""sts-infer's and sts-eval's `--max-audio-seconds` default: one hour, a long lecture or meeting (the
input is split at pauses anyway); its 16 kHz waveform is 230 MB, its decoded 48 kHz stereo 1.4 GB."""
DECODED_BYTES_PER_SECOND = 48_000 * 2 * 4
"""`load_audio`'s decoded-size limit per second of `max_seconds` when none is given: float32 stereo at
48 kHz (384 kB/s), the usual rate of recorders, phones and browsers. A clip at a higher rate or with
more channels may be at most that size (e.g. 96 kHz stereo: half of `max_seconds`)."""
BLOCK_FRAMES = 65_536
"""Frames per read when a stream's length is unknown (256 kB of float32 mono)."""
_UNKNOWN_FRAMES = 2**63 - 1
"""libsndfile's frame count (SF_COUNT_MAX) for a stream whose header does not give its length."""


def decoded_bytes_limit(max_seconds: float) -> int:
    """The decoded-size limit `load_audio` derives from `max_seconds`: `DECODED_BYTES_PER_SECOND` per second."""
    return int(max_seconds * DECODED_BYTES_PER_SECOND)


class _Limits:
    """`load_audio`'s limits on one clip, checked on the header's numbers and on the frames decoded so far."""

    def __init__(self, label: str, max_seconds: float | None, max_bytes: int | None, hint: str | None):
        self.label, self.max_seconds, self.max_bytes = label, max_seconds, max_bytes
        self.hint = f" ({hint})" if hint else ""

    def check(self, frames: float, rate: int, channels: int, *, stopped: str = "") -> None:
        """Raise `AudioLimitError` if `frames` at `rate` x `channels` break a limit. `frames`: the
        header's count, or (with `stopped`, why the header is not trusted) the frames decoded so far."""
        seconds, size = frames / rate, frames * channels * 4  # float32
        if self.max_seconds is not None and seconds > self.max_seconds:
            problem = (
                f"longer than the {self.max_seconds:.1f} s limit: {stopped}, and decoding stopped after {seconds:.1f} s"
                if stopped
                else f"{seconds:.1f} s is longer than the {self.max_seconds:.1f} s limit"
            )
            raise AudioLimitError(f"{self.label}: {problem}{self.hint}", "seconds")
        if self.max_bytes is not None and size > self.max_bytes:
            what = f"{seconds:.1f} s of {channels} channel(s) at {rate} Hz"
            problem = (
                f"bigger than the {self.max_bytes / 1e6:.1f} MB limit once decoded: {stopped}, and decoding "
                f"stopped after {what} ({size / 1e6:.1f} MB of float32)"
                if stopped
                else f"{what} decode to {size / 1e6:.1f} MB of float32, more than the {self.max_bytes / 1e6:.1f} MB limit"
            )
            raise AudioLimitError(f"{self.label}: {problem}{self.hint}", "bytes")


def load_audio(
    source: str | os.PathLike | bytes,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    max_decoded_bytes: int | None = None,
    name: str | None = None,
    limit_hint: str | None = None,
) -> np.ndarray:
    """Decode a clip to mono float32 at `sample_rate`.

    Args:
        source: a path to a wav/flac/mp3/ogg file (any rate, any channel count), or its bytes
            (e.g. an mp3 member of a WebDataset tar).
        sample_rate: rate of the returned waveform; resampled with soxr HQ when the file differs.
        max_seconds: refuse clips longer than this (measured at the file's own rate), from the header
            before decoding.
        max_decoded_bytes: refuse clips whose float32 samples at the file's own rate and channel count
            take more bytes than this, from the header before decoding. Default with `max_seconds`:
            `decoded_bytes_limit(max_seconds)` (48 kHz stereo); None with neither: no limit.
        name: what error messages call the clip; defaults to the path, or "<bytes>".
        limit_hint: appended in parentheses to a limit's message, e.g. "raise it with --max-audio-seconds".

    Returns:
        waveform: [N] float32, channels averaged. Silence is returned as is, not refused (callers
        that need speech test it with `is_silent`). Samples beyond full scale, which only float
        files can hold, are handled here and nowhere else: a clip whose peak exceeds 1.0 is scaled
        down to peak 1.0 (its shape kept, unlike clipping; such a file is usually mis-scaled, e.g.
        integer sample values stored as float) with an `AudioWarning` naming the file and the peak.
        The resampler's few-sample overshoot past 1.0 is clipped silently.

    Raises:
        AudioError: missing file, a directory, undecodable data, no samples, NaN/inf samples.
        AudioLimitError: (an AudioError) longer than `max_seconds` or bigger than `max_decoded_bytes`,
            by the header, or by the frames decoded so far of a stream whose header gives no length
            (so at most the limit plus `BLOCK_FRAMES` is ever decoded).
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

    if max_decoded_bytes is None and max_seconds is not None:
        max_decoded_bytes = decoded_bytes_limit(max_seconds)
    limits = _Limits(label, max_seconds, max_decoded_bytes, limit_hint)
    samples, native_rate = _decode(source, label, limits)  # samples: [N, C] float32
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise AudioError(f"{label}: contains no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{label}: contains NaN or infinite samples")

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


def _decode(source: str | os.PathLike | bytes, label: str, limits: _Limits) -> tuple[np.ndarray, int]:
    """Decode with soundfile (libsndfile reads all four formats); fall back to audioread. Both check
    `limits` on the header first; a limit is an answer, not a reason to try the other decoder.

    Returns (samples: [N, C] float32, native sample rate).
    """
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
        return _decode_with_soundfile(file, limits)
    except AudioLimitError:
        raise
    except Exception as soundfile_error:  # libsndfile raises several types for bad data
        try:
            return _decode_with_audioread(source, label, limits)
        except AudioLimitError:
            raise
        except Exception as fallback_error:
            # error_string drops the path that LibsndfileError repeats; audioread's errors are often blank.
            soundfile_reason = getattr(soundfile_error, "error_string", None) or str(soundfile_error)
            fallback_reason = str(fallback_error) or type(fallback_error).__name__
            raise AudioError(
                f"{label}: cannot decode audio (soundfile: {soundfile_reason}; audioread: {fallback_reason})"
            ) from soundfile_error


def _decode_with_soundfile(file: str | io.BytesIO, limits: _Limits) -> tuple[np.ndarray, int]:
    """libsndfile: the header's frame count checked first, then one read of exactly that many frames
    (libsndfile never returns more than its header says, as for a FLAC whose STREAMINFO understates
    the length). A stream of unknown length (a FLAC written to a pipe: total samples 0 in STREAMINFO,
    which libsndfile reports as SF_COUNT_MAX frames) is read in `BLOCK_FRAMES` blocks, checked after each."""
    with sf.SoundFile(file) as f:
        rate, channels = int(f.samplerate), f.channels
        if f.frames < _UNKNOWN_FRAMES:
            limits.check(f.frames, rate, channels)
            if (
                f.seekable()
            ):  # as `sf.read` does: libsndfile's mp3 decoder starts a little differently after it
                f.seek(0)
            return f.read(dtype="float32", always_2d=True), rate
        blocks, frames = [], 0
        while count := _read_block(f, block := np.empty((BLOCK_FRAMES, channels), np.float32)):
            frames += count
            limits.check(frames, rate, channels, stopped="the header gives no length")
            blocks.append(block[:count])
    return (np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)), rate


def _read_block(f: sf.SoundFile, block: np.ndarray) -> int:
    """Decode the next frames of `f` into `block` ([B, C] float32, C-contiguous); the count decoded
    (0 at the end). libsndfile's own read rather than `SoundFile.read`: soundfile seeks to the new
    position after every read, and libsndfile's FLAC decoder fails that seek at the end of a stream of
    unknown length, losing the last block (soundfile 0.14, libsndfile 1.2.2)."""
    count = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", block.ctypes.data), len(block))
    if error := sf._snd.sf_error(f._file):
        raise sf.LibsndfileError(error)
    return int(count)


def _decode_with_audioread(
    source: str | os.PathLike | bytes, label: str, limits: _Limits
) -> tuple[np.ndarray, int]:
    """The fallback for what libsndfile cannot open (e.g. m4a when ffmpeg is installed): the stream
    info's duration checked first (when the backend knows it), then the decoded buffers counted as
    they arrive, so a stream whose info understates or omits its length stops at the limit too.

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
            rate, channels = int(decoder.samplerate), int(decoder.channels)
            if decoder.duration:  # seconds; 0 or None when the backend cannot tell
                limits.check(decoder.duration * rate, rate, channels)
            stopped = f"the stream info gives {'a shorter' if decoder.duration else 'no'} length"
            buffers, size = [], 0
            for buffer in decoder:  # interleaved 16-bit little-endian PCM, whatever the backend
                size += len(buffer)
                limits.check(size // (2 * channels), rate, channels, stopped=stopped)
                buffers.append(buffer)
            pcm = b"".join(buffers)
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
