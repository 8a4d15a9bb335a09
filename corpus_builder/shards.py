"""Shard files of a corpus folder: atomic Parquet writes, done-markers, settings, locks, and the cards.

Layout of `OUT_DIR` (see `sts.corpus` for what readers rely on):

    README.md                                 dataset card (`datasets` reads its YAML front matter)
    corpus.json                               the card, summed over every stats file present
    data/part-00000-of-00004-000012.parquet   rows of chunk 12 of worker 0 of 4
    drops/part-00000-of-00004-000012.parquet  the rows chunk 12 dropped, with reason and evidence
    .progress/part-00000-of-00004-000012.json that chunk's stats; its presence marks the chunk done
    .progress/layout.json                     the settings the folder was built with (`check_settings`)
    .progress/lock-00000-of-00004             held (flock) by the live builder of worker 0 of 4

A chunk is written as `.NAME.tmp-PID-HOST` (hidden, not ending in .parquet) and renamed; its stats
file is written (atomically) after the rename. A chunk counts as done only when its stats file
exists and covers at least the source rows this run puts into the chunk (`is_done`), so a run killed
between the two redoes the chunk and overwrites the same file name, and a chunk that a `--max-rows`
trial cut short is redone by a later run that reads further: no row is ever lost or written twice.
A chunk whose rows were all dropped has a stats file and no Parquet file.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from corpus_builder.card import dataset_readme
from sts.corpus import (
    CARD_NAME,
    DROPS_DIR,
    README_NAME,
    SHARD_GLOB,
    CorpusError,
    drop_features,
    duration_ratios,
    record_matches,
    shard_dir,
    shard_paths,
    shard_record,
)
from sts.io import atomic_open, remove_stale_temps, write_json_atomic, write_text_atomic
from sts.lock import folder_lock

PROGRESS_DIR = ".progress"
LAYOUT_FILE = "layout.json"
FIXED_SETTINGS = ("num_shards", "rows_per_shard")
"""Settings that name the chunks: changing them would put the same rows under new names."""


DESCRIPTIONS = {
    "parallel": "Synthetic parallel ja<->en speech corpus made by sts-build-corpus",
    "monolingual": "Monolingual speech corpus (speech with its transcript, no translation side: "
    "asr/tts rows) made by sts-build-corpus --mt none",
    "mixed": "Speech corpus of parallel ja<->en rows and monolingual rows (no translation side) "
    "made by sts-build-corpus",
    "empty": "Speech corpus made by sts-build-corpus (no rows yet)",
}
"""The card's one-line description, by `summarize`'s `kind`."""


class SettingsChangedError(CorpusError):
    """A rerun whose settings differ from those the folder was built with."""


def chunk_name(shard_index: int, num_shards: int, chunk: int) -> str:
    return f"{worker_prefix(shard_index, num_shards)}{chunk:06d}"


def worker_prefix(shard_index: int, num_shards: int) -> str:
    """What the names of worker `shard_index`'s chunks start with."""
    return f"part-{shard_index:05d}-of-{num_shards:05d}-"


def chunk_path(out_dir: Path, name: str) -> Path:
    return shard_dir(out_dir) / f"{name}.parquet"


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file under a hidden temp name in the same folder, then rename it into place."""
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


def remove_leftovers(out_dir: Path, prefix: str) -> list[Path]:
    """What killed runs left in the folder: this worker's temp chunks and stats (`prefix`), whoever
    wrote them, and any other temp file whose writer is gone (`sts.io.remove_stale_temps`). Call only
    while holding this worker's `worker_lock`: then no live builder writes names with `prefix`."""
    removed = []
    for folder in dict.fromkeys([out_dir, shard_dir(out_dir), out_dir / DROPS_DIR, out_dir / PROGRESS_DIR]):
        removed += remove_stale_temps(folder, f"{prefix}*", any_writer=True)
        removed += remove_stale_temps(folder)
    return removed


