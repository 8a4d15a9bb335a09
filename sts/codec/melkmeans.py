"""The offline/demo codec: k-means units over log-mel frames, inverted by Griffin-Lim. No weights to download.

    from sts.codec.melkmeans import MelKMeansCodec
    codec = MelKMeansCodec.fit(waveforms, codebook_size=512)   # seconds on a CPU
    codec.save("runs/demo/codec")                               # codec.json + centroids.npy
    codes = codec.encode([wav])[0]                              # [N // 320 + 1] int32, 50 per second
    wav = codec.decode([codes])[0]                              # [len(codes) * 320] float32, 16 kHz

THIS IS NOT XCODEC2. It exists so that the whole pipeline can run where no pretrained neural codec
can be fetched (the offline demo, CI). Each 20 ms frame of a clip's log-mel spectrogram (80 bands,
1024-point FFT, hop 320 at 16 kHz, the same frame count as XCodec2: `N // 320 + 1`) is replaced by
the index of its nearest k-means centroid; decoding looks the centroids up, undoes the log and
inverts the mel spectrogram with Griffin-Lim (from position-seeded phases, so that chunked decoding
matches the whole decode: `decode_window`). Units fitted on a few voices reproduce those
voices intelligibly but buzzy; they carry no phase and generalize poorly to unseen voices. Its
round-trip intelligibility, measured with offline Whisper, is in `benchmarks/RESULTS.md`.
XCodec2 (`sts.codec.XCodec2Codec`) stays the codec for real work.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sts.codec.base import Codec
from sts.codec.stream_decode import StreamSettings
from sts.errors import CorruptFileError

CODEC_TYPE = "mel-kmeans"
CONFIG_NAME = "codec.json"
CENTROIDS_NAME = "centroids.npy"
LOG_FLOOR = 1e-5
MOMENTUM = 0.99
"""Fast Griffin-Lim's momentum (librosa's `griffinlim` default)."""
PHASE_PERIOD = 1024
"""Frames after which the position-dependent initial phases repeat (20 s)."""


class MelKMeansCodec(Codec):
    """k-means units over 50 Hz log-mel frames (see the module docstring)."""

    sample_rate = 16000
    frame_rate = 50.0
    hop_length = 320
    stream_defaults = StreamSettings(chunk_frames=20, left_context=25, lookahead=15, crossfade_frames=2)
    """Chunked decoding (`sts.codec.stream_decode`): first audio after 0.7 s of codes, ~63 dB SNR from
    the whole decode on TTS speech (benchmarks/stream_decode.py)."""

    def __init__(
        self,
        centroids: np.ndarray,
        *,
        n_fft: int = 1024,
        n_mels: int = 80,
        griffin_lim_iters: int = 32,
        name: str = CODEC_TYPE,
    ):
        centroids = np.asarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or centroids.shape[1] != n_mels:
            raise ValueError(f"centroids must be [codebook_size, {n_mels}], got {list(centroids.shape)}")
        self.centroids = centroids
        self.codebook_size = int(centroids.shape[0])
        self.n_fft = n_fft
        self.n_mels = n_mels
        self.griffin_lim_iters = griffin_lim_iters
        self.name = name
        self._centroid_norms = (centroids**2).sum(axis=1)
        self._magnitudes: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"MelKMeansCodec({self.name!r}, codebook_size={self.codebook_size})"

    # ------------------------------------------------------------------ features

    def num_codes(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def log_mel(self, waveform: np.ndarray) -> np.ndarray:
        """`[T, n_mels]` float32 natural-log mel power, T = `num_codes(len(waveform))`."""
        import librosa

        with warnings.catch_warnings():  # clips shorter than n_fft are fine: center=True pads them
            warnings.filterwarnings("ignore", message="n_fft=.*is too large", category=UserWarning)
            mel = librosa.feature.melspectrogram(
                y=np.asarray(waveform, dtype=np.float32),
                sr=self.sample_rate,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                n_mels=self.n_mels,
                center=True,
                power=2.0,
            )
        return np.log(mel + LOG_FLOOR).T.astype(np.float32)

    # ------------------------------------------------------------------ codec

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        codes = []
        for waveform in waveforms:
            frames = self.log_mel(waveform)
            # argmin ||x - c||^2 = argmin (||c||^2 - 2 x.c), in blocks to bound memory.
            out = np.empty(len(frames), dtype=np.int32)
            for start in range(0, len(frames), 4096):
                block = frames[start : start + 4096]
                out[start : start + len(block)] = np.argmin(
                    self._centroid_norms[None, :] - 2.0 * block @ self.centroids.T, axis=1
                )
            codes.append(out)
        return codes

    def decode(self, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Codes `[T_i]` int -> waveforms `[T_i * 320]` float32 at 16 kHz (Griffin-Lim, see `decode_window`)."""
        return [self.decode_window(np.asarray(clip), start_frame=0) for clip in codes]

    def decode_window(self, codes: np.ndarray, *, start_frame: int) -> np.ndarray:
        """Codes `[T]` lying at frames `start_frame ...` of a stream -> `[T * 320]` float32.

        Fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99, as librosa's `griffinlim`) from
        random initial phases that depend only on each frame's position in the stream
        (`PHASE_PERIOD`-periodic, seeded), so a window of a stream converges to nearly the phases
        the whole stream's decode finds there: chunked decoding (`sts.codec.stream_decode`) then
        matches `decode` closely.
        """
        import librosa

        clip = np.asarray(codes)
        if clip.size and (clip.min() < 0 or clip.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got [{clip.min()}, {clip.max()}]")
        n_frames = len(clip)
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        n_samples = n_frames * self.hop_length
        magnitude = self.magnitudes()[:, clip]  # [F, T]
        phase = _initial_phases(magnitude.shape[0])[:, (start_frame + np.arange(n_frames)) % PHASE_PERIOD]
        stft = dict(n_fft=self.n_fft, hop_length=self.hop_length, center=True)
        estimate, previous = magnitude * phase, None
        with warnings.catch_warnings():  # a few frames are shorter than n_fft: fine, they are padded
            warnings.filterwarnings("ignore", message="n_fft=.*is too large", category=UserWarning)
            for _ in range(self.griffin_lim_iters):
                audio = librosa.istft(magnitude * _unit(estimate), length=n_samples, **stft)
                rebuilt = librosa.stft(audio, **stft)[:, :n_frames]
                estimate = rebuilt if previous is None else rebuilt + MOMENTUM * (rebuilt - previous)
                previous = rebuilt
            audio = librosa.istft(magnitude * _unit(estimate), length=n_samples, **stft)
        return np.clip(audio, -1.0, 1.0).astype(np.float32)

    def magnitudes(self) -> np.ndarray:
        """`[n_fft // 2 + 1, codebook_size]` linear STFT magnitude of every centroid (NNLS, computed once)."""
        if self._magnitudes is None:
            import librosa

            mel = np.maximum(np.exp(self.centroids.T.astype(np.float64)) - LOG_FLOOR, 0.0)
            self._magnitudes = librosa.feature.inverse.mel_to_stft(
                mel, sr=self.sample_rate, n_fft=self.n_fft, power=2.0
            ).astype(np.float32)
        return self._magnitudes

    # ------------------------------------------------------------------ fit, save, load

    @classmethod
    def fit(
        cls,
        waveforms: Sequence[np.ndarray],
        *,
        codebook_size: int = 512,
        seed: int = 0,
        max_frames: int = 100_000,
        name: str = CODEC_TYPE,
        **kwargs,
    ) -> MelKMeansCodec:
        """Fit `codebook_size` centroids (mini-batch k-means) to the log-mel frames of `waveforms`.

        At most `max_frames` frames (a seeded random subset) are used. Needs at least
        `codebook_size` frames, i.e. `codebook_size / 50` seconds of audio.
        """
        from sklearn.cluster import MiniBatchKMeans

        probe = cls(np.zeros((1, kwargs.get("n_mels", 80)), np.float32), **kwargs)
        frames = np.concatenate([probe.log_mel(w) for w in waveforms]) if waveforms else np.zeros((0, 1))
        if len(frames) < codebook_size:
            raise ValueError(
                f"fitting {codebook_size} codes needs at least {codebook_size} frames "
                f"({codebook_size / cls.frame_rate:.1f} s of audio); got {len(frames)}"
            )
        rng = np.random.default_rng(seed)
        if len(frames) > max_frames:
            frames = frames[rng.choice(len(frames), max_frames, replace=False)]
        kmeans = MiniBatchKMeans(
            n_clusters=codebook_size,
            batch_size=max(4096, 4 * codebook_size),
            n_init=1,
            max_iter=50,
            random_state=seed,
        ).fit(frames)
        return cls(kmeans.cluster_centers_.astype(np.float32), name=name, **kwargs)

    def save(self, out_dir: str | Path) -> Path:
        """Write `codec.json` and `centroids.npy` into `out_dir` (each atomically); returns `out_dir`."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{CENTROIDS_NAME}.tmp.npy"
        np.save(tmp, self.centroids)
        tmp.replace(out_dir / CENTROIDS_NAME)
        config = {
            "codec_type": CODEC_TYPE,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "hop_length": self.hop_length,
            "codebook_size": self.codebook_size,
            "n_fft": self.n_fft,
            "n_mels": self.n_mels,
            "griffin_lim_iters": self.griffin_lim_iters,
            "note": "offline/demo codec: k-means over log-mel frames, Griffin-Lim decoding; not XCodec2",
        }
        tmp = out_dir / f".{CONFIG_NAME}.tmp"
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        tmp.replace(out_dir / CONFIG_NAME)
        return out_dir

    @classmethod
    def load(cls, path: str | Path, **overrides) -> MelKMeansCodec:
        path = Path(path)
        config_path = path / CONFIG_NAME
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CorruptFileError(f"{config_path}: not a readable codec config ({err})") from err
        if config.get("codec_type") != CODEC_TYPE:
            raise CorruptFileError(
                f"{config_path}: codec_type is {config.get('codec_type')!r}, not {CODEC_TYPE!r}"
            )
        centroids = np.load(path / CENTROIDS_NAME)
        kwargs = {k: config[k] for k in ("n_fft", "n_mels", "griffin_lim_iters") if k in config}
        return cls(centroids, name=str(path), **{**kwargs, **overrides})


@functools.cache
def _initial_phases(n_bins: int) -> np.ndarray:
    """`[n_bins, PHASE_PERIOD]` complex64 unit phases, seeded: frame t of any stream starts from column t % period."""
    angles = np.random.default_rng(0).random((n_bins, PHASE_PERIOD))
    return np.exp(2j * np.pi * angles).astype(np.complex64)


def _unit(spectrum: np.ndarray) -> np.ndarray:
    """The phases of a complex spectrogram as unit complex numbers (a zero bin stays 0)."""
    return spectrum / (np.abs(spectrum) + np.finfo(np.float32).tiny)


def is_mel_kmeans_dir(path: str | Path) -> bool:
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("codec_type") == CODEC_TYPE
    except (OSError, json.JSONDecodeError):
        return False
