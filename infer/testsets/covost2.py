"""CoVoST 2 (Wang et al., 2020): Common Voice speech -> text translation, ja-en and en-ja.

    sts-eval --benchmark covost2 --data-dir covost/ --common-voice-dir cv-corpus-4/ja \
        --split test --tasks s2tt asr --model runs/sft -o reports/covost2

Layout (facebookresearch/covost `get_covost_splits.py`; the `facebook/covost2` loading script):
the translations ship as `covost_v2.{src}_{tgt}.tsv` (from `covost_v2.{src}_{tgt}.tsv.tar.gz`), a
headed tsv without quoting (`\\` escapes) with at least the columns path (the Common Voice clip),
translation and split; split is train, dev or test, or train_covost, which belongs to train in
version 2. The transcript is the `sentence` column when the tsv has it, else Common Voice's own
(`validated.tsv`, joined by path), as the official split script does. The source speech is Common
Voice release 4 (`infer.testsets.common_voice`).

`--data-dir` holds the tsv (directly or in `{src}/`); `--common-voice-dir` the Common Voice 4
folder of the source language (default: `{data-dir}/{src}`, the loading script's layout). Tasks:
s2tt (reference: the raw CoVoST translation) and asr (reference: the transcript). A row whose clip
is missing is dropped ("source_clip_missing").
"""

from __future__ import annotations

from pathlib import Path

from infer.eval_items import EvalItem
from infer.testsets import TestSet, parse_direction
from infer.testsets.common_voice import clip_path, download_hint, find_clips_dir, read_tsv, sentences
from sts.errors import ManifestError, UsageError

TSV_URL = "https://dl.fbaipublicfiles.com/covost/covost_v2.{src}_{tgt}.tsv.tar.gz"
SPLITS = {"train": ("train", "train_covost"), "dev": ("dev",), "test": ("test",)}
TASKS = ("s2tt", "asr")


def load(direction: str, split: str, max_items: int | None, data_dir=None, common_voice_dir=None) -> TestSet:
    src, tgt = parse_direction(direction, ("ja-en", "en-ja"), "covost2")
    if split not in SPLITS:
        raise UsageError(f"--benchmark covost2: split {split!r} is not one of {list(SPLITS)}")
    name = f"covost_v2.{src}_{tgt}.tsv"
    if data_dir is None:
        raise UsageError(
            f"--benchmark covost2 needs --data-dir: the CoVoST 2 translations ({name}, from "
            f"{TSV_URL.format(src=src, tgt=tgt)}) and the clips are separate downloads (the hub's "
            f"facebook/covost2 is a loading script over them), and {download_hint(src)}"
        )
    tsv = next((p for p in (Path(data_dir) / name, Path(data_dir) / src / name) if p.is_file()), None)
    if tsv is None:
        raise FileNotFoundError(
            f"{data_dir}: no {name} here or in {src}/ (from {TSV_URL.format(src=src, tgt=tgt)})"
        )
    clips = find_clips_dir(common_voice_dir, data_dir, src, "covost2")
    header, rows = read_tsv(tsv)
    missing = {"path", "translation", "split"} - set(header)
    if missing:
        raise ManifestError(tsv, 1, f"the header lacks {sorted(missing)}")
    transcripts = {} if "sentence" in header else sentences(clips)
    items, dropped = [], {}
    for _, row in rows:
        if row["split"] not in SPLITS[split]:
            continue
        clip = clip_path(clips, row["path"])
        if not clip.is_file():
            dropped["source_clip_missing"] = dropped.get("source_clip_missing", 0) + 1
            continue
        items.append(
            EvalItem(
                id=Path(row["path"]).stem,
                src_lang=src,
                tgt_lang=tgt,
                audio=clip,
                src_text=row.get("sentence") or transcripts.get(row["path"]),
                tgt_text=row["translation"],
            )
        )
        if max_items is not None and len(items) >= max_items:
            break
    return TestSet(
        "covost2",
        split,
        direction,
        f"{tsv} + {clips}",
        items,
        TASKS,
        "CoVoST 2 translation (raw text)",
        dropped,
    )
