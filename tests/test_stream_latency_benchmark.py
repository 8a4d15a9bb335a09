"""benchmarks/stream_latency.py --mode tiny: both paths run and report SimulEval's latency metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_stream_latency_reports_simuleval_metrics(monkeypatch, tmp_path):
    bench = load_benchmark("stream_latency")
    monkeypatch.setattr(sys, "argv", ["stream_latency.py"])
    result = bench.main(["--mode", "tiny", "--new-tokens", "30", "--repeats", "1", "--source-seconds", "1.5"])
    rows = {r["path"]: r for r in result["rows"]}
    for path, row in rows.items():
        assert row["StartOffset_ideal"] == 1500.0  # the whole source is read before the first audio
        assert row["EndOffset_ideal"] == pytest.approx(1000 * row["output_seconds"], abs=1)
        assert row["StartOffset_computation_aware"] == pytest.approx(1500 + 1000 * row["first_audio"], abs=1)
        assert row["EndOffset_computation_aware"] >= row["EndOffset_ideal"]
        assert row["ATD_computation_aware"] >= row["ATD_ideal"] > 0, path
    # run gives its audio only when done; stream starts earlier
    assert rows["run"]["StartOffset_computation_aware"] == pytest.approx(
        1500 + 1000 * rows["run"]["total"], abs=1
    )
