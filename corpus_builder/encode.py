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

A monolingual row (`sts.corpus`: no `tgt_lang`) gets `src_codes` and a null `tgt_codes`: it has no
target, which is not a bad clip. A bad clip (undecodable, empty, NaN/inf samples:
`sts.audio.AudioError`) does not stop the run: its row stays, with null codes on that side
(`sts-train` skips a task that needs the missing side and counts it as `skipped_missing_side`), and `corpus.json`'s "encode" section lists it under
`bad_clips` ({shard, id, side, reason}; `skipped_clips` counts them), recorded as each shard is
written. The shard counts as encoded, so a rerun goes past it. `--fail-fast` stops at the first bad
clip instead (one line naming the shard, row id and side; exit 2).

Batching is exact by default: a clip's codes equal its one-by-one encoding, whatever else is in the
shard (`--max-pad-ratio 0`). `--max-pad-ratio 0.1` batches clips within 10 % of each other's length,
fuller batches on a GPU at the price of ~2 changed codes in a padded clip's last 14 frames (measured in
`sts.codec.xcodec2`); the value is recorded, and a rerun with another value refuses to mix the two
unless `--reencode`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tyro
from annotated_types import Interval

from corpus_builder import shards
from sts.audio import DEFAULT_MAX_AUDIO_SECONDS, AudioError, load_audio
from sts.corpus import (
    CorpusError,
    check_shards,
    encoded_features,
    read_card,
    shard_dir,
    shard_paths,
    shard_record,
)
from sts.devices import BatchSize, DeviceArgs, DType
from sts.io import remove_stale_temps, write_bytes_atomic, write_json_atomic
from sts.lock import folder_lock
from sts.paths import record_path, resolve_recorded, same_location


@dataclass(kw_only=True)
class EncodeConfig(DeviceArgs):
    """Add XCodec2 codes to the shards of a corpus folder, in place and resumably."""

    corpus_dir: tyro.conf.Positional[Path] = field(kw_only=False)
    """Folder written by `sts-build-corpus`."""
    codec: str = "HKUSTAudio/xcodec2-hf"
    """HF id or local directory of the XCodec2 checkpoint."""
    dtype: DType = "float32"
    """Codec dtype (float32: codes that do not depend on the GPU; bfloat16, float16, auto)."""
    batch_size: BatchSize = 8
    """Most clips per codec forward pass (clips are bucketed by length)."""
    max_pad_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.0
    """0: batch only clips of the same code count, so every clip's codes equal its one-by-one encoding
    (deterministic). Above 0: a clip joins a batch if at least `1 - max_pad_ratio` times as long as its
    longest clip (fuller batches; a padded clip's last ~14 frames may change, ~2 codes per clip on the
    tiny codec: see `sts.codec.xcodec2`). Recorded in corpus.json."""
    reencode: bool = False
    """Replace codes already in the shards (needed after changing the codec or `max_pad_ratio`)."""
    fail_fast: bool = False
    """Stop at the first bad clip (undecodable, empty, NaN) instead of leaving its codes null and
    listing it in corpus.json (`encode.bad_clips`)."""


REMEDY = (
    "restore the shard, or rerun the sts-build-corpus command that made the folder (it builds missing "
    "chunks again; delete a changed shard first)"
)


def is_encoded(path: Path) -> bool:
    return "src_codes" in read_schema(path).names


