"""The measured target/source duration ratio: per direction from the shards (`sts.corpus`), on the
corpus card (`corpus_builder.shards.write_card`) and beside a checkpoint (`sts.decoding_info`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sts.corpus import duration_ratios, shard_paths
from sts.decoding_info import DECODING_FILE, decoding_info, read_decoding_info, write_decoding_info


def write_shard(path, rows: list[tuple[str, str, float, float]]):
    src_lang, tgt_lang, src, tgt = zip(*rows, strict=True)
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(len(rows))],
            "src_lang": list(src_lang),
            "tgt_lang": list(tgt_lang),
            "src_duration": pa.array(src, pa.float32()),
            "tgt_duration": pa.array(tgt, pa.float32()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_ratio_per_direction_uses_every_row_both_ways(tmp_path):
    rng = np.random.default_rng(0)
    rows = [("ja", "en", float(rng.uniform(1, 5)), float(rng.uniform(1, 5))) for _ in range(30)]
    rows += [("en", "ja", float(rng.uniform(1, 5)), float(rng.uniform(1, 5))) for _ in range(20)]
    rows += [("ja", "en", 0.0, 2.0), ("en", "ja", float("nan"), 1.0)]  # skipped, and counted
    shards = [
        write_shard(tmp_path / "c" / "part-00000.parquet", rows[:25]),
        write_shard(tmp_path / "c" / "part-00001.parquet", rows[25:]),
    ]
    ratio = duration_ratios(shards)
    good = [(a, np.float32(s), np.float32(t)) for a, _, s, t in rows if s > 0 and np.isfinite(s)]
    ja_en = np.array([float(t) / float(s) if a == "ja" else float(s) / float(t) for a, s, t in good])
    assert set(ratio) == {"ja-en", "en-ja"}
    for direction, values in (("ja-en", ja_en), ("en-ja", 1 / ja_en)):
        got = ratio[direction]
        assert got["n"] == 50 and got["skipped"] == 2
        assert got["p50"] == pytest.approx(np.percentile(values, 50), abs=1e-4)
        assert got["p99"] == pytest.approx(np.percentile(values, 99), abs=1e-4)
        assert got["max"] == pytest.approx(values.max(), abs=1e-4) and got["p90"] <= got["p99"] <= got["max"]
    assert duration_ratios([]) == {}
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"src_lang": ["ja"]}), bad)
    with pytest.raises(ValueError, match="bad.parquet"):
        duration_ratios([bad])


def test_the_corpus_card_records_it(tmp_path):
    from corpus_builder.shards import write_card

    out = tmp_path / "corpus"
    write_shard(out / "part-00000-of-00001-000000.parquet", [("ja", "en", 2.0, 3.0), ("en", "ja", 4.0, 2.0)])
    card = write_card(out, config={}, models={}, argv=["test"])
    assert card["duration_ratio"] == duration_ratios(shard_paths(out))
    assert card["duration_ratio"]["ja-en"]["max"] == 2.0  # 3/2 from the ja row, 4/2 from the en row
    assert json.loads((out / "corpus.json").read_text())["duration_ratio"] == card["duration_ratio"]


def test_checkpoint_file_merges_the_training_corpora_exactly(tmp_path):
    a = [write_shard(tmp_path / "a" / "part-0.parquet", [("ja", "en", 1.0, 2.0)] * 3)]
    b = [write_shard(tmp_path / "b" / f"part-{i}.parquet", [("en", "ja", 2.0, 1.0)] * 5) for i in range(2)]
    (tmp_path / "a" / "corpus.json").write_text(json.dumps({"duration_ratio": duration_ratios(a)}))
    info = decoding_info(a + b)
    assert info["duration_ratio"] == duration_ratios(a + b) and info["duration_ratio"]["ja-en"]["n"] == 13
    assert info["duration_ratio"]["ja-en"]["p50"] == 2.0  # every row: ja speech doubles in English
    assert info["source"] == [
        {"corpus": str(tmp_path / "a"), "shards": 1, "card_duration_ratio": duration_ratios(a)},
        {"corpus": str(tmp_path / "b"), "shards": 2, "card_duration_ratio": None},
    ]
    ckpt = tmp_path / "ckpt"
    assert write_decoding_info(ckpt, []) is None and read_decoding_info(ckpt) is None  # text-only cpt
    write_decoding_info(ckpt, a + b)
    assert read_decoding_info(ckpt) == json.loads(json.dumps(info))
    (ckpt / DECODING_FILE).write_text("{")
    with pytest.raises(ValueError, match=DECODING_FILE):
        read_decoding_info(ckpt)
    shutil.rmtree(ckpt)
