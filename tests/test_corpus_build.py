"""`sts-build-corpus` end to end: Emilia tars + tiny LFM2 MT, text pairs, SIGKILL then resume, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest

from corpus_builder.cli import main
from corpus_builder.testing import tone_bytes, write_emilia_tar
from sts.corpus import shard_paths

TONE = "python:corpus_builder.testing:ToneTTS"


def _ids(out_dir) -> list[str]:
    return [
        i for p in shard_paths(out_dir) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()
    ]


def _text_pairs(tmp_path, n: int):
    (tmp_path / "ja.txt").write_text(
        "".join(f"これは{i}番目の文です。\n" for i in range(n)), encoding="utf-8"
    )
    (tmp_path / "en.txt").write_text("".join(f"This is sentence {i}.\n" for i in range(n)), encoding="utf-8")
    return [
        "--source",
        "text-pairs",
        "--path",
        str(tmp_path / "ja.txt"),
        "--tgt-path",
        str(tmp_path / "en.txt"),
    ]


def test_cli_emilia_with_tiny_lfm2_mt(tmp_path, tiny_lm_dir, capsys):
    examples = [
        {
            "id": f"JA_W{i}",
            "text": t,
            "language": "ja",
            "speaker": "JA_S0",
            "duration": 1.0,
            "dnsmos": 3.0 + i / 10,
            "mp3": tone_bytes(1.0),
        }
        for i, t in enumerate(["おはよう", "ありがとう", "駅はどこ", "こんにちは", ""])
    ]
    examples[1]["mp3"] = b"ID3 corrupt"
    examples[2]["dnsmos"] = 1.0
    write_emilia_tar(tmp_path / "emilia" / "Emilia" / "JA" / "JA-B000000.tar", examples)
    out = tmp_path / "corpus"
    args = ["--out-dir", str(out), "--source", "emilia", "--path", str(tmp_path / "emilia"), "--languages", "ja",
            "--emilia-subsets", "Emilia", "--min-duration", "0.5", "--min-dnsmos", "2.5",
            "--mt", "hf", "--mt-model", str(tiny_lm_dir), "--mt-max-new-tokens", "8", "--mt-preset", "LiquidAI/LFM2-350M-ENJP-MT",
            "--tts", TONE, "--checks", "none", "--rows-per-shard", "2"]  # fmt: skip
    # 8 tokens of a random model rarely end the turn: by default such translations are dropped.
    assert main([*args, "--out-dir", str(tmp_path / "strict")]) == 0
    strict = json.loads((tmp_path / "strict" / "corpus.json").read_text())
    assert strict["drops"].get("mt_truncated", 0) >= 1 and strict["config"]["mt_keep_truncated"] is False
    assert main([*args, "--mt-keep-truncated"]) == 0
    card = json.loads((out / "corpus.json").read_text())
    assert card["config"]["mt_keep_truncated"] is True
    assert card["input_rows"] == 5
    drops = card["drops"]
    assert (
        drops.pop("audio_undecodable") == 1 and drops.pop("dnsmos_low") == 1 and drops.pop("text_empty") == 1
    )
    assert set(drops) <= {"mt_empty"}  # random weights may say nothing; such rows are dropped, never fatal
    assert card["rows"] + sum(drops.values()) == 2
    log = pq.read_table(out / "drops").to_pandas().set_index("id")  # the drop log, with the evidence
    assert log.loc["JA_W2", "reason"] == "dnsmos_low" and log.loc["JA_W2", "dnsmos"] == 1.0
    assert log.loc["JA_W1", "reason"] == "audio_undecodable" and "JA_W1" in log.loc["JA_W1", "detail"]
    strict_log = pq.read_table(tmp_path / "strict" / "drops").to_pandas()
    truncated = strict_log[strict_log["reason"] == "mt_truncated"]
    assert len(truncated) >= 1 and (truncated["tgt_text"].str.len() > 0).all()  # what the MT wrote
    assert card["models"]["mt"] == f"hf:{tiny_lm_dir}"
    rows = [r for p in shard_paths(out) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == card["rows"] >= 1 and {r["id"] for r in rows} <= {"JA_W0", "JA_W3"}
    for r in rows:
        assert r["tgt_text"] and r["mt_backend"] == f"hf:{tiny_lm_dir}" and r["tgt_lang"] == "en"
    assert "dropped 1: audio_undecodable" in capsys.readouterr().err


def test_cli_text_pairs_reference_mt(tmp_path):
    out = tmp_path / "corpus"
    assert main(["--out-dir", str(out), *_text_pairs(tmp_path, 5), "--mt", "reference", "--tts", TONE,
                 "--tts-kwargs", '{"sample_rate": 16000}', "--checks", "none"]) == 0  # fmt: skip
    table = pq.read_table(next((out / "data").glob("*.parquet")))
    assert table.column("id").to_pylist() == [f"ja-{i:08d}" for i in range(5)]
    assert table.column("tgt_text").to_pylist()[2] == "This is sentence 2."
    assert table.column("tts_backend").to_pylist() == ["tone:16000"] * 5
    card = json.loads((out / "corpus.json").read_text())
    assert card["directions"]["ja-en"]["rows"] == 5 and card["drops"] == {}
    # no speaker comparison: null, as pyarrow and pandas read it (NaN would be a number to them)
    assert (
        table.column("speaker_similarity").null_count == 5 and table.column("tgt_asr_error").null_count == 5
    )
    assert table.to_pandas()["speaker_similarity"].isnull().all()


def test_text_pairs_speaker_check_keeps_rows_unscored(tmp_path):
    pytest.importorskip("resemblyzer")
    out = tmp_path / "corpus"
    check = "python:corpus_builder.checks:SpeakerSimilarity"  # the real check: no source clip to compare
    assert main(["--out-dir", str(out), *_text_pairs(tmp_path, 3), "--mt", "reference", "--tts", TONE,
                 "--checks", check]) == 0  # fmt: skip
    table = pq.read_table(next((out / "data").glob("*.parquet")))
    assert table.num_rows == 3 and table.column("speaker_similarity").null_count == 3
    assert table.column("speaker_similarity").to_pylist() == [None] * 3  # null (NaN would read as nan)
    card = json.loads((out / "corpus.json").read_text())
    assert card["drops"] == {} and card["unscored"] == {"speaker_similarity": 3}
    assert "kept unscored" in (out / "README.md").read_text()


@pytest.mark.slow
def test_sigkill_mid_build_then_resume_loses_and_duplicates_nothing(tmp_path):
    import datasets

    n = 40
    out = tmp_path / "corpus"
    args = ["--out-dir", str(out), *_text_pairs(tmp_path, n), "--mt", "reference", "--tts", TONE,
            "--tts-kwargs", '{"delay": 0.03}', "--checks", "none", "--rows-per-shard", "4", "--batch-size", "2"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "corpus_builder.cli", *args], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(out.glob("data/*.parquet")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # let it get into a later chunk
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done_before = sorted(p.name for p in out.glob("data/*.parquet"))
    assert 1 <= len(done_before) < n // 4, "the kill must land mid-run"
    # What the killed run left is readable as complete shards only (temp files are hidden, not *.parquet).
    partial = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(partial) == 4 * len(done_before) and len(set(partial["id"])) == len(partial)
    assert not (out / "corpus.json").exists()

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("data/*.parquet")}
    assert main(args) == 0
    ids = _ids(out)
    assert Counter(ids) == Counter(f"ja-{i:08d}" for i in range(n))
    assert all((out / "data" / name).stat().st_mtime_ns == mtimes[name] for name in done_before[:-1])
    assert not [p for p in [*out.iterdir(), *(out / "data").iterdir()] if ".tmp-" in p.name]
    card = json.loads((out / "corpus.json").read_text())
    assert (card["input_rows"], card["rows"], card["chunks"]) == (n, n, n // 4)


@pytest.mark.slow
def test_ray_mode_spreads_shard_indexes(tmp_path):
    ray = pytest.importorskip("ray")
    out = tmp_path / "corpus"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["--out-dir", str(out), *_text_pairs(tmp_path, 9), "--mt", "reference", "--tts", TONE,
                     "--checks", "none", "--rows-per-shard", "2", "--num-shards", "2", "--ray"]) == 0  # fmt: skip
    finally:
        ray.shutdown()
    names = sorted(p.name for p in shard_paths(out))
    assert {n[:19] for n in names} == {"part-00000-of-00002", "part-00001-of-00002"}
    assert Counter(_ids(out)) == Counter(f"ja-{i:08d}" for i in range(9))
    card = json.loads((out / "corpus.json").read_text())
    assert (card["rows"], card["chunks"]) == (9, 3 + 2)  # 5 rows -> 3 chunks of 2, 4 rows -> 2


def test_rerun_with_another_chunk_size_is_refused(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = [
        "--out-dir",
        str(out),
        *_text_pairs(tmp_path, 3),
        "--mt",
        "reference",
        "--tts",
        TONE,
        "--checks",
        "none",
    ]
    assert main([*args, "--rows-per-shard", "2"]) == 0
    capsys.readouterr()
    # One line and exit 2 (was: a ValueError traceback), even when asked to allow the change.
    assert main([*args, "--rows-per-shard", "3", "--allow-changed", "rows_per_shard"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("sts-build-corpus: error: ") and "duplicate rows" in err and len(err.splitlines()) == 1
    )
    assert Counter(_ids(out)) == Counter(f"ja-{i:08d}" for i in range(3))
