"""One writer per output folder, what a kill left behind removed, checkpoints a resume and `keep_last`
can trust (sts.lock, sts.io.remove_stale_temps, train.checkpoint)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_infer_cli import codec_dir, model_dir  # noqa: F401  (module fixtures)

from sts.io import HOST_TAG, remove_stale_temps, writer_is_gone
from sts.testing import synthetic_utterance
from train.checkpoint import checkpoint_problem, list_checkpoints
from train.config import CONFIG_DIR
from train.logger import read_metrics
from train.testing import write_tiny_encoded_shards

ROOT = Path(__file__).resolve().parents[1]
HOLD = """import sys, time
from sts.lock import folder_lock
with folder_lock(sys.argv[1], program=sys.argv[2], refusal=""):
    print("held", flush=True)
    time.sleep(300)
"""


@contextmanager
def held_by_another_process(lock: Path, program: str):
    """A live process holding `lock` as `program`; yields its pid."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), program], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_of(path: Path, pid: int, host: str = HOST_TAG, rest: str = "") -> Path:
    return path.with_name(f".{path.name}.tmp-{pid}-{host}{rest}")


def _refused_by(err: str, pid: int, program: str) -> bool:
    return f"{program} (pid {pid} on {socket.gethostname()}, started 20" in err


def test_only_temps_of_gone_writers_are_removed(tmp_path):
    dead = gone_pid()
    with live_process() as alive:
        gone = [temp_of(tmp_path / "a.parquet", dead), tmp_path / f".b.json.tmp-{dead}",  # before hosts were named
                temp_of(tmp_path / "c", dead, rest=".wav"), temp_of(tmp_path / "model", dead, rest="-x1y2z3")]  # fmt: skip
        kept = [temp_of(tmp_path / "a.parquet", alive), temp_of(tmp_path / "a.parquet", os.getpid()),
                temp_of(tmp_path / "d", dead, host="0badc0de"),  # another host's: cannot tell
                tmp_path / "e.parquet", tmp_path / ".e.parquet", tmp_path / ".f.tmp-notapid"]  # fmt: skip
        for path in gone + kept:
            path.write_bytes(b"x") if not path.name.endswith("x1y2z3") else path.mkdir()
        assert writer_is_gone(gone[0]) and not writer_is_gone(kept[0]) and not writer_is_gone(kept[2])
        assert sorted(remove_stale_temps(tmp_path)) == sorted(gone)
        assert sorted(p for p in tmp_path.iterdir()) == sorted(kept)
        assert remove_stale_temps(tmp_path, "d", any_writer=True) == [kept[2]]


