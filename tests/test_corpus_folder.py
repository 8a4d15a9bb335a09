"""A corpus folder other tools read as it is, that knows what it was built from, and one builder per worker."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from corpus_builder import shards
from corpus_builder.cli import main
from sts.audio import write_audio
from sts.corpus import corpus_features, read_rows, shard_paths

TONE = "python:corpus_builder.testing:ToneTTS"


def _pairs(tmp_path, n: int, name: str = "ja") -> list[str]:
    src, tgt = tmp_path / f"{name}.txt", tmp_path / f"{name}-en.txt"
    src.write_text("".join(f"これは{i}番目の文です。\n" for i in range(n)), encoding="utf-8")
    tgt.write_text("".join(f"This is sentence {i}.\n" for i in range(n)), encoding="utf-8")
    return ["--source", "text-pairs", "--path", str(src), "--tgt-path", str(tgt)]


def _args(out, tmp_path, n: int, *extra) -> list[str]:
    return ["--out-dir", str(out), *_pairs(tmp_path, n), "--mt", "reference", "--tts", TONE,
            "--tts-kwargs", '{"sample_rate": 16000}', "--checks", "none", *extra]  # fmt: skip


def _ids(out) -> Counter:
    return Counter(r["id"] for r in read_rows(out, columns=["id"]))


def test_folder_opens_in_datasets_pandas_and_pyarrow(tmp_path):
    import datasets
    import pandas as pd
    import pyarrow.dataset as pads

    out = tmp_path / "corpus"
    assert main(_args(out, tmp_path, 5, "--rows-per-shard", "2")) == 0
    assert [p.relative_to(out).as_posix() for p in shard_paths(out)] == [
        f"data/part-00000-of-00001-{k:06d}.parquet" for k in range(3)
    ]
    card = json.loads((out / "corpus.json").read_text())
    assert [e["path"] for e in card["shards"]] == [p.relative_to(out).as_posix() for p in shard_paths(out)]
    readme = (out / "README.md").read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "data/part-*.parquet"}]
    assert "5 kept of 5 source rows" in readme.replace(",", "")

    ds = datasets.load_dataset(str(out), split="train")  # the folder itself, through README.md
    assert sorted(ds["id"]) == [f"ja-{i:08d}" for i in range(5)]
    assert ds.features == corpus_features() and ds.features["src_audio"] == datasets.Audio(decode=False)
    df = pd.read_parquet(out / "data")  # pandas and pyarrow: the data/ folder
    assert sorted(df["id"]) == sorted(ds["id"]) and df.loc[0, "src_audio"]["bytes"][:4] == b"fLaC"
    assert pads.dataset(out / "data").count_rows() == 5
    with pytest.raises(Exception):  # noqa: B017 - the top folder also holds README.md and corpus.json
        pd.read_parquet(out)


def test_old_folders_with_top_level_shards_are_read_and_resumed(tmp_path):
    from train.data import list_shards

    out = tmp_path / "corpus"
    args = _args(out, tmp_path, 6, "--rows-per-shard", "2")
    assert main([*args, "--max-rows", "4"]) == 0
    for path in shard_paths(out):  # lay it out as before the data/ folder
        path.rename(out / path.name)
    (out / "data").rmdir()
    assert [p.parent for p in shard_paths(out)] == [out, out] and list_shards([str(out)]) == shard_paths(out)
    assert main(args) == 0
    assert not (out / "data").exists() and len(shard_paths(out)) == 3
    assert _ids(out) == Counter(f"ja-{i:08d}" for i in range(6))


def test_max_rows_trial_then_the_full_command_reads_every_row(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = _args(out, tmp_path, 10, "--rows-per-shard", "4")
    assert main([*args, "--max-rows", "5"]) == 0  # chunk 0 whole, chunk 1 cut after 1 row
    assert _ids(out) == Counter(f"ja-{i:08d}" for i in range(5))
    first = out / "data" / "part-00000-of-00001-000000.parquet"
    mtime = first.stat().st_mtime_ns
    assert main(args) == 0  # the full run: chunk 1 redone, chunk 2 new, chunk 0 untouched
    assert _ids(out) == Counter(f"ja-{i:08d}" for i in range(10))
    assert first.stat().st_mtime_ns == mtime
    card = json.loads((out / "corpus.json").read_text())
    assert (card["input_rows"], card["rows"], card["chunks"]) == (10, 10, 3)
    assert main([*args, "--max-rows", "3"]) == 0  # a smaller limit later keeps what is there
    assert sum(_ids(out).values()) == 10


def test_rerun_with_other_settings_is_refused_naming_them(tmp_path, capsys, monkeypatch):
    out = tmp_path / "corpus"
    args = _args(out, tmp_path, 3)
    assert main(args) == 0
    card = (out / "corpus.json").read_text()
    (tmp_path / "other").mkdir()
    (tmp_path / "moved").mkdir()
    other, moved = _pairs(tmp_path / "other", 4), _pairs(tmp_path / "moved", 3)  # other text; the same text
    flags = ["--mt", "reference", "--tts", TONE, "--tts-kwargs", '{"sample_rate": 16000}', "--checks", "none"]
    capsys.readouterr()
    refused = [
        (["--out-dir", str(out), *other, *flags], f"path: '{tmp_path / 'ja.txt'}' (sha256 "),
        ([*args, "--tts-kwargs", '{"sample_rate": 24000}'], "tts_kwargs: {'sample_rate': 16000} -> {'sample_rate': 24000}"),
        ([*args, "--min-chars", "3"], "min_chars: 1 -> 3"),
        ([*args, "--checks", "default"], "checks: ['none'] -> ['default']"),
        ([*args, "--allow-changed", "nonsense"], "not recorded settings"),
    ]  # fmt: skip
    for argv, named in refused:
        assert main(argv) == 2, named
        err = capsys.readouterr().err
        assert err.startswith("sts-build-corpus: error: ") and named in err and len(err.splitlines()) == 1, (
            err
        )
    assert (out / "corpus.json").read_text() == card  # nothing rewritten
    # Same settings spelled differently (JSON spacing, the batch size, a relative path) still resume,
    # and so does the same text at another path (the record follows it).
    monkeypatch.chdir(tmp_path)
    same = ["--out-dir", str(out), "--source", "text-pairs", "--path", "ja.txt", "--tgt-path", "ja-en.txt",
            "--mt", "reference", "--tts", TONE, "--tts-kwargs", '{ "sample_rate" : 16000 }', "--checks", "none",
            "--batch-size", "7"]  # fmt: skip
    assert main(same) == 0
    assert main(["--out-dir", str(out), *moved, *flags]) == 0
    layout = json.loads((out / ".progress" / "layout.json").read_text())
    assert layout["path"]["file"] == str((tmp_path / "moved" / "ja.txt").resolve())
    # Other text, allowed by name (here: lines appended): the rows already made stay, the new one is added.
    assert main(["--out-dir", str(out), *other, *flags, "--allow-changed", "path", "tgt_path"]) == 0
    assert json.loads((out / "corpus.json").read_text())["config"]["path"] == other[3]
    assert _ids(out) == Counter(f"ja-{i:08d}" for i in range(4))
    assert json.loads((out / ".progress" / "layout.json").read_text())["rows_per_shard"] == 1000


def test_sources_need_their_paths(tmp_path, capsys):
    out = str(tmp_path / "corpus")
    cases = [
        (["--source", "local"], "--source local needs --path"),
        (["--source", "local", "--path", str(tmp_path / "missing.jsonl")], "missing.jsonl: no such file"),
        (["--source", "text-pairs", "--path", str(tmp_path)], "--source text-pairs needs --tgt-path"),
    ]
    for flags, message in cases:
        assert main(["--out-dir", out, *flags, "--mt", "reference", "--tts", TONE, "--checks", "none"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sts-build-corpus: error: ") and message in err, err
    assert not (tmp_path / "corpus").exists()  # refused before anything was written
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.wav", "text": "x", "language": "ja"}\n{"audio": broken\n')
    assert main(["--out-dir", out, "--source", "local", "--path", str(manifest), "--mt", "reference",
                 "--tts", TONE, "--checks", "none"]) == 2  # fmt: skip
    assert f"{manifest}:2: not valid JSON" in capsys.readouterr().err


def test_a_second_builder_of_the_same_worker_is_refused_or_waits(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = _args(out, tmp_path, 4, "--num-shards", "2")
    (out / "data").mkdir(parents=True)
    stale = out / "data" / ".part-00000-of-00002-000000.parquet.tmp-99999"
    stale.write_bytes(b"a live builder's temp shard")
    with shards.worker_lock(out, 0, 2):  # worker 0 is being built by someone else
        assert main([*args, "--shard-index", "0"]) == 2
        err = capsys.readouterr().err
        assert "another sts-build-corpus (pid " in err and "worker 0 of 2" in err and "--wait-for-lock" in err
        assert stale.exists(), "a live builder's temp file must survive"
        assert main([*args, "--shard-index", "1"]) == 0  # other workers run in parallel
    assert main([*args, "--shard-index", "0"]) == 0
    assert not stale.exists()  # stale once no live builder holds the lock
    assert _ids(out) == Counter(f"ja-{i:08d}" for i in range(4))

    held = threading.Event()

    def hold_briefly():
        with shards.worker_lock(out, 1, 2):
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    held.wait()
    start = time.time()
    assert main([*args, "--shard-index", "1", "--wait-for-lock"]) == 0
    assert time.time() - start >= 0.3
    thread.join()


def test_silent_source_clips_are_dropped_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    clips = {
        "speech": (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
        "silence": np.zeros(32000, np.float32),
        "room_tone": (rng.standard_normal(32000) * 10**(-60 / 20)).astype(np.float32),  # about -60 dBFS
    }  # fmt: skip
    records = []
    for name, wav in clips.items():
        write_audio(tmp_path / f"{name}.wav", wav)
        records.append(
            {"id": name, "audio": f"{name}.wav", "text": "こんにちは", "language": "ja", "tgt_text": "Hi"}
        )
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records))
    out = tmp_path / "corpus"
    assert main(["--out-dir", str(out), "--source", "local", "--path", str(manifest), "--mt", "reference",
                 "--tts", TONE, "--checks", "none", "--min-duration", "1"]) == 0  # fmt: skip
    card = json.loads((out / "corpus.json").read_text())
    assert card["drops"] == {"silent_audio": 2} and card["rows"] == 1
    assert [r["id"] for r in read_rows(out, columns=["id"])] == ["speech"]
    assert pq.read_metadata(shard_paths(out)[0]).num_rows == 1
