"""FLORES+ (`openlanguagedata/flores_plus`, the OLDI-maintained FLORES-200): `sts-eval-mt`'s test set.

    sts-eval-mt --backends hf:LiquidAI/LFM2-350M-ENJP-MT                     # the hub, devtest
    sts-eval-mt --backends ... --split dev --test-dir flores_plus/            # a local copy

    from infer.testsets.flores_plus import load
    ja, en, docs, source = load("devtest")

Layout (the dataset card and the usage `load_dataset("openlanguagedata/flores_plus", "jpn_Jpan",
split="devtest")`): one config per language variety (`jpn_Jpan`, `eng_Latn`), splits `dev` (997
sentences) and `devtest` (1012); rows id, iso_639_3, iso_15924, glottocode, text, url, domain,
topic, has_image, has_hyperlink, last_updated; the same `id` is the same sentence in every language.
The repository is gated: accept its terms on the hub and log in (`hf auth login`) first.

The hub is read with `datasets.load_dataset(REPO, config, split=..., streaming=True)`; `--test-dir`
takes a local snapshot of the repository (`hf download openlanguagedata/flores_plus --repo-type
dataset --local-dir DIR`: its README declares the configs, so the same call reads it), or a folder
of line-aligned text files in FLORES-200's text layout (`{split}.ja`, `{split}.en`, optionally
`metadata_{split}.tsv` with a URL column). Pairs are aligned by `id`; the document of a sentence
(for `--context`) is its `url`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sts.errors import UsageError

REPO = "openlanguagedata/flores_plus"
CONFIGS = {"ja": "jpn_Jpan", "en": "eng_Latn"}
SPLITS = ("dev", "devtest")


def load(
    split: str = "devtest", test_dir: str | Path | None = None
) -> tuple[list[str], list[str], list, str]:
    """(Japanese lines, English lines, document per line (None: unknown), where it was read)."""
    if split not in SPLITS:
        raise UsageError(f"--split {split!r}: FLORES+ has {list(SPLITS)}")
    if test_dir is not None:
        folder = Path(test_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder (--test-dir)")
        if (folder / f"{split}.ja").is_file() and (folder / f"{split}.en").is_file():
            return _text_layout(folder, split)
        if not (folder / "README.md").is_file():
            raise FileNotFoundError(
                f"{folder}: neither a FLORES+ snapshot (README.md declaring the {CONFIGS['ja']} and "
                f"{CONFIGS['en']} configs) nor {split}.ja + {split}.en"
            )
    path = str(test_dir) if test_dir is not None else REPO
    sides = {lang: _rows(path, config, split) for lang, config in CONFIGS.items()}
    ids = [i for i in sides["ja"] if i in sides["en"]]
    if not ids:
        raise UsageError(f"{path}: no sentence id is in both {CONFIGS['ja']} and {CONFIGS['en']} ({split})")
    ja = [sides["ja"][i]["text"].strip() for i in ids]
    en = [sides["en"][i]["text"].strip() for i in ids]
    docs = [sides["en"][i].get("url") or sides["ja"][i].get("url") for i in ids]
    return ja, en, docs, f"{'hub:' if test_dir is None else ''}{path} ({split})"


def _rows(path: str, config: str, split: str) -> dict:
    import datasets

    from infer.testsets import hub_errors

    try:
        with hub_errors(path, "give --test-dir DIR (a local copy) or --ja-file/--en-file"):
            ds = datasets.load_dataset(path, config, split=split, streaming=True)
            return {row["id"]: row for row in ds}
    except FileNotFoundError as err:
        hint = (
            f"; {REPO} is gated: accept its terms on the hub and log in (hf auth login), "
            "or give --test-dir DIR (a local copy) or --ja-file/--en-file"
            if path == REPO
            else ""
        )
        raise type(err)(f"{path} ({config}, {split}): {err}{hint}") from err
    except ValueError as err:  # e.g. a local snapshot whose README declares no such config or split
        raise UsageError(f"{path} ({config}, {split}): {err}") from err


def read_lines(path: Path) -> list[str]:
    """A text file's lines, stripped; UTF-8 (a BOM accepted), else `UsageError` naming the line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such test file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 text ({err.reason})") from err
    return [line.rstrip("\n").strip() for line in text.splitlines()]


def _text_layout(folder: Path, split: str) -> tuple[list[str], list[str], list, str]:
    ja, en = read_lines(folder / f"{split}.ja"), read_lines(folder / f"{split}.en")
    docs: list = [None] * len(ja)
    metadata = folder / f"metadata_{split}.tsv"
    if metadata.is_file():
        with metadata.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows and "URL" not in rows[0]:
            raise UsageError(f"{metadata}: no URL column")
        docs = [row["URL"] for row in rows]
    return ja, en, docs, f"{folder} ({split})"