def test_a_second_sts_infer_batch_on_one_folder_is_refused(model_dir, tmp_path, capsys):  # noqa: F811
    from infer.cli import main
    from sts.audio import write_audio
    from sts.lock import LOCK_NAME

    clips, out = tmp_path / "clips", tmp_path / "out"
    for i, name in enumerate("ab"):
        write_audio(clips / f"{name}.wav", synthetic_utterance(0.5, 140.0 + 30 * i, seed=i))
    args = [str(clips), "--from", "ja", "-o", str(out), "--model", str(model_dir), "--max-new-tokens", "6"]
    stale = temp_of(out / "a.wav", gone_pid())
    out.mkdir()
    stale.write_bytes(b"half an output")
    with held_by_another_process(out / LOCK_NAME, "sts-infer") as pid:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("sts-infer: error: ") and _refused_by(err, pid, "sts-infer"), err
        assert "another -o" in err and not (out / "results.jsonl").exists() and stale.exists()
    assert main(args) == 0
    assert not stale.exists()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["a", "b"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_encoded_shards(tmp_path_factory.mktemp("state") / "corpus", num_codes=1024)[
        0
    ].parent.parent


def _train_args(model, corpus, out, *extra):
    return ["cpt", "--config", str(CONFIG_DIR / "tiny_cpt.yaml"), "--model", str(model), "--data.shards", str(corpus),
            "--out-dir", str(out), *extra]  # fmt: skip


def test_a_second_training_run_is_refused_and_a_killed_runs_leftovers_go(
    extended_lm_dir, corpus, tmp_path, capsys
):
    from sts.lock import LOCK_NAME
    from train.cli import main

    out = tmp_path / "run"
    args = _train_args(extended_lm_dir, corpus, out)
    (out / ".checkpoint-0000002.tmp" / "train_state").mkdir(parents=True)  # a kill while saving
    dead = gone_pid()
    leftovers = [temp_of(out / "reference_logps.npz", dead), temp_of(out / "token_cache" / "cpt-train-0.safetensors", dead),
                 temp_of(out / "token_cache" / "cpt-train-0.parts", dead)]  # fmt: skip
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    with live_process() as alive:
        live = temp_of(out / "token_cache" / "shared-cache.safetensors", alive)  # another run's, live
        live.write_bytes(b"x")
        with held_by_another_process(out / LOCK_NAME, "sts-train sft") as pid:
            assert main(args) == 2
            err = capsys.readouterr().err
            assert _refused_by(err, pid, "sts-train sft") and "another --out-dir" in err, err
            assert not list_checkpoints(out)
        assert main(args) == 0
        assert live.exists() and not any(p.exists() for p in leftovers)
        assert not (out / ".checkpoint-0000002.tmp").exists()
        assert [c.name for c in list_checkpoints(out)] == ["checkpoint-0000002", "checkpoint-0000004"]


def test_resume_and_keep_last_pass_over_a_truncated_optimizer_state(
    extended_lm_dir, corpus, tmp_path, capsys
):
    from train.cli import main

    out = tmp_path / "run"
    assert main(_train_args(extended_lm_dir, corpus, out)) == 0
    straight = {r["step"]: r["loss"] for r in read_metrics(out)}
    newest = list_checkpoints(out)[-1]
    state = newest / "train_state" / "train_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert "train_state/train_state.pt: not a whole torch.save file" in checkpoint_problem(newest)
    (out / "metrics.jsonl").unlink()
    capsys.readouterr()
    # resumed from checkpoint 2 (4 is damaged); saves 3, and keep_last 1 keeps 3: the damaged 4 goes
    # first, never the intact checkpoint while the damaged one stays
    assert main(_train_args(extended_lm_dir, corpus, out, "--optim.max-steps", "3", "--log.save-every", "3",
                            "--log.keep-last", "1")) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "checkpoint-0000004 is damaged (train_state/train_state.pt: not a whole torch.save file" in printed
    assert "removing damaged checkpoint-0000004" in printed
    assert [c.name for c in list_checkpoints(out)] == ["checkpoint-0000003"]
    assert {r["step"]: r["loss"] for r in read_metrics(out)} == pytest.approx({3: straight[3]}, rel=1e-6)


def test_the_builder_and_sts_encode_remove_a_killed_runs_temps_and_encode_holds_a_lock(tmp_path, capsys):
    from corpus_builder.cli import encode_main
    from corpus_builder.cli import main as build_main
    from sts.codec.melkmeans import MelKMeansCodec
    from sts.corpus import shard_paths

    (tmp_path / "ja.txt").write_text("あ\nいいい\nううううう\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("a\nbb\ncccc\n", encoding="utf-8")
    out = tmp_path / "corpus"
    build = ["--out-dir", str(out), "--source", "text-pairs", "--path", str(tmp_path / "ja.txt"), "--tgt-path",
             str(tmp_path / "en.txt"), "--mt", "reference", "--tts", "python:corpus_builder.testing:ToneTTS",
             "--checks", "none", "--rows-per-shard", "2"]  # fmt: skip
    assert build_main(build) == 0
    dead = gone_pid()
    with live_process() as alive:
        gone = [temp_of(out / "corpus.json", dead), temp_of(out / ".progress" / "layout.json", dead),
                temp_of(shard_paths(out)[0], dead)]  # e.g. sts-encode's full-size temp shard  # fmt: skip
        live = temp_of(out / "README.md", alive)
        for path in [*gone, live]:
            path.write_bytes(b"x" * 1000)
        assert build_main(build) == 0  # everything done: only the cleaning
        assert live.exists() and not any(p.exists() for p in gone)
        for path in gone:
            path.write_bytes(b"x" * 1000)
        codec = tmp_path / "codec"
        MelKMeansCodec.fit([synthetic_utterance(1.0, 150.0, seed=0)], codebook_size=16, seed=0).save(codec)
        with held_by_another_process(out / ".progress" / "lock-encode", "sts-encode") as pid:
            assert encode_main([str(out), "--codec", str(codec)]) == 2
            err = capsys.readouterr().err
            assert _refused_by(err, pid, "sts-encode") and "encoding this corpus" in err, err
        assert encode_main([str(out), "--codec", str(codec)]) == 0
        assert live.exists() and not any(p.exists() for p in gone[2:])


def test_extend_removes_the_staged_weights_of_a_killed_run(tiny_lm_dir, tmp_path):
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    out = tmp_path / "lm-speech"
    staged = temp_of(out, gone_pid(), rest="-k1l2m3")
    (staged / "model.safetensors").parent.mkdir(parents=True)
    (staged / "model.safetensors").write_bytes(b"x" * 1000)
    with live_process() as alive:
        live = temp_of(out, alive, rest="-n4o5p6")
        live.mkdir()
        extend_tokenizer(ExtendConfig(str(tiny_lm_dir), out, num_speech_tokens=64))
        assert (out / "sts_vocab.json").is_file() and live.exists() and not staged.exists()
        shutil.rmtree(live)
