"""XCodec2 through transformers' `Xcodec2Model`: 16 kHz speech <-> one stream of 65,536 codes at 50/s.

    from sts.codec import XCodec2Codec
    codec = XCodec2Codec("HKUSTAudio/xcodec2-hf", device="cuda")   # a hub id or a local directory
    codes = codec.encode([wav_a, wav_b])    # [N_i] float 16 kHz in [-1, 1] -> [T_i] int32, T_i = N_i // 320 + 1
    wavs = codec.decode(codes)              # [T_i] int -> [T_i * 320] float32

Code count. Like `Xcodec2FeatureExtractor`, a clip of N samples gets one zero sample appended and is
rounded up to a multiple of the 320-sample hop, and the model gives one code per hop: exactly
`N // 320 + 1` codes (10.0 s -> 501), whether the clip is encoded alone or in a batch. The model's
own `audio_codes_mask` counts `(N + 1) // 320`, which drops the last, partly covered frame; we keep
it, so a clip's codes are those of encoding it alone.

Batching. `encode` sorts clips by length and batches neighbours: at most `batch_size` clips and
`max_batch_seconds` of padded audio per forward pass. By default (`max_pad_ratio=0`) only clips with
the same code count share a batch: their padded inputs are identical in length, so every clip's codes
equal its one-by-one encoding exactly, whoever its batch neighbours are (tested: a 1.9 s and a 2.0 s
clip; measured below: 100 %). That is deterministic, but on a corpus of varied lengths most batches
then hold one clip or a few (a code count is 20 ms).

`max_pad_ratio > 0` (`sts-encode --max-pad-ratio 0.1`) opts into fuller batches: a clip joins a batch
if it is at least `1 - max_pad_ratio` times as long as the batch's longest, and a shorter clip's last
frames can then differ from its one-by-one codes: the semantic encoder is masked, but the
convolutions of the acoustic encoder and of the semantic adapter see the batch's padding where, alone,
they would see the clip's edge. Its pre-quantization latents move only in its last 14 frames (0.28 s,
the acoustic stack's receptive field, the same kernels in the full-size model), by the same amount
whether the padding is one hop or many. Measured on the tiny random codec, batches of 4 against
one-by-one encoding (`python benchmarks/codec_batch_agreement.py --tiny`, 2026-11-30): 48 clips of
1-4 s (3 seeds) keep 98.83 % of their codes with `max_pad_ratio=0.1` (and with 1.0), 100 % outside
their last 13 frames; 16 clips of 5-10 s keep 99.65 % (99.60 % with 1.0), 100 % outside the last 13.
Mismatch rate by position from the end, last frame first, at 0.1: 1-4 s 42, 27, 17, 10, 15, 17, 4, 6,
4, 0, 0, 2, 0 ... %; 5-10 s 38, 38, 25, 12, 0, 12, 0, 6, 0 ... %. That is ~2 codes per padded clip: a
10 s clip keeps ~99.5 %. (Random weights: the trained codec's rate may differ, its 14-frame reach does
not; an earlier run also saw one flip at an FSQ rounding boundary outside the tail in 5,400 codes.)
Exactness is measured on CPU; GPU kernels may round differently for different batch sizes.

Decoding is exact: the decoder's GroupNorm and unmasked transformer mix all frames of a clip, so
only clips with the same code count share a batch (and the chunked decoder of `sts.codec.stream_decode`,
which decodes overlapping windows, only approximates `decode`: measured there). T codes decode to
exactly `T * 320` samples (the ISTFT head gives `(T - 1) * 320 + n_fft - 2 * (n_fft - 320) / 2`).

Semantic features come from `Xcodec2FeatureExtractor` when torchaudio imports and otherwise from
`sts.codec.features` (the same kaldi fbank in plain torch, on the codec's device; within 5e-5).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from sts.codec.base import Codec
from sts.codec.features import HOP, padded_length, xcodec2_inputs
from sts.codec.stream_decode import StreamSettings
from sts.errors import UsageError

DEFAULT_MODEL = "HKUSTAudio/xcodec2-hf"


class XCodec2Codec(Codec):
    """XCodec2 (transformers' port), batched by length."""

    sample_rate = 16000
    hop_length = HOP
    """Samples per code."""
    stream_defaults = StreamSettings(chunk_frames=25, left_context=150, lookahead=10, crossfade_frames=2)
    """Chunked decoding (`sts.codec.stream_decode`): 3 s of left context, as users of the trained codec
    report needing; the decoder mixes every frame, so the joined chunks only approximate `decode`."""

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 8,
        max_batch_seconds: float = 240.0,
        max_pad_ratio: float = 0.0,
    ):
        """
        Args:
            model: Hugging Face id or local directory of an `Xcodec2Model` checkpoint.
            device: where the model runs ("cpu", "cuda", "cuda:1", ...).
            dtype: weights' and activations' dtype; float32 is the reference, bfloat16 halves memory
                (codes may then differ where a latent lies near an FSQ rounding boundary).
            batch_size: most clips per forward pass.
            max_batch_seconds: most padded audio per forward pass, in seconds (bounds memory).
            max_pad_ratio: 0 (the default) batches only clips with the same code count, whose codes
                then equal their one-by-one encoding exactly; above 0 a clip joins a batch if it is at
                least `1 - max_pad_ratio` times as long as the batch's longest (fuller batches; a
                padded clip's last ~14 frames can differ, ~2 codes per clip: see the module docstring).
        """
        from transformers import Xcodec2Model

        if batch_size < 1 or max_batch_seconds <= 0 or not 0 <= max_pad_ratio <= 1:
            raise UsageError(
                f"need batch_size >= 1, max_batch_seconds > 0 and 0 <= max_pad_ratio <= 1, got "
                f"{batch_size}, {max_batch_seconds}, {max_pad_ratio}"
            )
        self.name = str(model)
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.model = Xcodec2Model.from_pretrained(model, dtype=self.dtype).to(self.device).eval()
        config = self.model.config
        if config.hop_length != HOP or config.sampling_rate != self.sample_rate:
            raise UsageError(
                f"{model}: expected hop {HOP} at {self.sample_rate} Hz, "
                f"got hop {config.hop_length} at {config.sampling_rate} Hz"
            )
        self.frame_rate = self.sample_rate / HOP
        self.codebook_size = int(np.prod(config.quantization_levels))
        self.batch_size = batch_size
        self.max_batch_samples = int(max_batch_seconds * self.sample_rate)
        self.max_pad_ratio = max_pad_ratio
        self._torchaudio_extractor = _torchaudio_feature_extractor()

    def __repr__(self) -> str:
        return f"XCodec2Codec({self.name!r}, device={str(self.device)!r}, dtype={self.dtype})"

    def num_codes(self, num_samples: int) -> int:
        return num_samples // HOP + 1

    @torch.inference_mode()
    def encode(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Clips `[N_i]` float at 16 kHz -> codes `[N_i // 320 + 1]` int32, in input order."""
        waveforms = [_checked_waveform(w, i) for i, w in enumerate(_as_list(waveforms, "waveforms"))]
        codes: list[np.ndarray] = [np.empty(0, np.int32)] * len(waveforms)
        lengths = [padded_length(len(w)) for w in waveforms]
        for batch in self._batches(lengths, self.max_pad_ratio):
            inputs = self._model_inputs([waveforms[i] for i in batch])
            batch_codes = self.model.encode(**inputs).audio_codes[:, 0].cpu().numpy()  # [B, T_max]
            for row, i in enumerate(batch):
                codes[i] = batch_codes[row, : self.num_codes(len(waveforms[i]))].astype(np.int32)
        return codes

    @torch.inference_mode()
    def decode(self, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Codes `[T_i]` int in `[0, codebook_size)` -> waveforms `[T_i * 320]` float32 at 16 kHz."""
        codes = [self._checked_codes(c, i) for i, c in enumerate(_as_list(codes, "codes"))]
        waveforms: list[np.ndarray] = [np.empty(0, np.float32)] * len(codes)
        for batch in self._batches([len(c) * HOP for c in codes], max_pad_ratio=0.0):
            num_frames = len(codes[batch[0]])
            stacked = torch.from_numpy(np.stack([codes[i] for i in batch]).astype(np.int64))  # [B, T]
            audio = self.model.decode(audio_codes=stacked[:, None].to(self.device)).audio_values
            audio = audio[:, 0, : num_frames * HOP].float().cpu().numpy()  # [B, T * 320]
            for row, i in enumerate(batch):
                waveforms[i] = audio[row]
        return waveforms

    def _batches(self, lengths: list[int], max_pad_ratio: float) -> Iterator[list[int]]:
        """Clip indices, longest first, cut into batches by count, padded samples and padding ratio."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep input order
        batch: list[int] = []
        for i in order:
            if batch:
                longest = lengths[batch[0]]
                if (
                    len(batch) == self.batch_size
                    or longest * (len(batch) + 1) > self.max_batch_samples
                    or lengths[i] < (1 - max_pad_ratio) * longest
                ):
                    yield batch
                    batch = []
            batch.append(i)
        if batch:
            yield batch

    def _model_inputs(self, waveforms: list[np.ndarray]) -> dict[str, torch.Tensor]:
        if self._torchaudio_extractor is not None:
            inputs = dict(
                self._torchaudio_extractor(
                    waveforms, sampling_rate=self.sample_rate, return_tensors="pt", device=str(self.device)
                )
            )
        else:
            inputs = xcodec2_inputs(waveforms, device=self.device)
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        for name in ("input_values", "input_features"):
            inputs[name] = inputs[name].to(self.dtype)
        return inputs

    def _checked_codes(self, codes: np.ndarray, index: int) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 1 or len(codes) == 0 or codes.dtype.kind not in "iu":
            raise ValueError(
                f"codes #{index}: expected a non-empty 1-D integer array, got {codes.dtype} {codes.shape}"
            )
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(
                f"codes #{index}: values must lie in [0, {self.codebook_size}), "
                f"got [{codes.min()}, {codes.max()}]"
            )
        return codes


def _as_list(items: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    if isinstance(items, np.ndarray | torch.Tensor):  # a lone clip would be iterated sample by sample
        raise TypeError(f"{what}: pass a list of 1-D arrays (one per clip), got one {type(items).__name__}")
    return list(items)


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
    """XCodec2's own feature extractor when torchaudio imports, else None (use `sts.codec.features`)."""
    try:
        import torchaudio  # noqa: F401
        from transformers import Xcodec2FeatureExtractor
    except Exception:  # missing, or installed beside an incompatible torch: several error types
        return None
    return Xcodec2FeatureExtractor()
