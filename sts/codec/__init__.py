"""Speech codecs: waveforms <-> int32 code streams (`Codec`), XCodec2 by default.

from sts.codec import load_codec
codec = load_codec("HKUSTAudio/xcodec2-hf", device="cuda")
codes = codec.encode([wav])[0]          # [T] int32, 50 per second
"""

from __future__ import annotations

from sts.codec.base import Codec

__all__ = ["Codec", "XCodec2Codec", "load_codec"]


def __getattr__(name: str):
    # Lazy: `import sts.codec` must not import torch/transformers.
    if name == "XCodec2Codec":
        from sts.codec.xcodec2 import XCodec2Codec

        return XCodec2Codec
    raise AttributeError(f"module 'sts.codec' has no attribute {name!r}")


def load_codec(name_or_path: str, **kwargs) -> Codec:
    """The codec for a Hugging Face id or local directory (XCodec2 is the only one so far)."""
    from sts.codec.xcodec2 import XCodec2Codec

    return XCodec2Codec(name_or_path, **kwargs)
