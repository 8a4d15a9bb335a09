"""FLEURS (Conneau et al., 2022): n-way parallel read speech; ja_jp and en_us paired by sentence `id`.

    sts-eval --benchmark fleurs --direction ja-en --split test --max-items 100 --model runs/sft -o reports/fleurs
    sts-eval --benchmark fleurs --data-dir fleurs/ --direction en-ja ...      # a local copy

Layouts (read from `google/fleurs` and its loading script, and lhotse's `recipes/fleurs.py`):

- Original (the hub's `main` branch, streamed by default): `data/{config}/{split}.tsv` and
  `data/{config}/audio/{split}.tar.gz`, split one of train, dev, test. The tsv has no header and
  seven tab-separated columns: id, file name, raw transcription, normalized transcription,
  characters, number of samples, gender. The tar holds `{split}/{file name}`, 16 kHz mono wav.
  Several speakers read each sentence, so an id has several rows.
- Parquet (the hub's `refs/convert/parquet` branch, as the dataset viewer converted the loading
  script's output): `{config}/{split}/NNNN.parquet`, split one of train, validation, test, columns
  id, num_samples, path, audio {bytes, path}, transcription, raw_transcription, gender, lang_id,
  language, lang_group_id.

`--data-dir` takes either (the folder holding `{config}/`, or `data/{config}/`); the hub is read
with the real `datasets.load_dataset(..., streaming=True)` calls on `hf://datasets/google/fleurs/data`:
the tsv through the "csv" builder and the tar through the "webdataset" builder (audio kept as
bytes; `datasets` 5 decodes audio only through torchcodec). Only the target side's text is read
(its tsv or its Parquet rows), never its audio.

Each source recording is one item; its reference is the target language's raw transcription of the
same id (`raw_transcription`, as published S2TT/S2ST scores use the unnormalized text); its
transcript is its own raw transcription. A recording whose id the target split lacks is dropped
("no_target_sentence").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from infer.eval_items import EvalItem
from infer.testsets import TestSet, hub_errors, parse_direction
from sts.errors import UsageError

REPO = "google/fleurs"
HUB_DATA = f"hf://datasets/{REPO}/data"
"""The original layout on the hub (the `main` branch)."""
CONFIGS = {"ja": "ja_jp", "en": "en_us"}
TSV_COLUMNS = ("id", "file_name", "raw_transcription", "transcription", "characters", "num_samples", "gender")
TSV_SPLITS = {"test": "test", "dev": "dev", "validation": "dev", "train": "train"}
"""`--split` -> the original layout's file name."""
PARQUET_SPLITS = {"test": "test", "dev": "validation", "validation": "validation", "train": "train"}
"""`--split` -> the Parquet conversion's folder name."""
DIRECTIONS = ("ja-en", "en-ja")
TASKS = ("s2st", "s2tt", "asr")


def load(direction: str, split: str, max_items: int | None, data_dir=None) -> TestSet:
    src, tgt = parse_direction(direction, DIRECTIONS, "fleurs")
    if split not in TSV_SPLITS:
        raise UsageError(f"--benchmark fleurs: split {split!r} is not one of {sorted(TSV_SPLITS)}")
    if data_dir is not None:
        return _load(src, tgt, direction, split, max_items, data_dir)
    hint = "give --data-dir DIR with a local copy (its original or Parquet layout, see infer.testsets.fleurs)"
    with hub_errors(f"hub:{REPO}", hint):
        return _load(src, tgt, direction, split, max_items, None)


def _load(src: str, tgt: str, direction: str, split: str, max_items: int | None, data_dir) -> TestSet:
    layout, root = find_layout(data_dir, CONFIGS[src], split)
    if layout == "parquet":
        rows, targets = _parquet_rows(root, CONFIGS[src], split), _parquet_texts(root, CONFIGS[tgt], split)
        source = f"{root} (Parquet layout)"
    else:
        rows, targets = _tsv_rows(root, CONFIGS[src], split), _tsv_texts(root, CONFIGS[tgt], split)
        source = f"hub:{REPO} (original layout)" if data_dir is None else f"{root} (original layout)"
    items, dropped, wanted = [], {}, {}
    for row in rows:
        reference = targets.get(row["id"])
        if not reference:
            dropped["no_target_sentence"] = dropped.get("no_target_sentence", 0) + 1
            continue
        stem = Path(row["file_name"]).stem
        item = EvalItem(
            id=f"{row['id']}-{stem}",
            src_lang=src,
            tgt_lang=tgt,
            audio=row.get("audio"),
            src_text=row["raw_transcription"],
            tgt_text=reference,
        )
        items.append(item)
        wanted[row["file_name"]] = item
        if max_items is not None and len(items) >= max_items:
            break
    if layout == "original":
        _attach_tar_audio(root, CONFIGS[src], split, wanted)
    return TestSet(
        "fleurs",
        split,
        direction,
        source,
        items,
        TASKS,
        f"FLEURS raw_transcription of the {CONFIGS[tgt]} sentence with the same id",
        dropped,
    )


