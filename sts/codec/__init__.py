"""Speech codecs: waveforms <-> int32 code streams behind one interface (`Codec`), XCodec2 by default.

    from sts.codec import load_codec
    codec = load_codec("HKUSTAudio/xcodec2-hf", device="cuda")   # or a local checkpoint directory
    codes = codec.encode([wav])[0]      # [N] float32 16 kHz -> [N // 320 + 1] int32, 50 per second
    wav = codec.decode([codes])[0]      # -> [len(codes) * 320] float32
    decoder = codec.stream_decoder()    # chunked: decoder.push(new_codes) -> audio, decoder.flush() -> audio

Importing `sts.codec` loads neither torch nor transformers; `XCodec2Codec` loads them on first use.
"""

from __future__ import annotations

from pathlib import Path

from sts.codec.base import Codec
from sts.codec.stream_decode import StreamDecoder, StreamSettings
from sts.lazy import lazy_exports

_lazy, __getattr__ = lazy_exports(
    __name__, {"MelKMeansCodec": "sts.codec.melkmeans", "XCodec2Codec": "sts.codec.xcodec2"}
)
__all__ = ["Codec", "StreamDecoder", "StreamSettings", "load_codec", *_lazy]


def load_codec(name_or_path: str | Path, **kwargs) -> Codec:
    """The codec for a Hugging Face id or local checkpoint directory; `kwargs` go to its constructor.

    A directory written by `MelKMeansCodec.save` (the offline/demo codec, `sts-fit-codec`) loads as
    that; anything else as XCodec2 (`XCodec2Codec`: device, dtype, batch_size, ...). A local folder
    that does not exist or holds damaged files is a `sts.errors.ModelNotFoundError` /
    `CorruptFileError` naming it.
    """
    from sts.codec.melkmeans import MelKMeansCodec, is_mel_kmeans_dir
    from sts.model_files import check_model_files, resolve_model

    resolve_model(name_or_path, what="codec")  # ModelNotFoundError rather than the hub's repo-id message
    check_model_files(name_or_path)  # CorruptFileError naming a damaged config.json or weights file
    if is_mel_kmeans_dir(name_or_path):  # numpy on the CPU: device/dtype/batch settings don't apply
        return MelKMeansCodec.load(name_or_path)
    from sts.codec.xcodec2 import XCodec2Codec

    return XCodec2Codec(name_or_path, **kwargs)


def recorded_codebook_size(name_or_path: str | Path) -> int | None:
    """A local codec folder's codebook size from its config alone (no weights loaded): the offline
    codec's `codec.json` `codebook_size`, or XCodec2's `config.json` `quantization_levels` product;
    None for a hub id or a config that does not say."""
    import math

    from sts.codec.melkmeans import CONFIG_NAME as MEL_CONFIG
    from sts.io import read_json

    folder = Path(name_or_path).expanduser()
    if (folder / MEL_CONFIG).is_file():
        size = read_json(folder / MEL_CONFIG, what="the codec config").get("codebook_size")
        return int(size) if isinstance(size, int) else None
    if (folder / "config.json").is_file():
        levels = read_json(folder / "config.json", what="the codec config").get("quantization_levels")
        if isinstance(levels, list) and levels and all(isinstance(x, int) for x in levels):
            return math.prod(levels)
    return None