@contextmanager
def worker_lock(out_dir: Path, shard_index: int, num_shards: int, *, wait: bool = False) -> Iterator[None]:
    """Hold `.progress/lock-{shard_index}-of-{num_shards}` (`sts.lock.folder_lock`) while building.

    One lock per worker, so the workers of a SLURM array still build one folder in parallel, but a
    second builder of the same worker cannot start (it would delete the first one's temp shard and
    write the same chunks). Raises `sts.lock.FolderLockedError` naming the holder (pid, host, start time), or
    waits for it with `wait`.
    """
    path = out_dir / PROGRESS_DIR / f"lock-{shard_index:05d}-of-{num_shards:05d}"
    refusal = (
        f"{out_dir}: another {{holder}} is building worker {shard_index} of {num_shards} in this folder; "
        "wait for it to finish, pass --wait-for-lock, or use another --shard-index"
    )
    with folder_lock(path, program="sts-build-corpus", refusal=refusal, wait=wait):
        yield


def check_settings(out_dir: Path, settings: dict, allow_changed: list[str] | tuple[str, ...] = ()) -> dict:
    """Record what the folder is built from; refuse a rerun with other settings. Returns the record.

    `settings`: what decides the rows (source, filters, MT, TTS, checks, and the chunking
    `FIXED_SETTINGS`), see `corpus_builder.build.build_settings`. A rerun with the same settings
    resumes; one that differs raises `SettingsChangedError` naming each difference, since its rows
    would be mixed with rows made differently under one card (a source file counts as the same when
    its content is, wherever it lies now). Keys in `allow_changed` may differ (e.g. `path` after rows
    were appended to the source): the record takes the new values. `FIXED_SETTINGS`
    never may: chunk k of a worker means "its source rows [k * rows_per_shard, (k + 1) *
    rows_per_shard)", so new values would put the same rows into new chunk names (duplicates). Keys
    the record lacks (a folder from an older version) are adopted. The check and the update happen
    under a folder-wide lock, so workers starting together agree.
    """
    path = out_dir / PROGRESS_DIR / LAYOUT_FILE
    unknown = sorted(set(allow_changed) - set(settings))
    if unknown:
        raise SettingsChangedError(
            f"--allow-changed {unknown}: not recorded settings; known: {sorted(settings)}"
        )
    with _settings_lock(out_dir):
        recorded = json.loads(path.read_text()) if path.exists() else {}
        differ = {
            k: (recorded[k], v) for k, v in settings.items() if k in recorded and not _same(recorded[k], v)
        }
        fixed = {k: d for k, d in differ.items() if k in FIXED_SETTINGS}
        if fixed:
            was = {k: old for k, (old, _) in fixed.items()}
            now = {k: new for k, (_, new) in fixed.items()}
            raise SettingsChangedError(
                f"{out_dir} was built with {was}, this run asks for {now}: resuming would duplicate rows; "
                "use the same values or a new folder"
            )
        refused = {k: d for k, d in differ.items() if k not in allow_changed}
        if refused:
            lines = "; ".join(f"{k}: {_show(old)} -> {_show(new)}" for k, (old, new) in refused.items())
            raise SettingsChangedError(
                f"{out_dir} was built with other settings ({lines}); rows made both ways would share one "
                "card. Use the same values or a new --out-dir, or, to change them on purpose (e.g. rows "
                f"appended to the source), pass --allow-changed {' '.join(refused)}"
            )
        merged = {**recorded, **settings}
        if merged != recorded:
            write_json_atomic(path, merged)
        return merged


def _same(recorded, value) -> bool:
    """Equal settings; a source file (`{"file", "sha256"}`) is the same when its content is."""
    if isinstance(recorded, dict) and isinstance(value, dict) and "sha256" in recorded and "sha256" in value:
        return recorded["sha256"] == value["sha256"]
    return recorded == value


def _show(value) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value.get('file')!r} (sha256 {value['sha256'][:12]})"
    return repr(value)


@contextmanager
def _settings_lock(out_dir: Path) -> Iterator[None]:
    path = out_dir / PROGRESS_DIR / "settings.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for milliseconds: always wait
        yield
    finally:
        os.close(fd)


def stats_path(out_dir: Path, name: str) -> Path:
    return out_dir / PROGRESS_DIR / f"{name}.json"


def read_stats(out_dir: Path, name: str) -> dict | None:
    """The chunk's stats, or None when it has none (not done)."""
    path = stats_path(out_dir, name)
    return json.loads(path.read_text()) if path.exists() else None


