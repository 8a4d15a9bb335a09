"""Shard files of a corpus folder: atomic Parquet writes, done-markers, and the `corpus.json` card.

Layout of `OUT_DIR`:

    part-00000-of-00004-000012.parquet   rows of chunk 12 of worker 0 of 4 (datasets opens DIR/*.parquet)
    .progress/part-00000-of-00004-000012.json   that chunk's stats; its presence marks the chunk done
    corpus.json                          the card, summed over every stats file present

A chunk is written as `.NAME.tmp-PID` (hidden, not ending in .parquet) and renamed; its stats
file is written (atomically) after the rename. A chunk counts as done only when its stats file
exists, so a run killed between the two redoes the chunk and overwrites the same file name: no
row is ever lost or written twice. A chunk whose rows were all dropped has a stats file and no
Parquet file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sts.corpus import CARD_NAME, SHARD_GLOB, duration_ratios
from sts.io import write_json_atomic

PROGRESS_DIR = ".progress"


def chunk_name(shard_index: int, num_shards: int, chunk: int) -> str:
    return f"part-{shard_index:05d}-of-{num_shards:05d}-{chunk:06d}"


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file under a hidden temp name in the same folder, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(out_dir: Path, prefix: str) -> None:
    """Temp files a killed run of this worker left behind (only this worker writes names with `prefix`)."""
    for tmp in out_dir.glob(f".{prefix}*.tmp-*"):
        tmp.unlink(missing_ok=True)


def check_layout(out_dir: Path, layout: dict) -> None:
    """Record how the source is cut into chunks; refuse a rerun that would cut it differently.

    Chunk k of a worker means "its source rows [k * rows_per_shard, (k + 1) * rows_per_shard)", so a
    different `rows_per_shard` or `num_shards` would put the same rows into new chunk names: duplicates.
    """
    path = out_dir / PROGRESS_DIR / "layout.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != layout:
            raise ValueError(
                f"{out_dir} was built with {recorded}, this run asks for {layout}: "
                "resuming would duplicate rows; use the same values or a new folder"
            )
        return
    write_json_atomic(path, layout)


def stats_path(out_dir: Path, name: str) -> Path:
    return out_dir / PROGRESS_DIR / f"{name}.json"


def is_done(out_dir: Path, name: str) -> bool:
    return stats_path(out_dir, name).exists()


def write_chunk(out_dir: Path, name: str, rows: list[dict], features, stats: dict) -> None:
    """Write the chunk's rows (if any) as `NAME.parquet`, then its stats file (the done-marker)."""
    if rows:
        table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
        write_table_atomic(table, out_dir / f"{name}.parquet")
    write_json_atomic(stats_path(out_dir, name), stats)


def empty_stats() -> dict:
    return {"input_rows": 0, "rows": 0, "drops": {}, "seconds": {}}


def add_outcome(stats: dict, outcome) -> None:
    """Count one pipeline `Outcome` into a chunk's stats."""
    stats["input_rows"] += 1
    if outcome.row is None:
        stats["drops"][outcome.drop_reason] = stats["drops"].get(outcome.drop_reason, 0) + 1
        return
    stats["rows"] += 1
    direction = f"{outcome.src_lang}-{outcome.tgt_lang}"
    seconds = stats["seconds"].setdefault(direction, {"rows": 0, "src": 0.0, "tgt": 0.0})
    seconds["rows"] += 1
    seconds["src"] += float(outcome.row["src_duration"])
    seconds["tgt"] += float(outcome.row["tgt_duration"])


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("sts", "torch", "transformers", "datasets", "pyarrow", "soundfile", "vllm", "ray"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def summarize(out_dir: Path) -> dict:
    """Counts, hours per direction and drops by reason, summed over every done chunk in `out_dir`."""
    total = {"input_rows": 0, "rows": 0, "chunks": 0, "drops": {}, "directions": {}}
    for path in sorted((out_dir / PROGRESS_DIR).glob("part-*.json")):
        stats = json.loads(path.read_text())
        total["chunks"] += 1
        total["input_rows"] += stats["input_rows"]
        total["rows"] += stats["rows"]
        for reason, n in stats["drops"].items():
            total["drops"][reason] = total["drops"].get(reason, 0) + n
        for direction, s in stats["seconds"].items():
            d = total["directions"].setdefault(direction, {"rows": 0, "src_hours": 0.0, "tgt_hours": 0.0})
            d["rows"] += s["rows"]
            d["src_hours"] += s["src"] / 3600
            d["tgt_hours"] += s["tgt"] / 3600
    total["drops"] = dict(sorted(total["drops"].items(), key=lambda kv: -kv[1]))
    total["dropped"] = sum(total["drops"].values())
    total["shards"] = sorted(p.name for p in out_dir.glob(SHARD_GLOB))
    return total


def write_card(out_dir: Path, *, config: dict, models: dict, argv: list[str] | None = None) -> dict:
    """Write `corpus.json` (atomically) from the stats present now; returns it."""
    card = {
        "description": "Synthetic parallel ja<->en speech corpus made by sts-build-corpus",
        "features": "sts.corpus.corpus_features()",
        **summarize(out_dir),
        "duration_ratio": duration_ratios(sorted(out_dir.glob(SHARD_GLOB))),
        "models": models,
        "versions": package_versions(),
        "command": argv if argv is not None else sys.argv,
        "config": config,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    previous = out_dir / CARD_NAME
    if previous.exists():  # keep what sts-encode recorded
        old = json.loads(previous.read_text())
        if "encode" in old:
            card["encode"] = old["encode"]
    write_json_atomic(previous, card)
    return card
