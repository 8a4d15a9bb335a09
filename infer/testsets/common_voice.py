"""Common Voice 4 clips and transcripts: the source speech of CVSS and CoVoST 2 (a separate download).

Layout of a Common Voice release's language folder (what `--common-voice-dir` names; the
`facebook/covost2` loading script's manual directory is its parent, `{root}/{lang}/`): `clips/*.mp3`
(48 kHz mono mp3) and tab-separated transcripts with a header (`validated.tsv`, also `test.tsv`,
`dev.tsv`, `train.tsv`: client_id, path, sentence, up_votes, down_votes, age, gender, accent).
CVSS and CoVoST 2 are defined on Common Voice release 4 (CVSS README: "paired with the Common
Voice release version 4 (required) based on the audio file names"); neither the clips nor a
loader that still runs under `datasets` 5 are on the hub (`google/cvss` and `facebook/covost2` are
loading scripts that need the clips downloaded by hand, and `datasets` 4 dropped loading scripts).
"""

from __future__ import annotations

import csv
from pathlib import Path

from sts.errors import ManifestError

CV_HOME = "https://commonvoice.mozilla.org/en/datasets"
TRANSCRIPT_FILES = ("validated.tsv", "test.tsv", "dev.tsv", "train.tsv", "other.tsv", "invalidated.tsv")


def download_hint(lang: str) -> str:
    return (
        f"its source speech is Common Voice release 4 ({lang}), which is not on the hub: download it from "
        f"{CV_HOME} (cv-corpus-4 {lang}), unpack it and give --common-voice-dir DIR (the folder with "
        f"clips/ and validated.tsv)"
    )


def find_clips_dir(common_voice_dir, data_dir, lang: str, benchmark: str) -> Path:
    """The Common Voice language folder: `common_voice_dir`, else `{data_dir}/{lang}` when it holds clips/."""
    candidates = [Path(common_voice_dir)] if common_voice_dir else []
    if data_dir and not common_voice_dir:
        candidates += [Path(data_dir) / lang, Path(data_dir)]
    for folder in candidates:
        if (folder / "clips").is_dir():
            return folder
    where = str(candidates[0]) if candidates else "(no --common-voice-dir given)"
    raise FileNotFoundError(f"{where}: no clips/ folder here; --benchmark {benchmark}: {download_hint(lang)}")


def read_tsv(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line, row)]) of a headed tsv as Common Voice / CoVoST write it (no quoting, `\\` escapes)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        rows = []
        for row in reader:
            if None in row:
                raise ManifestError(path, reader.line_num, "more cells than header names")
            rows.append((reader.line_num, row))
        return list(reader.fieldnames or []), rows


def sentences(clips_dir: Path) -> dict[str, str]:
    """Clip file name -> its transcript, from every transcript tsv present (validated.tsv first)."""
    out: dict[str, str] = {}
    for name in TRANSCRIPT_FILES:
        path = clips_dir / name
        if path.is_file():
            for _, row in read_tsv(path)[1]:
                if row.get("path") and row.get("sentence"):
                    out.setdefault(row["path"], row["sentence"])
    return out


def clip_path(clips_dir: Path, name: str) -> Path:
    """A clip's file; Common Voice 4 tsvs name it with or without the .mp3 suffix."""
    path = clips_dir / "clips" / name
    return path if path.suffix == ".mp3" else path.with_name(path.name + ".mp3")