def find_layout(data_dir, config: str, split: str) -> tuple[str, str]:
    """("original" | "parquet", the folder holding `{config}/`); the hub's original layout without `data_dir`."""
    if data_dir is None:
        return "original", HUB_DATA
    base = Path(data_dir)
    for root in (base, base / "data"):
        if (root / config / f"{TSV_SPLITS[split]}.tsv").is_file():
            return "original", str(root)
        if any((root / config / PARQUET_SPLITS[split]).glob("*.parquet")):
            return "parquet", str(root)
    raise FileNotFoundError(
        f"{base}: no FLEURS {config} {split} split here: expected {config}/{TSV_SPLITS[split]}.tsv with "
        f"{config}/audio/{TSV_SPLITS[split]}.tar.gz (the hub's original layout, also under data/), or "
        f"{config}/{PARQUET_SPLITS[split]}/*.parquet (its refs/convert/parquet branch)"
    )


def _tsv(root: str, config: str, split: str):
    import datasets

    path = f"{root}/{config}/{TSV_SPLITS[split]}.tsv"
    features = datasets.Features({name: datasets.Value("string") for name in TSV_COLUMNS})
    return datasets.load_dataset(
        "csv",
        data_files={split: path},
        split=split,
        streaming=True,
        sep="\t",
        header=None,
        names=list(TSV_COLUMNS),
        quoting=3,  # csv.QUOTE_NONE: transcriptions hold quote characters
        na_filter=False,
        features=features,
    )


def _tsv_rows(root: str, config: str, split: str) -> Iterator[dict]:
    for row in _tsv(root, config, split):
        yield {"id": row["id"], "file_name": row["file_name"], "raw_transcription": row["raw_transcription"]}


def _tsv_texts(root: str, config: str, split: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for row in _tsv(root, config, split):
        texts.setdefault(row["id"], row["raw_transcription"])
    return texts


def _attach_tar_audio(root: str, config: str, split: str, wanted: dict[str, EvalItem]) -> None:
    """Stream `{config}/audio/{split}.tar.gz` until every wanted file's bytes are in its item."""
    import datasets

    if not wanted:
        return
    path = f"{root}/{config}/audio/{TSV_SPLITS[split]}.tar.gz"
    features = datasets.Features(
        {
            "__key__": datasets.Value("string"),
            "__url__": datasets.Value("string"),
            "wav": datasets.Value("binary"),
        }
    )
    archive = datasets.load_dataset(
        "webdataset", data_files={split: path}, split=split, streaming=True, features=features
    )
    missing = dict(wanted)
    for example in archive:
        name = example["__key__"].rsplit("/", 1)[-1] + ".wav"
        item = missing.pop(name, None)
        if item is not None:
            item.audio = example["wav"]
            if not missing:
                return
    raise FileNotFoundError(
        f"{path}: no audio for {sorted(missing)[:5]} ({len(missing)} file(s) the tsv names)"
    )


def _parquet(root: str, config: str, split: str, columns: list[str]):
    import datasets

    files = sorted(str(p) for p in (Path(root) / config / PARQUET_SPLITS[split]).glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files={split: files}, split=split, streaming=True)
    ds = ds.select_columns(columns)
    if "audio" in columns:
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
    return ds


def _parquet_rows(root: str, config: str, split: str) -> Iterator[dict]:
    for row in _parquet(root, config, split, ["id", "path", "audio", "raw_transcription"]):
        audio = row["audio"] or {}
        name = Path(audio.get("path") or row["path"] or "").name
        yield {
            "id": str(row["id"]),
            "file_name": name,
            "raw_transcription": row["raw_transcription"],
            "audio": audio.get("bytes"),
        }


def _parquet_texts(root: str, config: str, split: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    for row in _parquet(root, config, split, ["id", "raw_transcription"]):
        texts.setdefault(str(row["id"]), row["raw_transcription"])
    return texts
