"""benchmarks/gpu_check.py: the one GPU script runs every benchmark in its --tiny CPU mode, keeps to its
budget, and prints the rows for RESULTS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


def test_a_step_past_its_budget_is_stopped_and_the_rest_skipped(gpu_check, tmp_path):
    slow = gpu_check.Step("sleepy", [], ["-c", "import time; time.sleep(30)"], budget_s=60)
    never = gpu_check.Step("late", [], ["-c", "print('never')"], budget_s=60)
    results = gpu_check.run_all([slow, never], tiny=True, budget_s=12, workdir=tmp_path, log=lambda _: None)
    assert [r.status for r in results] == ["timeout", "skipped"]
    assert results[0].seconds < 20
    rows = gpu_check.markdown_rows(results, device="cpu", date="2026-11-30")
    assert rows == [
        "| sleepy | | cpu | 2026-11-30 | TIMEOUT | |",
        "| late | | cpu | 2026-11-30 | SKIPPED | |",
    ]


def test_a_failing_step_is_reported_with_its_output(gpu_check, tmp_path):
    bad = gpu_check.Step("bad", [], ["-c", "raise SystemExit('no GPU here')"], budget_s=30)
    [result] = gpu_check.run_all([bad], tiny=True, budget_s=60, workdir=tmp_path, log=lambda _: None)
    assert result.status == "failed" and "no GPU here" in result.tail


@pytest.mark.slow
def test_tiny_mode_runs_every_benchmark(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    report = gpu_check.main(["--tiny", "--json", str(tmp_path / "gpu.json")])
    assert {name: step["status"] for name, step in report["steps"].items()} == {
        "train": "ok", "infer": "ok", "tts": "ok", "codec": "ok", "stream": "ok", "data": "ok"
    }  # fmt: skip
    assert json.loads((tmp_path / "gpu.json").read_text())["device"].startswith("cpu")
    steps = report["steps"]
    assert {row["path"] for row in steps["train"]["result"]["rows"]} == {"naive", "fast"}
    assert {row["path"] for row in steps["infer"]["result"]["generate"]} == {"naive", "fast"}
    assert {row["mode"] for row in steps["tts"]["result"]["rows"]} == {"eager", "static", "compiled"}
    assert {row["stage"] for row in steps["codec"]["result"]["rows"]} == {"encode", "decode"}
    assert {row["path"] for row in steps["stream"]["result"]["rows"]} == {"run", "stream"}
    data = steps["data"]["result"]
    assert data["s2st_samples_per_s"]["ours"] > data["s2st_samples_per_s"]["naive"]
    markdown = "\n".join(report["markdown"])
    for measure in (
        "train naive",
        "train fast",
        "infer fast",
        "tts compiled",
        "codec decode",
        "stream latency, stream",
        "data cpt_docs_per_s",
    ):
        assert measure in markdown
    assert report["total_seconds"] < 600