def is_done(out_dir: Path, name: str, source_rows: int | None = None) -> bool:
    """Whether chunk `name` is done for a run that puts `source_rows` source rows into it.

    Done: its stats file exists and counts at least that many input rows. A chunk that a
    `--max-rows` trial cut short counts fewer, so a run that reads further redoes it (the same file
    name, so nothing is duplicated). `source_rows` None: only the stats file is asked for.
    """
    stats = read_stats(out_dir, name)
    return stats is not None and (source_rows is None or stats["input_rows"] >= source_rows)


def write_chunk(
    out_dir: Path, name: str, rows: list[dict], features, stats: dict, drops: list[dict] | None = None
) -> None:
    """Write the chunk's rows (if any) as `data/NAME.parquet`, its dropped rows (if any) as
    `drops/NAME.parquet`, then its stats file (the done-marker).

    A redone chunk loses the earlier file of a kind it now has no rows for, so a rerun never leaves
    a row in both, nor one twice. The stats count the logged drops (`logged_drops`).
    """
    path = chunk_path(out_dir, name)
    if rows:
        write_table_atomic(pa.Table.from_pylist(rows, schema=features.arrow_schema), path)
        stats = {**stats, "file": shard_record(path)}  # what the card lists and later runs check
    else:
        path.unlink(missing_ok=True)
    log_path = drops_path(out_dir, name)
    if drops:
        write_table_atomic(pa.Table.from_pylist(drops, schema=drop_features().arrow_schema), log_path)
    else:
        log_path.unlink(missing_ok=True)
    write_json_atomic(stats_path(out_dir, name), {**stats, "logged_drops": len(drops or [])})


def drops_path(out_dir: Path, name: str) -> Path:
    return out_dir / DROPS_DIR / f"{name}.parquet"


def check_chunks(out_dir: Path, prefix: str) -> list[str]:
    """Check the files of the done chunks named `prefix*` against what their stats recorded.

    A missing one loses its stats file, so the build redoes its chunk; returns their names. Raises
    `CorpusError` naming every chunk file that is there but changed (rows, size or footer, see
    `sts.corpus.shard_record`): it was not written by this build, so it is not overwritten.
    """
    missing, changed = [], []
    for path in sorted((out_dir / PROGRESS_DIR).glob(f"{prefix}*.json")):
        record = json.loads(path.read_text()).get("file")
        if not record:  # no rows, or written by an older version
            continue
        shard = chunk_path(out_dir, path.stem)
        if not shard.is_file():
            missing.append(path.stem)
            path.unlink()
            continue
        now = shard_record(shard, checksum=False)
        if not record_matches(record, now):
            changed.append(
                f"{shard} ({', '.join(f'{k} {record.get(k)} -> {v}' for k, v in now.items() if record.get(k) != v)})"
            )
    if changed:
        raise CorpusError(
            f"{out_dir}: shard(s) changed since this build wrote them: {'; '.join(changed)}; restore them, "
            "or delete them to have this command build their chunks again"
        )
    return missing


def empty_stats() -> dict:
    return {"input_rows": 0, "rows": 0, "drops": {}, "seconds": {}, "unscored": {}}


