"""`sts_decoding.json` beside a checkpoint's weights: what decoding should know of the data it learned from.

    write_decoding_info(checkpoint_dir, shard_files)   # sts-train, into every checkpoint it writes
    read_decoding_info("runs/sft")                     # sts-infer: the dict below, or None

    {"duration_ratio": {"ja-en": {"n": 41230, "p50": 0.93, "p90": 1.31, "p99": 1.87, "max": 3.2, "skipped": 0},
                        "en-ja": {...}},
     "source": [{"corpus": "corpus/ja-en", "shards": 12, "card_duration_ratio": {...} | null}]}

`duration_ratio` is `sts.corpus.duration_ratios` over every training shard together: the exact
merge of the corpora (each row counts once, so each corpus weighs by its rows; averaging the cards'
percentiles would only approximate it). `source` names each corpus folder (absolute), how many of its shard
files were read and the ratio its own card recorded. `sts-infer` bounds a speech output by the
direction's p99 (`infer.decoding.LengthBudget`) instead of a fixed 2.5x.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sts.corpus import corpus_dir_of, duration_ratios, read_card
from sts.io import write_json_atomic

DECODING_FILE = "sts_decoding.json"


def decoding_info(shards: Sequence[str | Path]) -> dict:
    """The `sts_decoding.json` content for a model trained on the Parquet `shards` (files)."""
    shards = [Path(s) for s in shards]
    folders: dict[Path, int] = {}
    for shard in shards:
        folder = corpus_dir_of(shard).resolve()  # the folder with the card, above data/
        folders[folder] = folders.get(folder, 0) + 1
    return {
        "duration_ratio": duration_ratios(shards),
        "source": [
            {
                "corpus": str(folder),
                "shards": count,
                "card_duration_ratio": read_card(folder).get("duration_ratio"),
            }
            for folder, count in folders.items()
        ],
    }


def write_decoding_info(out_dir: str | Path, shards: Sequence[str | Path]) -> Path | None:
    """Write `out_dir/sts_decoding.json` (atomically) for training `shards`; None (nothing written)
    when there are no shards (text-only cpt)."""
    if not shards:
        return None
    return write_json_atomic(Path(out_dir) / DECODING_FILE, decoding_info(shards))


def read_decoding_info(model_dir: str | Path) -> dict | None:
    """`sts_decoding.json` of a model folder, or None when it has none. Raises ValueError on bad JSON."""
    path = Path(model_dir) / DECODING_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
