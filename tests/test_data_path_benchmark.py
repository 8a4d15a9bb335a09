"""benchmarks/data_path.py --tiny: both data paths run, agree, and ours is faster than naive on each."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_scripts import load_benchmark

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "data_path.py"


def test_tiny_data_path_benchmark_reports_both_rates(extended_lm_dir, tmp_path, capsys):
    bench = load_benchmark("data_path")
    out = tmp_path / "data_path.json"
    result = bench.main(["--tiny", "--model", str(extended_lm_dir), "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    for key in ("s2st_samples_per_s", "cpt_docs_per_s"):
        rates = result[key]
        assert rates["naive"] > 0 and rates["ours"] > rates["naive"], (key, rates)
        assert rates["speedup"] == rates["ours"] / rates["naive"]
    printed = capsys.readouterr().out
    assert "s2st samples/s (build)" in printed and "cpt docs/s (Parquet)" in printed