def add_outcome(stats: dict, outcome) -> None:
    """Count one pipeline `Outcome` into a chunk's stats."""
    stats["input_rows"] += 1
    if outcome.row is None:
        stats["drops"][outcome.drop_reason] = stats["drops"].get(outcome.drop_reason, 0) + 1
        return
    stats["rows"] += 1
    for check in outcome.unscored:  # kept without a score from this check
        stats["unscored"][check] = stats["unscored"].get(check, 0) + 1
    # a monolingual row counts under its language alone ("ja"), a parallel one under its direction
    direction = f"{outcome.src_lang}-{outcome.tgt_lang}" if outcome.tgt_lang else outcome.src_lang
    seconds = stats["seconds"].setdefault(direction, {"rows": 0, "src": 0.0, "tgt": 0.0})
    seconds["rows"] += 1
    seconds["src"] += float(outcome.row["src_duration"])
    seconds["tgt"] += float(outcome.row["tgt_duration"] or 0.0)


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
    """Counts, hours per direction (parallel rows) and per language (`monolingual` rows, no translation
    side), drops by reason and kept rows a check could not score (`unscored`, by check name), summed
    over every done chunk in `out_dir`; `kind` says which rows there
    are: "parallel", "monolingual", "mixed" (both) or "empty". Also each shard's record (`shards`) and
    where the dropped rows are (`drop_log`)."""
    total = {"input_rows": 0, "rows": 0, "chunks": 0, "drops": {}, "unscored": {}, "directions": {},
             "monolingual": {}}  # fmt: skip
    logged = 0
    for path in sorted((out_dir / PROGRESS_DIR).glob("part-*.json")):
        stats = json.loads(path.read_text())
        total["chunks"] += 1
        total["input_rows"] += stats["input_rows"]
        total["rows"] += stats["rows"]
        logged += stats.get("logged_drops", 0)
        for reason, n in stats["drops"].items():
            total["drops"][reason] = total["drops"].get(reason, 0) + n
        for check, n in stats.get("unscored", {}).items():  # chunks written before it: none counted
            total["unscored"][check] = total["unscored"].get(check, 0) + n
        for direction, s in stats["seconds"].items():
            if "-" not in direction:  # a language: monolingual rows
                m = total["monolingual"].setdefault(direction, {"rows": 0, "hours": 0.0})
                m["rows"] += s["rows"]
                m["hours"] += s["src"] / 3600
                continue
            d = total["directions"].setdefault(direction, {"rows": 0, "src_hours": 0.0, "tgt_hours": 0.0})
            d["rows"] += s["rows"]
            d["src_hours"] += s["src"] / 3600
            d["tgt_hours"] += s["tgt"] / 3600
    kinds = [name for name, key in (("parallel", "directions"), ("monolingual", "monolingual")) if total[key]]
    total["kind"] = kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "empty")
    total["drops"] = dict(sorted(total["drops"].items(), key=lambda kv: -kv[1]))
    total["dropped"] = sum(total["drops"].values())
    total["shards"] = shard_list(out_dir)
    total["drop_log"] = {
        "path": f"{DROPS_DIR}/{SHARD_GLOB}",
        "rows": logged,
        "complete": logged == total["dropped"],  # False: chunks built before the log existed
        "columns": list(drop_features()),
    }
    return total


def shard_list(out_dir: Path) -> list[dict]:
    """The card's `shards`: each shard's path in the folder and, where a chunk's stats recorded it,
    its rows, size, footer hash and SHA-256 (`sts.corpus.shard_record`): what `sts-encode`,
    `sts-train` and a rebuild check (`sts.corpus.shard_problems`)."""
    entries = {}
    for path in sorted((out_dir / PROGRESS_DIR).glob("part-*.json")):
        record = json.loads(path.read_text()).get("file")
        if record:
            rel = chunk_path(out_dir, path.stem).relative_to(out_dir).as_posix()
            entries[rel] = {"path": rel, **record}
    for shard in shard_paths(out_dir):  # shards without a record (an older version wrote them)
        rel = shard.relative_to(out_dir).as_posix()
        entries.setdefault(rel, {"path": rel})
    return sorted(entries.values(), key=lambda e: e["path"])


def write_card(out_dir: Path, *, config: dict, models: dict, argv: list[str] | None = None) -> dict:
    """Write `corpus.json` and `README.md` (atomically) from the stats present now; returns the card."""
    summary = summarize(out_dir)
    card = {
        "description": DESCRIPTIONS[summary["kind"]],
        "features": "sts.corpus.corpus_features()",
        **summary,
        "duration_ratio": duration_ratios(shard_paths(out_dir)),
        "models": models,
        "versions": package_versions(),
        "command": argv if argv is not None else sys.argv,
        "cwd": os.getcwd(),  # where the command ran; the config's paths are absolute (sts.paths)
        "config": config,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    previous = out_dir / CARD_NAME
    if previous.exists():  # keep what sts-encode recorded
        old = json.loads(previous.read_text())
        if "encode" in old:
            card["encode"] = old["encode"]
            card["features"] = "sts.corpus.encoded_features()"
    save_card(out_dir, card)
    return card


def save_card(out_dir: Path, card: dict) -> None:
    """Write `card` as `corpus.json` and the `README.md` dataset card made from it."""

    write_json_atomic(out_dir / CARD_NAME, card)
    write_text_atomic(out_dir / README_NAME, dataset_readme(out_dir, card))
