"""The `README.md` dataset card of a corpus folder, made from its `corpus.json`.

`datasets.load_dataset(FOLDER)` reads the YAML front matter: `configs` points the default config's
train split at the shards (`data/*.parquet`), `dataset_info.features` gives the columns (audio as
`Audio(decode=False)`: datasets 5.x decodes only through torchcodec/FFmpeg). The prose repeats the
card's numbers for a person browsing the folder (or a Hugging Face dataset page).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sts.corpus import SHARD_GLOB, corpus_features, encoded_features, shard_dir


def front_matter(out_dir: Path, encoded: bool, card: dict | None = None) -> dict:
    """The YAML header: one config whose train split is the shards, the features, and the tasks and
    languages the rows serve (a monolingual corpus: speech recognition and synthesis only)."""
    import datasets

    features = encoded_features() if encoded else corpus_features()
    folder = shard_dir(out_dir).relative_to(out_dir).as_posix()
    pattern = SHARD_GLOB if folder == "." else f"{folder}/{SHARD_GLOB}"
    info = datasets.DatasetInfo(features=features)._to_yaml_dict()  # datasets' own YAML form of features
    card = card or {}
    monolingual_only = card.get("kind") == "monolingual"
    languages = sorted(card.get("monolingual", {})) if monolingual_only else ["ja", "en"]
    return {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": pattern}]}],
        "dataset_info": {"features": info["features"]},
        "task_categories": (
            ["automatic-speech-recognition", "text-to-speech"]
            if monolingual_only
            else ["translation", "automatic-speech-recognition", "text-to-speech"]
        ),
        "language": languages or ["ja", "en"],
        "tags": (["monolingual"] if monolingual_only else ["speech-to-speech-translation"]) + ["synthetic"],
    }


def dataset_readme(out_dir: Path, card: dict) -> str:
    """README.md text for `card` (a `corpus.json` dict)."""
    header = yaml.safe_dump(
        front_matter(out_dir, "encode" in card, card), sort_keys=False, allow_unicode=True
    )
    folder = shard_dir(out_dir).relative_to(out_dir).as_posix()
    here = f"path/to/{Path(out_dir).resolve().name}"
    data = here if folder == "." else f"{here}/{folder}"
    lines = [
        "---",
        header.rstrip(),
        "---",
        "",
        f"# {Path(out_dir).resolve().name}",
        "",
        card.get("description", "Synthetic parallel ja<->en speech corpus made by sts-build-corpus") + ".",
        "",
        f"- rows: {card.get('rows', 0):,} kept of {card.get('input_rows', 0):,} source rows read, "
        f"in {len(card.get('shards', []))} shard files",
    ]
    for direction, d in card.get("directions", {}).items():
        lines.append(
            f"- {direction}: {d['rows']:,} rows, {d['src_hours']:.3f} h source speech, "
            f"{d['tgt_hours']:.3f} h target speech"
        )
    for lang, m in card.get("monolingual", {}).items():
        lines.append(
            f"- {lang}, monolingual (no translation side): {m['rows']:,} rows, {m['hours']:.3f} h speech"
        )
    if card.get("drops"):
        lines.append("- dropped: " + ", ".join(f"{reason} {n:,}" for reason, n in card["drops"].items()))
    models = card.get("models", {})
    if models:
        lines.append(f"- MT: {models.get('mt')}; TTS: {models.get('tts')}; checks: {models.get('checks')}")
    if "encode" in card:
        enc = card["encode"]
        lines.append(
            f"- speech codes: {enc.get('codec')}, {enc.get('frame_rate')} per second, "
            f"codebook {enc.get('codebook_size')} (`src_codes`, `tgt_codes`)"
        )
    lines += [
        f"- written {card.get('written_at', '')} by `{' '.join(map(str, card.get('command', [])))}`",
        "",
        "All numbers, the models, package versions and the full build configuration are in `corpus.json`.",
        "",
        "## Reading it",
        "",
        "```python",
        "import datasets, pandas, pyarrow.dataset",
        f'ds = datasets.load_dataset("{here}", split="train")      # this card\'s configs and features',
        f'df = pandas.read_parquet("{data}")                       # the shard folder, not the top folder',
        f'table = pyarrow.dataset.dataset("{data}").to_table()',
        "```",
        "",
        "Audio columns are `{bytes, path}` structs of FLAC files (source at 16 kHz, target at the TTS's rate):",
        "decode them with `sts.audio.load_audio(row['src_audio']['bytes'])` or soundfile.",
        "",
    ]
    if card.get("monolingual"):
        lines += [
            'Monolingual rows (`mt_backend` "none") have no translation side: `tgt_lang`, `tgt_text`, '
            "`tgt_audio`, `tgt_duration`",
            "(and `tgt_codes`) are null; select them with `df.tgt_lang.isna()`. They serve speech recognition "
            "and synthesis",
            "(`sts-train` uses them for the `asr` and `tts` tasks and cpt speech, never for translation).",
            "",
        ]
    return "\n".join(lines)
