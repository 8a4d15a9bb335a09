"""CVSS-C (Jia et al., LREC 2022): Common Voice ja source speech -> synthetic English speech, ja-en only.

    sts-eval --benchmark cvss --data-dir cvss_c_ja_en_v1.0/ --common-voice-dir cv-corpus-4/ja \
        --split test --tasks s2st s2tt --model runs/sft -o reports/cvss

Layout (google-research-datasets/cvss README; the `google/cvss` loading script): the release
`cvss_c_ja_en_v1.0.tar.gz` unpacks to `train.tsv`, `dev.tsv`, `test.tsv` and `train/`, `dev/`,
`test/`. Each tsv has no header and two tab-separated columns: the Common Voice clip's file name
(`common_voice_ja_19482488.mp3`) and its normalized English translation (numbers, currencies and
acronyms written as they are spoken, matching the speech). The folder of a split holds the
translation speech as `{clip file name}.wav` (one canonical voice). The Japanese source speech is
Common Voice release 4 (`infer.testsets.common_voice`), joined by file name.

`--data-dir` is that unpacked release (or the folder above it); `--common-voice-dir` the Common
Voice 4 `ja` folder (default: `{data-dir}/ja`). References: `tgt_text` is the CVSS text (already
normalized; the ASR-BLEU normalizer leaves it unchanged), `src_text` the Common Voice transcript
(when a transcript tsv has the clip; the asr task needs it), `tgt_audio` the CVSS speech. A row
whose clip is missing from clips/ is dropped ("source_clip_missing"), as CVSS's own loaders skip it.
"""

from __future__ import annotations

from pathlib import Path

from infer.eval_items import EvalItem
from infer.testsets import TestSet, parse_direction
from infer.testsets.common_voice import clip_path, download_hint, find_clips_dir, sentences
from sts.errors import ManifestError, UsageError

RELEASE = "https://storage.googleapis.com/cvss/cvss_c_v1.0/cvss_c_ja_en_v1.0.tar.gz"
SPLITS = ("train", "dev", "test")
TASKS = ("s2st", "s2tt", "asr")


def load(direction: str, split: str, max_items: int | None, data_dir=None, common_voice_dir=None) -> TestSet:
    src, tgt = parse_direction(direction, ("ja-en",), "cvss")
    if split not in SPLITS:
        raise UsageError(f"--benchmark cvss: split {split!r} is not one of {list(SPLITS)}")
    if data_dir is None:
        raise UsageError(
            "--benchmark cvss needs --data-dir: the CVSS-C ja-en release (the hub's google/cvss is a "
            f"loading script over it) is a separate download ({RELEASE}), and {download_hint(src)}"
        )
    release = find_release(Path(data_dir), split)
    clips = find_clips_dir(common_voice_dir, data_dir, src, "cvss")
    transcripts = sentences(clips)
    items, dropped = [], {}
    tsv = release / f"{split}.tsv"
    for line, raw in enumerate(tsv.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        name, sep, translation = raw.partition("\t")
        if not sep or "\t" in translation:
            raise ManifestError(tsv, line, "expected two tab-separated columns: clip file name, translation")
        clip = clip_path(clips, name)
        if not clip.is_file():
            dropped["source_clip_missing"] = dropped.get("source_clip_missing", 0) + 1
            continue
        target = release / split / f"{name}.wav"
        items.append(
            EvalItem(
                id=Path(name).stem,
                src_lang=src,
                tgt_lang=tgt,
                audio=clip,
                src_text=transcripts.get(name) or transcripts.get(Path(name).stem),
                tgt_text=translation.strip(),
                tgt_audio=target if target.is_file() else None,
            )
        )
        if max_items is not None and len(items) >= max_items:
            break
    return TestSet(
        "cvss",
        split,
        direction,
        f"{release} + {clips}",
        items,
        TASKS,
        "CVSS-C normalized English translation",
        dropped,
    )


def find_release(data_dir: Path, split: str) -> Path:
    """The folder with `{split}.tsv` and `{split}/`: `data_dir` or one folder below it."""
    for folder in (data_dir, *sorted(p for p in data_dir.glob("*") if p.is_dir())):
        if (folder / f"{split}.tsv").is_file():
            return folder
    raise FileNotFoundError(
        f"{data_dir}: no {split}.tsv here or one folder below; expected the unpacked CVSS-C ja-en release "
        f"({RELEASE}: {split}.tsv and {split}/*.mp3.wav)"
    )
