"""The codec interface every stage talks to: waveforms in, int32 code arrays out, and back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from sts.codec.stream_decode import StreamDecoder, StreamSettings, stream_decoder


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
    stream_defaults: StreamSettings = StreamSettings()
    """Chunking of `stream_decoder` when no setting is given (`sts.codec.stream_decode`)."""

    @abstractmethod
    def encode(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Waveforms `[N_i]` float32 at `sample_rate` -> codes `[T_i]` int32, one array per clip."""

    @abstractmethod
    def decode(self, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Codes `[T_i]` int -> waveforms `[N_i]` float32 at `sample_rate`, one array per clip."""

    @abstractmethod
    def num_codes(self, num_samples: int) -> int:
        """Exact number of codes `encode` returns for a clip of `num_samples` samples."""

    def decode_window(self, codes: np.ndarray, *, start_frame: int) -> np.ndarray:
        """Codes `[T]` that begin at frame `start_frame` of a longer stream -> `[T * hop]` float32.

        The chunked decoder's one call into the codec. A codec whose decoding depends on where the
        frames lie in the stream (Griffin-Lim's initial phases) overrides it; the default decodes
        the window as a clip of its own.
        """
        return self.decode([np.asarray(codes)])[0]

    def stream_decoder(
        self,
        chunk_frames: int | None = None,
        left_context: int | None = None,
        lookahead: int | None = None,
        crossfade_frames: int | None = None,
    ) -> StreamDecoder:
        """A chunked decoder (`push(codes) -> audio`, `flush() -> audio`); settings not given come
        from `stream_defaults`. See `sts.codec.stream_decode` for how close it comes to `decode`."""
        return stream_decoder(
            self,
            self.stream_defaults,
            chunk_frames=chunk_frames,
            left_context=left_context,
            lookahead=lookahead,
            crossfade_frames=crossfade_frames,
        )
