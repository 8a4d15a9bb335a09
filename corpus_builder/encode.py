"""`sts-encode CORPUS_DIR`: add `src_codes` / `tgt_codes` (int32, 50 per second) to every corpus shard.

    sts-encode corpus/ja-en --codec HKUSTAudio/xcodec2-hf --device cuda --dtype bfloat16

    from corpus_builder.encode import EncodeConfig, encode_corpus
    for name, rows, skipped in encode_corpus(EncodeConfig(Path("corpus/ja-en"))): ...

Each shard (`sts.corpus.shard_paths`: `data/part-*.parquet`) is read, its audio decoded to 16 kHz (`sts.audio.load_audio`) and encoded
with `sts.codec` (the codec batches clips by length), and the shard is rewritten with the two code
columns and `encoded_features()` under a hidden temp name, then renamed over the original: a shard
is either the old one or the finished new one, never half. A rerun skips shards that already have
`src_codes`. The codec, frame rate, codebook size and batching go into `corpus.json` under "encode"
(`sts-train` checks them against the model's `sts_vocab.json`), and the `README.md` dataset card is
rewritten with the code columns in its features.

Batching is exact by default: a clip's codes equal its one-by-one encoding, whatever else is in the
shard (`--max-pad-ratio 0`). `--max-pad-ratio 0.1` batches clips within 10 % of each other's length,
fuller batches on a GPU at the price of ~2 changed codes in a padded clip's last 14 frames (measured in
`sts.codec.xcodec2`); the value is recorded, and a rerun with another value refuses to mix the two
unless `--reencode`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tyro

from corpus_builder import shards
from sts.audio import load_audio
from sts.config import parse_cli
from sts.corpus import encoded_features, shard_paths


@dataclass
class EncodeConfig:
    """Add XCodec2 codes to the shards of a corpus folder, in place and resumably."""

    corpus_dir: tyro.conf.Positional[Path]
    """Folder written by `sts-build-corpus`."""
    codec: str = "HKUSTAudio/xcodec2-hf"
    """HF id or local directory of the XCodec2 checkpoint."""
    device: str = "cpu"
    """Torch device."""
    dtype: str = "float32"
    """Codec dtype ("float32", "bfloat16", "float16")."""
    batch_size: int = 8
    """Most clips per codec forward pass (clips are bucketed by length)."""
    max_pad_ratio: float = 0.0
    """0: batch only clips of the same code count, so every clip's codes equal its one-by-one encoding
    (deterministic). Above 0: a clip joins a batch if at least `1 - max_pad_ratio` times as long as its
    longest clip (fuller batches; a padded clip's last ~14 frames may change, ~2 codes per clip on the
    tiny codec: see `sts.codec.xcodec2`). Recorded in corpus.json."""
    reencode: bool = False
    """Replace codes already in the shards (needed after changing the codec or `max_pad_ratio`)."""


def is_encoded(path: Path) -> bool:
    return "src_codes" in pq.read_schema(path).names


def encode_table(table: pa.Table, codec) -> pa.Table:
    """`table` with `src_codes` / `tgt_codes` (`[T] int32` per row) appended, typed by `encoded_features()`."""
    columns = {}
    for side in ("src", "tgt"):
        audio = table.column(f"{side}_audio").to_pylist()
        waveforms = [load_audio(a["bytes"], name=a.get("path") or side) for a in audio]
        columns[f"{side}_codes"] = [np.asarray(c, dtype=np.int32).tolist() for c in codec.encode(waveforms)]
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        row["src_codes"] = columns["src_codes"][i]
        row["tgt_codes"] = columns["tgt_codes"][i]
    return pa.Table.from_pylist(rows, schema=encoded_features().arrow_schema)


def encode_corpus(cfg: EncodeConfig, codec=None) -> Iterator[tuple[str, int, bool]]:
    """Encode every shard not yet encoded; yields (shard name, rows, skipped) per shard."""
    corpus_dir = Path(cfg.corpus_dir)
    paths = shard_paths(corpus_dir)
    if not paths and not (corpus_dir / shards.CARD_NAME).exists():
        raise FileNotFoundError(f"{corpus_dir}: no data/part-*.parquet shards and no corpus.json")
    recorded = recorded_codec(corpus_dir)
    wanted = codec.name if codec is not None else str(cfg.codec)
    if not cfg.reencode and recorded is not None and recorded != wanted and any(map(is_encoded, paths)):
        raise ValueError(
            f"{corpus_dir}: already encoded with {recorded!r}, not {wanted!r}; "
            "pass --reencode to replace the codes"
        )
    recorded_ratio = _encode_record(corpus_dir).get("max_pad_ratio")
    wanted_ratio = getattr(codec, "max_pad_ratio", None) if codec is not None else cfg.max_pad_ratio
    if (
        not cfg.reencode
        and None not in (recorded_ratio, wanted_ratio)
        and recorded_ratio != wanted_ratio
        and any(map(is_encoded, paths))
    ):
        raise ValueError(
            f"{corpus_dir}: already encoded with max_pad_ratio {recorded_ratio}, not {wanted_ratio}; pass "
            "the same --max-pad-ratio to finish it, or --reencode to replace the codes"
        )
    for path in paths:
        if is_encoded(path) and not cfg.reencode:
            yield path.name, pq.read_metadata(path).num_rows, True
            continue
        if codec is None:
            from sts.codec import load_codec

            codec = load_codec(
                cfg.codec,
                device=cfg.device,
                dtype=cfg.dtype,
                batch_size=cfg.batch_size,
                max_pad_ratio=cfg.max_pad_ratio,
            )
        table = encode_table(pq.read_table(path), codec)
        shards.write_table_atomic(table, path)
        yield path.name, table.num_rows, False
    if codec is not None:
        _record(corpus_dir, codec)


def recorded_codec(corpus_dir: Path) -> str | None:
    """The codec `corpus.json` says the shards were encoded with, or None."""
    return _encode_record(corpus_dir).get("codec")


def _encode_record(corpus_dir: Path) -> dict:
    card_path = corpus_dir / shards.CARD_NAME
    if not card_path.exists():
        return {}
    return json.loads(card_path.read_text()).get("encode", {})


def _record(corpus_dir: Path, codec) -> None:
    card_path = corpus_dir / shards.CARD_NAME
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card["encode"] = {
        "codec": codec.name,
        "frame_rate": codec.frame_rate,
        "codebook_size": codec.codebook_size,
        "sample_rate": codec.sample_rate,
        # batching: 0 = exact (codes independent of batch neighbours); None = the codec encodes clips one by one
        "max_pad_ratio": getattr(codec, "max_pad_ratio", None),
        "dtype": "int32",
        "columns": ["src_codes", "tgt_codes"],
    }
    card["features"] = "sts.corpus.encoded_features()"
    shards.save_card(corpus_dir, card)


def main(args: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from tqdm import tqdm

    cfg = parse_cli(EncodeConfig, args, prog="sts-encode")
    console = Console(stderr=True)
    encoded = skipped = rows = 0
    with tqdm(unit="shard", desc="encode", dynamic_ncols=True) as bar:
        for _name, n, was_done in encode_corpus(cfg):
            skipped += was_done
            encoded += not was_done
            rows += n
            bar.update(1)
            bar.set_postfix(rows=rows)
    console.print(f"{cfg.corpus_dir}: {encoded} shards encoded, {skipped} already done, {rows:,} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