def read_schema(path: Path) -> pa.Schema:
    """The Parquet schema of a shard; a file that is not Parquet is a `CorpusError` naming it."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as err:  # pyarrow's message names no file
        raise CorpusError(f"{path}: not a readable Parquet shard ({err})") from err


def encode_table(
    table: pa.Table,
    codec,
    *,
    shard: str = "",
    fail_fast: bool = False,
    max_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS,
) -> tuple[pa.Table, list[dict]]:
    """`table` with `src_codes` / `tgt_codes` (`[T] int32` per row) appended, typed by `encoded_features()`,
    and the bad clips: [{"shard", "id", "side", "reason"}], whose codes are null.

    A clip that `sts.audio.load_audio` refuses (`AudioError`: undecodable, or longer than
    `max_seconds` or bigger once decoded as its header says, checked before decoding) is a bad clip;
    with `fail_fast` it raises `CorpusError` naming the shard, row id and side instead.
    """
    ids = [str(i) for i in table.column("id").to_pylist()] if "id" in table.column_names else []
    # a monolingual row (no tgt_lang) has no target to encode: its null tgt_codes are not a bad clip
    mono = (
        [lang is None for lang in table.column("tgt_lang").to_pylist()]
        if "tgt_lang" in table.column_names
        else []
    )
    columns, bad = {}, []
    for side in ("src", "tgt"):
        audio = table.column(f"{side}_audio").to_pylist()
        waveforms: list = []
        for row, a in enumerate(audio):
            row_id = ids[row] if ids else str(row)
            if side == "tgt" and mono and mono[row] and not a:
                waveforms.append(None)
                continue
            try:
                if not a or not a.get("bytes"):
                    raise AudioError(f"{row_id}: {side}_audio holds no bytes")
                waveforms.append(
                    load_audio(
                        a["bytes"], name=a.get("path") or f"{row_id} ({side})", max_seconds=max_seconds
                    )
                )
            except AudioError as err:
                if fail_fast:
                    raise CorpusError(f"{shard}: row {row_id}, {side}_audio: {err}") from err
                waveforms.append(None)
                bad.append({"shard": shard, "id": row_id, "side": side, "reason": str(err)})
        good = [i for i, w in enumerate(waveforms) if w is not None]
        codes: list = [None] * len(waveforms)
        for i, c in zip(good, codec.encode([waveforms[i] for i in good]) if good else [], strict=True):
            codes[i] = np.asarray(c, dtype=np.int32).tolist()
        columns[f"{side}_codes"] = codes
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        row["src_codes"] = columns["src_codes"][i]
        row["tgt_codes"] = columns["tgt_codes"][i]
    return pa.Table.from_pylist(rows, schema=encoded_features().arrow_schema), bad


def encode_corpus(cfg: EncodeConfig, codec=None) -> Iterator[tuple[str, int, bool]]:
    """Encode every shard not yet encoded; yields (shard name, rows, skipped) per shard.

    The folder and its encode record are checked when this is called (a `CorpusError` before any
    shard is touched or progress shown, a `sts.lock.FolderLockedError` when another sts-encode runs
    on the folder), the shards as the iterator is consumed, which holds the folder's encode lock
    (`.progress/lock-encode`) and first removes the temp shards of a killed run.
    """
    paths = _check_encode(cfg, codec)
    with _encode_lock(cfg.corpus_dir):  # refuse now, before any progress is shown
        pass
    return _encode_locked(cfg, codec, paths)


def _encode_lock(corpus_dir: Path):
    refusal = "{folder}: another {holder} is encoding this corpus; wait for it to end"
    return folder_lock(
        Path(corpus_dir) / shards.PROGRESS_DIR / "lock-encode", program="sts-encode", refusal=refusal
    )


def _encode_locked(cfg: EncodeConfig, codec, paths: list[Path]) -> Iterator[tuple[str, int, bool]]:
    with _encode_lock(cfg.corpus_dir):
        for folder in dict.fromkeys([Path(cfg.corpus_dir), shard_dir(cfg.corpus_dir)]):
            remove_stale_temps(folder)  # a killed run's full-size temp shard (gone writers only)
        yield from _encode_shards(cfg, codec, paths)


def _check_encode(cfg: EncodeConfig, codec) -> list[Path]:
    """The shards of `cfg.corpus_dir`, after refusing a missing folder or a rerun that would mix codecs."""
    corpus_dir = Path(cfg.corpus_dir)
    if not corpus_dir.is_dir():
        raise CorpusError(f"{corpus_dir}: no such corpus folder")
    paths = shard_paths(corpus_dir)
    if not paths and not (corpus_dir / shards.CARD_NAME).exists():
        raise CorpusError(f"{corpus_dir}: no data/part-*.parquet shards and no corpus.json")
    check_shards(corpus_dir, remedy=REMEDY)  # a missing or changed shard, before any is touched
    recorded = recorded_codec(corpus_dir)
    wanted = codec.name if codec is not None else str(cfg.codec)
    if (
        not cfg.reencode
        and recorded is not None
        and not same_location(recorded, wanted)
        and any(map(is_encoded, paths))
    ):
        raise CorpusError(
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
        raise CorpusError(
            f"{corpus_dir}: already encoded with max_pad_ratio {recorded_ratio}, not {wanted_ratio}; pass "
            "the same --max-pad-ratio to finish it, or --reencode to replace the codes"
        )
    if codec is None and (cfg.reencode or not all(map(is_encoded, paths))):
        from sts.model_files import resolve_model

        resolve_model(cfg.codec, what="codec")  # a missing codec folder, before any shard is read
    return paths


def _encode_shards(cfg: EncodeConfig, codec, paths: list[Path]) -> Iterator[tuple[str, int, bool]]:
    corpus_dir = Path(cfg.corpus_dir)
    for path in paths:
        if is_encoded(path) and not cfg.reencode:
            entry = _card_entry(corpus_dir, path)
            if isinstance(entry.get("next"), dict):  # killed after its rename: make the new record final
                _record_shard(corpus_dir, path, shard_record(path))
            yield path.name, pq.read_metadata(path).num_rows, True
            continue
        if codec is None:
            from sts.codec import load_codec

            codec = load_codec(
                cfg.codec,
                device=cfg.torch_device(),
                dtype=cfg.torch_dtype(),
                batch_size=cfg.batch_size,
                max_pad_ratio=cfg.max_pad_ratio,
            )
        entry = _card_entry(corpus_dir, path)
        if entry.get("sha256") and shard_record(path)["sha256"] != entry["sha256"]:  # it reads it all anyway
            raise CorpusError(
                f"{path}: its content is not what corpus.json records (sha256 differs); {REMEDY}"
            )
        try:
            source = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise CorpusError(f"{path}: not a readable Parquet shard ({err})") from err
        table, bad = encode_table(source, codec, shard=path.name, fail_fast=cfg.fail_fast)
        data = _parquet_bytes(table)
        record = shard_record(data)
        _record_shard(corpus_dir, path, {"next": record})  # a kill before the rename below is still whole
        write_bytes_atomic(path, data)
        _record_shard(corpus_dir, path, record, bad=bad)
        yield path.name, table.num_rows, False
    if codec is not None:
        _record(corpus_dir, codec)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _card_entry(corpus_dir: Path, path: Path) -> dict:
    rel = path.relative_to(corpus_dir).as_posix()
    entries = read_card(corpus_dir).get("shards", [])
    return next((e for e in entries if isinstance(e, dict) and e.get("path") == rel), {})


def _record_shard(corpus_dir: Path, path: Path, record: dict, *, bad: list[dict] | None = None) -> None:
    """Record the shard `path` as `record` (rows, bytes, footer, sha256; or {"next": ...} before the
    new file is renamed into place) in corpus.json's `shards` and in the builder's stats file of its
    chunk, and (`bad`) replace its entries in `encode.bad_clips`."""
    rel = path.relative_to(corpus_dir).as_posix()
    stats = corpus_dir / shards.PROGRESS_DIR / f"{path.stem}.json"
    if stats.is_file():
        chunk = json.loads(stats.read_text())
        if "next" in record:
            chunk["file"] = {**chunk.get("file", {}), **record}
        else:
            chunk["file"] = record
        write_json_atomic(stats, chunk)
    card_path = corpus_dir / shards.CARD_NAME
    card = read_card(corpus_dir) if card_path.exists() else {}
    entries = [e if isinstance(e, dict) else {"path": str(e)} for e in card.get("shards", [])]
    old = next((e for e in entries if e.get("path") == rel), None)
    new = {"path": rel, **(old or {}), **record} if "next" in record else {"path": rel, **record}
    card["shards"] = sorted([e for e in entries if e.get("path") != rel] + [new], key=lambda e: e["path"])
    if bad is not None:
        encode = card.setdefault("encode", {})
        kept = [b for b in encode.get("bad_clips", []) if b.get("shard") != path.name]
        encode["bad_clips"] = kept + bad
        encode["skipped_clips"] = len(encode["bad_clips"])
    write_json_atomic(card_path, card)


def recorded_codec(corpus_dir: Path) -> str | None:
    """The codec `corpus.json` says the shards were encoded with, or None: a hub id, or a local path
    made absolute (it is recorded relative to the corpus folder, `sts.paths`)."""
    return resolve_recorded(_encode_record(corpus_dir).get("codec"), corpus_dir)


def _encode_record(corpus_dir: Path) -> dict:
    record = read_card(corpus_dir).get("encode", {})
    return record if isinstance(record, dict) else {}


def bad_clips(corpus_dir: Path) -> list[dict]:
    """The clips `sts-encode` could not decode: [{"shard", "id", "side", "reason"}] (corpus.json)."""
    return list(_encode_record(corpus_dir).get("bad_clips", []))


def _record(corpus_dir: Path, codec) -> None:
    card_path = corpus_dir / shards.CARD_NAME
    card = read_card(corpus_dir) if card_path.exists() else {}
    bad = card.get("encode", {}).get("bad_clips", [])
    card["encode"] = {
        "codec": record_path(
            codec.name, corpus_dir
        ),  # a local folder relative to this card: found from anywhere
        "frame_rate": codec.frame_rate,
        "codebook_size": codec.codebook_size,
        "sample_rate": codec.sample_rate,
        # batching: 0 = exact (codes independent of batch neighbours); None = the codec encodes clips one by one
        "max_pad_ratio": getattr(codec, "max_pad_ratio", None),
        "dtype": "int32",
        "columns": ["src_codes", "tgt_codes"],
        # clips that could not be decoded: their codes are null (sts-train: skipped_missing_side)
        "skipped_clips": len(bad),
        "bad_clips": bad,
    }
    card["features"] = "sts.corpus.encoded_features()"
    shards.save_card(corpus_dir, card)
