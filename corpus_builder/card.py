"""The `README.md` dataset card of a corpus folder, made from its `corpus.json`.

`datasets.load_dataset(FOLDER)` reads the YAML front matter: `configs` points the default config's
train split at the shards (`data/*.parquet`), and a `drops` config's at the drop log
(`drops/*.parquet`, `load_dataset(FOLDER, "drops")`); `dataset_info` gives the columns (audio as
`Audio(decode=False)`: datasets 5.x decodes only through torchcodec/FFmpeg). The prose repeats the
card's numbers for a person browsing the folder (or a Hugging Face dataset page).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sts.corpus import (
    DROPS_DIR,
    SHARD_GLOB,
    corpus_features,
    drop_features,
    drop_paths,
    encoded_features,
    shard_dir,
)


def front_matter(out_dir: Path, encoded: bool, card: dict | None = None) -> dict:
    """The YAML header: the default config, whose train split is the shards, and (when there is a drop
    log) a `drops` config, whose train split is the dropped rows; their features; and the tasks and
    languages the rows serve (a monolingual corpus: speech recognition and synthesis only)."""
    import datasets

    def yaml_features(features) -> list:  # datasets' own YAML form of features
        return datasets.DatasetInfo(features=features)._to_yaml_dict()["features"]

    folder = shard_dir(out_dir).relative_to(out_dir).as_posix()
    pattern = SHARD_GLOB if folder == "." else f"{folder}/{SHARD_GLOB}"
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": pattern}]}]
    info: dict | list = {"features": yaml_features(encoded_features() if encoded else corpus_features())}
    if drop_paths(out_dir):
        configs.append(
            {"config_name": "drops", "data_files": [{"split": "train", "path": f"{DROPS_DIR}/{SHARD_GLOB}"}]}
        )
        info = [
            {"config_name": "default", **info},
            {"config_name": "drops", "features": yaml_features(drop_features())},
        ]
    card = card or {}
    monolingual_only = card.get("kind") == "monolingual"
    languages = sorted(card.get("monolingual", {})) if monolingual_only else ["ja", "en"]
    return {
        "configs": configs,
        "dataset_info": info,
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
        log = card.get("drop_log", {})
        lines.append(
            f"- drop log: `{DROPS_DIR}/` lists {log.get('rows', 0):,} dropped rows with their id, source, reason "
            "and evidence (the decoder's error, the durations, what the ASR check heard and its error, the "
            "speaker similarity, DNSMOS; null where not measured)"
            + ("" if log.get("complete", True) else "; rows dropped before the log existed are only counted")
        )
    if card.get("unscored"):
        lines.append(
            "- kept unscored (a check that could not score the row: no source clip to compare voices with, "
            "too little voice, no text; the column is null): "
            + ", ".join(f"{check} {n:,}" for check, n in card["unscored"].items())
        )
    config = card.get("config") or {}
    if config.get("max_duration") is not None and config.get("source") in ("emilia", "local"):
        lines.append(
            f"- source clips: {config.get('min_duration', 0):g} to {config['max_duration']:g} s; a longer clip is "
            "refused from its file header before it is decoded (`duration_long`), and so is one bigger once "
            "decoded than that many seconds of 48 kHz stereo float32 (`audio_too_large`)"
        )
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
        "All numbers, the models, package versions and the full build configuration are in `corpus.json`,",
        "with each shard's rows, size and SHA-256 (`shards`). Rerunning the command that wrote this folder",
        "resumes it: finished chunks are skipped and a missing shard is built again, while other settings or",
        "a shard changed since it was recorded are refused with a message naming them; `sts-encode` and",
        "`sts-train` refuse a missing or changed shard too.",
        "",
        "## Reading it",
        "",
        "```python",
        "import datasets, pandas, pyarrow.dataset",
        f'ds = datasets.load_dataset("{here}", split="train")      # this card\'s configs and features',
        f'df = pandas.read_parquet("{data}")                       # the shard folder, not the top folder',
        f'table = pyarrow.dataset.dataset("{data}").to_table()',
        *(
            [
                f'drops = datasets.load_dataset("{here}", "drops", split="train")  # or pandas.read_parquet("{here}/{DROPS_DIR}")'
            ]
            if drop_paths(out_dir)
            else []
        ),
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
