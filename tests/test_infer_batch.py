"""`sts-infer` batch mode loses nothing: unique outputs, outputs committed with their rows, kills survived."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_infer_cli import codec_dir, model_dir  # noqa: F401  (module fixtures)

from infer.batch import PAUSE_ENV, Ledger, Planned, plan_outputs, read_ledger
from infer.cli import main
from sts.audio import write_audio
from sts.errors import ManifestError, UsageError
from sts.testing import synthetic_utterance

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch-in")
    for i, name in enumerate("abc"):
        write_audio(root / f"{name}.wav", synthetic_utterance(0.5 + 0.1 * i, 140.0 + 30 * i, seed=i))
    return root


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _args(inp, out, model) -> list[str]:
    return [str(inp), "--from", "ja", "-o", str(out), "--model", str(model), "--max-new-tokens", "6",
            "--batch-size", "1"]  # fmt: skip


def test_two_inputs_with_one_output_name_are_refused(model_dir, folder, tmp_path, capsys):  # noqa: F811
    clips = tmp_path / "clips"
    shutil.copytree(folder, clips)
    data, sr = sf.read(clips / "a.wav")
    sf.write(clips / "a.flac", data, sr)  # a.wav and a.flac would both write out/a.wav
    assert main(_args(clips, tmp_path / "out", model_dir)) == 2
    err = capsys.readouterr().err
    assert "a.wav: would write" in err and "a.flac does" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "results.jsonl").exists()

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "u1", "audio": str(folder / "a.wav")}) + "\n"
        + json.dumps({"id": "u1", "audio": str(folder / "b.wav")}) + "\n"
    )  # fmt: skip
    assert main(_args(manifest, tmp_path / "out", model_dir)) == 2
    assert f"{manifest}:2: would write" in (err := capsys.readouterr().err) and f"as {manifest}:1 does" in err

    for bad_id in ("../../escape", "sub/name", "..", ".hidden"):
        manifest.write_text(json.dumps({"id": bad_id, "audio": str(folder / "a.wav")}) + "\n")
        assert main(_args(manifest, tmp_path / "out", model_dir)) == 2
        assert f"{manifest}:1: id {bad_id!r}" in capsys.readouterr().err
    manifest.write_text(json.dumps({"id": ["x"], "audio": str(folder / "a.wav")}) + "\n")
    assert main(_args(manifest, tmp_path / "out", model_dir)) == 2
    assert f"{manifest}:1: 'id' must be a string (or an integer)" in capsys.readouterr().err
    assert not (tmp_path.parent / "escape.wav").exists() and not list((tmp_path / "out").glob("*.wav"))


def test_manifest_bom_and_integer_ids(model_dir, folder, tmp_path):  # noqa: F811
    manifest = tmp_path / "m.jsonl"
    lines = [json.dumps({"id": 7, "audio": str(folder / "a.wav"), "src_lang": "ja"})]
    manifest.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")  # as Windows editors save it
    out = tmp_path / "out"
    assert main(_args(manifest, out, model_dir)) == 0
    assert [r["id"] for r in _rows(out)] == ["7"] and (out / "7.wav").is_file()


@pytest.mark.slow  # two real processes: ~10 s each on 2 cores
@pytest.mark.parametrize("step", ["after_output", "after_row"])
def test_sigkill_between_the_writes_loses_nothing(model_dir, folder, tmp_path, step):  # noqa: F811
    """Kill the real CLI while it commits b (after b's audio is written, or after its row is appended
    too); the rerun finishes with every input's output and exactly one row per input."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), PAUSE_ENV: f"{step}:b", "STS_TRACEBACK": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infer.cli", *_args(folder, out, model_dir)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        for line in proc.stderr:  # the pause line says the process is between the two writes of b
            if line.startswith(f"paused: b {step}"):
                break
            assert time.monotonic() < deadline, "the CLI never reached the pause"
        else:
            pytest.fail(f"the CLI exited ({proc.wait()}) without pausing")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert (out / "a.wav").is_file() and not (out / "b.wav").exists() and not (out / "c.wav").exists()
    assert list(out.glob(".b.tmp-*.wav"))  # b's audio is there under its temp name only
    assert [r["id"] for r in _rows(out)] == (["a", "b"] if step == "after_row" else ["a"])

    assert main(_args(folder, out, model_dir)) == 0  # the rerun: b and c
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == ["a", "b", "c"]  # each exactly once
    for row in rows:
        assert Path(row["output"]).is_file() and row["output"] == str(out / f"{row['id']}.wav")
    assert not list(out.glob(".*.tmp-*"))


