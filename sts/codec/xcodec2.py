"""XCodec2 through transformers' `Xcodec2Model`: 16 kHz speech <-> one stream of 65,536 codes at 50/s.

    from sts.codec import XCodec2Codec
    codec = XCodec2Codec("HKUSTAudio/xcodec2-hf", device="cuda", dtype="bfloat16")   # or a local dir
    codes = codec.encode([wav_a, wav_b])        # [N_i] float32 16 kHz -> [T_i] int32, T_i = N_i // 320 + 1
    wavs = codec.decode(codes)                   # [T_i] -> [T_i * 320] float32

Code count. Like `Xcodec2FeatureExtractor`, a clip of N samples is extended by one zero sample
and rounded up to a multiple of the 320-sample hop, so it yields exactly `N // 320 + 1` codes
(10.0 s -> 501). The model's own `audio_codes_mask` counts `(N + 1) // 320`, one fewer whenever
N + 1 is not a multiple of 320, which drops the last, partly covered frame; we keep it, so a
clip's codes are the same whether it is encoded alone or in a batch.

Batching. `encode` sorts clips by length and batches neighbours (`batch_size`, at most
`max_batch_seconds` of padded audio). By default (`exact_batches=True`) only clips with the same
code count share a batch: their padded inputs are then the same as one by one, so the codes are
identical to one-by-one encoding (tested). With `exact_batches=False` neighbours of different
lengths share a batch too: the semantic encoder is masked, but the acoustic encoder's
convolutions and the semantic adapter see a shorter clip's zero padding near its end, so its last
frames can differ. Measured on the tiny random codec: 48 clips of 1-6 s in batches of 8, 98.4 % of
codes identical; 12 clips of 0.5-3 s in batches of 6 (four seeds), 96.2-98.6 %; every mismatch
within a clip's last 10 frames (0.2 s). `tests/test_codec.py` keeps that bound (>= 95 %, last
10 frames). Not yet measured on the real checkpoint (no hub access where this was written).

`decode` is exact: the decoder's GroupNorm and unmasked transformer mix every frame with every
other, so only clips with the same number of codes share a batch. The output has `T * 320` samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from sts.codec.base import Codec
from sts.codec.features import HOP, padded_length, xcodec2_inputs

DEFAULT_MODEL = "HKUSTAudio/xcodec2-hf"


class XCodec2Codec(Codec):
    """XCodec2 (transformers' port), batched with length bucketing."""

    sample_rate = 16000

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        max_batch_seconds: float = 240.0,
        exact_batches: bool = True,
    ):
        """
        Args:
            model: Hugging Face id or local directory of an `Xcodec2Model` checkpoint.
            device: torch device to run on ("cpu", "cuda", "cuda:1", ...).
            dtype: weights and activations dtype ("float32", "bfloat16", "float16").
            batch_size: most clips per forward pass.
            max_batch_seconds: most padded audio per forward pass, in seconds (bounds memory).
            exact_batches: batch only clips with the same code count, so every clip's codes equal
                its one-by-one encoding; False also batches neighbours of different lengths
                (fuller batches, last frames may differ; see the module docstring).
        """
        import torch
        from transformers import Xcodec2Model

        self.name = str(model)
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.model = Xcodec2Model.from_pretrained(model, dtype=self.dtype).to(self.device).eval()
        config = self.model.config
        if config.hop_length != HOP or config.sampling_rate != self.sample_rate:
            raise ValueError(
                f"{model}: expected hop {HOP} at 16 kHz, got hop {config.hop_length} at {config.sampling_rate}"
            )
        self.frame_rate = self.sample_rate / HOP
        self.codebook_size = int(np.prod(config.quantization_levels))
        self.batch_size = batch_size
        self.max_batch_samples = int(max_batch_seconds * self.sample_rate)
        self.exact_batches = exact_batches
        self._torchaudio_extractor = _torchaudio_feature_extractor()

    def num_codes(self, num_samples: int) -> int:
        return num_samples // HOP + 1

    def encode(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        waveforms = [_checked_waveform(w, i) for i, w in enumerate(waveforms)]
        codes: list[np.ndarray | None] = [None] * len(waveforms)
        for batch in self._batches([len(w) for w in waveforms]):
            inputs = self._model_inputs([waveforms[i] for i in batch])
            with torch.inference_mode():
                out = self.model.encode(**inputs)
            batch_codes = out.audio_codes[:, 0].cpu().numpy().astype(np.int32)  # [B, T_max]
            for row, i in enumerate(batch):
                codes[i] = batch_codes[row, : self.num_codes(len(waveforms[i]))].copy()
        return codes

    def decode(self, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        codes = [self._checked_codes(c, i) for i, c in enumerate(codes)]
        waveforms: list[np.ndarray | None] = [None] * len(codes)
        by_length: dict[int, list[int]] = {}
        for i, c in enumerate(codes):
            by_length.setdefault(len(c), []).append(i)
        for length, members in by_length.items():
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                stacked = torch.from_numpy(np.stack([codes[i] for i in batch]).astype(np.int64))
                with torch.inference_mode():
                    audio = self.model.decode(audio_codes=stacked[:, None].to(self.device)).audio_values
                audio = audio[:, 0, : length * HOP].float().cpu().numpy()
                for row, i in enumerate(batch):
                    waveforms[i] = audio[row].copy()
        return waveforms

    def _batches(self, lengths: list[int]) -> Iterator[list[int]]:
        """Indices of clips in length order, cut into batches bounded by count and padded samples."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        batch: list[int] = []
        for i in order:
            if batch:
                longest = padded_length(lengths[batch[0]])
                full = len(batch) == self.batch_size or longest * (len(batch) + 1) > self.max_batch_samples
                if full or (self.exact_batches and padded_length(lengths[i]) != longest):
                    yield batch
                    batch = []
            batch.append(i)
        if batch:
            yield batch

    def _model_inputs(self, waveforms: list[np.ndarray]) -> dict:
        import torch

        if self._torchaudio_extractor is not None:
            inputs = self._torchaudio_extractor(
                waveforms, sampling_rate=self.sample_rate, return_tensors="pt"
            )
            names = ("input_values", "padding_mask", "input_features", "input_features_mask")
            arrays = [inputs[name] for name in names]
        else:
            arrays = [torch.from_numpy(a) for a in xcodec2_inputs(waveforms)]
        values, padding_mask, features, features_mask = arrays
        return {
            "input_values": values.to(self.device, self.dtype),
            "padding_mask": padding_mask.to(self.device),
            "input_features": features.to(self.device, self.dtype),
            "input_features_mask": features_mask.to(self.device),
        }

    def _checked_codes(self, codes: np.ndarray, index: int) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 1 or len(codes) == 0 or codes.dtype.kind not in "iu":
            raise ValueError(
                f"codes #{index}: expected a non-empty 1-D integer array, got {codes.dtype} {codes.shape}"
            )
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(
                f"codes #{index}: values must lie in [0, {self.codebook_size}), got [{codes.min()}, {codes.max()}]"
            )
        return codes


def _checked_waveform(waveform: np.ndarray, index: int) -> np.ndarray:
    waveform = np.asarray(waveform)
    if waveform.ndim != 1 or len(waveform) == 0 or waveform.dtype.kind != "f":
        raise ValueError(
            f"waveform #{index}: expected a non-empty 1-D float array, got {waveform.dtype} {waveform.shape}"
        )
    if not np.isfinite(waveform).all():
        raise ValueError(f"waveform #{index}: contains NaN or infinite samples")
    return waveform.astype(np.float32, copy=False)


def _torchaudio_feature_extractor():
    """XCodec2's own feature extractor when torchaudio imports, else None (use the numpy path)."""
    try:
        import torchaudio  # noqa: F401
        from transformers import Xcodec2FeatureExtractor
    except Exception:  # a missing or broken torchaudio: several error types
        return None
    return Xcodec2FeatureExtractor()
