"""`sts-eval --benchmark` end to end on the tiny random checkpoint: FLEURS, CVSS-C and CoVoST 2 from
local copies in their layouts, the summary row, DNSMOS per output and SimulEval latency with --stream."""

from __future__ import annotations

import json

import pytest
from test_infer_cli import codec_dir, model_dir  # noqa: F401  (module fixtures)
from testset_copies import make_common_voice, make_covost2, make_cvss, make_fleurs_original

from infer.cli import eval_main as main

pytest.importorskip("sacrebleu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    make_fleurs_original(root / "fleurs")
    make_common_voice(root / "cv")
    make_cvss(root / "cvss")
    make_covost2(root / "covost")
    return root


def _run(model, out, *args) -> dict:
    common = ["--model", str(model), "-o", str(out), "--asr", "self", "--max-new-tokens", "12"]
    assert main([*common, "--no-speaker-similarity", *args]) == 0
    return json.loads((out / "report.json").read_text())


def test_fleurs_every_task_with_its_summary_row(model_dir, data, tmp_path):  # noqa: F811
    out = tmp_path / "fleurs"
    report = _run(model_dir, out, "--benchmark", "fleurs", "--data-dir", str(data / "fleurs"), "--no-dnsmos")
    assert report["test_set"]["benchmark"] == "fleurs" and report["test_set"]["dropped"] == {
        "no_target_sentence": 1
    }
    assert {t: s["n"] for t, s in report["tasks"].items()} == {"s2st": 3, "s2tt": 3, "asr": 3}
    rows = {(r["task"], r["target"]): r for r in report["summary"]}
    assert set(rows) == {("s2st", "en"), ("s2tt", "en"), ("asr", "ja")}
    s2st = rows[("s2st", "en")]
    assert s2st["metric"] == "ASR-BLEU" and s2st["protocol"].startswith("ASR-BLEU (Whisper normalizer")
    assert s2st["asr_model"] == "sts-checkpoint:asr" and not s2st["comparable"]
    assert any("not Whisper medium.en" in why for why in s2st["not_comparable"])
    assert rows[("s2tt", "en")]["protocol"] == "raw text" and rows[("s2tt", "en")]["comparable"]  # whole set
    assert rows[("asr", "ja")]["metric"] == "CER"
    assert s2st["score"] == report["tasks"]["s2st"]["to_en"]["bleu"]["13a"]["score"]
    md = (out / "summary.md").read_text()
    assert "| fleurs | test | ja-en | s2st | 3 | ASR-BLEU |" in md and "not Whisper medium.en" in md
    lines = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert {r["id"] for r in lines} == {"1-1000", "1-1001", "2-1010"}


def test_cvss_streamed_with_dnsmos_and_latency(model_dir, data, tmp_path):  # noqa: F811
    pytest.importorskip("speechmos")
    out = tmp_path / "cvss"
    args = [
        "--benchmark",
        "cvss",
        "--data-dir",
        str(data / "cvss"),
        "--common-voice-dir",
        str(data / "cv" / "ja"),
    ]
    report = _run(
        model_dir, out, *args, "--tasks", "s2st", "--stream", "--max-items", "1", "--no-codec-roundtrip"
    )
    s2st = report["tasks"]["s2st"]
    [row] = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    # DNSMOS per output, and the task's mean
    assert set(row["dnsmos"]) == {"sig", "bak", "ovrl", "p808"} and 1 <= row["dnsmos"]["ovrl"] <= 5
    assert s2st["dnsmos"]["n"] == 1 and s2st["dnsmos"]["ovrl"] == pytest.approx(
        row["dnsmos"]["ovrl"], abs=1e-3
    )
    # SimulEval latency of a model that reads the whole source first
    ideal, aware = row["latency_ms"]["ideal"], row["latency_ms"]["computation_aware"]
    assert ideal["StartOffset"] == pytest.approx(1000 * row["source_seconds"], abs=1)
    assert ideal["EndOffset"] == pytest.approx(1000 * row["output_seconds"], abs=25)
    assert aware["StartOffset"] > ideal["StartOffset"] and aware["EndOffset"] >= ideal["EndOffset"]
    assert s2st["latency"]["unit"] == "ms" and s2st["latency"]["ideal"]["StartOffset"] == ideal["StartOffset"]
    [summary] = report["summary"]
    assert (
        summary["dnsmos"]["ovrl"] == s2st["dnsmos"]["ovrl"]
        and summary["latency_ms"]["ideal"] == s2st["latency"]["ideal"]
    )
    assert "the first 1 items only (--max-items)" in summary["not_comparable"]


def test_covost2_speech_to_text_and_refusals(model_dir, data, tmp_path, capsys):  # noqa: F811
    cv = ["--common-voice-dir", str(data / "cv" / "ja")]
    report = _run(
        model_dir, tmp_path / "covost", "--benchmark", "covost2", "--data-dir", str(data / "covost"), *cv
    )
    assert set(report["tasks"]) == {"s2tt", "asr"} and report["tasks"]["s2tt"]["n"] == 2
    base = ["--model", str(model_dir), "-o", str(tmp_path / "x")]
    assert (
        main([*base, "--benchmark", "covost2", "--data-dir", str(data / "covost"), *cv, "--tasks", "s2st"])
        == 2
    )
    assert "--benchmark covost2 has no ['s2st']" in capsys.readouterr().err
    assert main([*base, "--benchmark", "cvss"]) == 2
    assert "Common Voice release 4" in capsys.readouterr().err
    assert main(base) == 2
    assert "give a test manifest or --benchmark" in capsys.readouterr().err
