"""The codec interface every stage talks to: waveforms in, int32 code arrays out, and back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class Codec(ABC):
    """A single-codebook speech codec.

    `encode` and `decode` take and return plain lists so that clips of different lengths never
    have to share a padded array outside the codec; batching, bucketing and padding masks are the
    implementation's business.
    """

    sample_rate: int
    """Waveform rate in Hz that `encode` expects and `decode` returns."""
    frame_rate: float
    """Codes per second of audio."""
    codebook_size: int
    """Number of distinct codes; every code lies in `[0, codebook_size)`."""
    name: str
    """What made the codes (a Hugging Face id or a local path), recorded in shard headers and cards."""

    @abstractmethod
    def encode(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Waveforms `[N_i]` float32 at `sample_rate` -> codes `[T_i]` int32, one array per clip."""

    @abstractmethod
    def decode(self, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Codes `[T_i]` int -> waveforms `[N_i]` float32 at `sample_rate`, one array per clip."""

    @abstractmethod
    def num_codes(self, num_samples: int) -> int:
        """Exact number of codes `encode` returns for a clip of `num_samples` samples."""