def test_silent_input_is_warned_and_still_translated(model_dir, folder, tmp_path, capsys):  # noqa: F811
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(folder / "a.wav", clips / "a.wav")
    noise = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 1e-4  # about -80 dBFS
    write_audio(clips / "quiet.wav", noise)
    out = tmp_path / "out"
    assert main(_args(clips, out, model_dir)) == 0
    rows = {r["id"]: r for r in _rows(out)}
    assert (out / "quiet.wav").is_file() and rows["quiet"]["codes"] >= 1
    assert any("silent or near-silent" in w for w in rows["quiet"]["warnings"])
    assert not any("silent" in w for w in rows["a"]["warnings"])
    assert "warning: quiet: " in capsys.readouterr().err


def test_output_paths_are_checked_before_the_model_loads(model_dir, folder, tmp_path, capsys, monkeypatch):  # noqa: F811
    import infer.run as cli

    monkeypatch.setattr(cli, "load_translator", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "file").write_text("x")
    cases = [
        ([str(folder), "-o", str(tmp_path / "file")], "file: is a file; batch mode writes"),
        ([str(folder), "-o", str(tmp_path / "out.wav")], "out.wav: looks like a file name"),
        ([str(folder / "a.wav"), "-o", str(tmp_path / "x.mp3")], "x.mp3: speech is written as .wav or .flac"),
        (
            [str(folder / "a.wav"), "--task", "asr", "-o", str(tmp_path / "x.wav")],
            "x.wav: text is written as .txt",
        ),
        ([str(folder / "a.wav"), "-o", str(tmp_path / "file" / "x.wav")], "file: cannot write here"),
        ([str(folder / "a.wav"), "-o", str(tmp_path)], "is a folder; give an output file name"),
    ]
    for args, message in cases:
        assert main([*args, "--from", "ja", "--model", str(model_dir)]) == 2
        assert message in capsys.readouterr().err, message


def test_ledger_reads_past_a_cut_short_last_line_and_dedupes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    items = [{"id": i, "where": f"m.jsonl:{n}"} for n, i in enumerate("ab", 1)]
    plan = plan_outputs(items, out, ".txt")
    (out / "a.txt").write_text("A\n")
    rows = [{"id": "a", "output": str(out / "a.txt")}, {"id": "a", "output": str(out / "a.txt")},
            {"id": "b", "output": str(out / "b.txt")}]  # fmt: skip
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "c", "outp')
    ledger = Ledger(out / "results.jsonl")
    assert [p.item["id"] for p in ledger.pending(plan)] == ["b"]  # b has a row but no file
    assert read_ledger(out / "results.jsonl") == [rows[1]]  # one row for a; b's and the cut line gone
    ledger.commit({"id": "b", "output": str(out / "b.txt")}, out / "b.txt", lambda p: p.write_text("B\n"))
    assert [r["id"] for r in read_ledger(out / "results.jsonl")] == ["a", "b"]
    assert Ledger(out / "results.jsonl").pending(plan) == []
    (out / "results.jsonl").write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ManifestError, match=r"results.jsonl:2: not a results row"):
        Ledger(out / "results.jsonl")
    with pytest.raises(UsageError, match="X.wav: would write .*, as x.wav does"):
        plan_outputs([{"id": "x", "where": "x.wav"}, {"id": "X", "where": "X.wav"}], out, ".wav")
    assert isinstance(plan[0], Planned) and plan[1].target == out / "b.txt"
