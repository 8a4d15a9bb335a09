"""benchmarks/dpo_ablation.py's table: mean ± std over the seeds that ran, and a plain line for a
model no seed trained (no answer beat another by the pair margin, so there was no DPO run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "dpo_ablation.py"


def _bench():
    return load_benchmark("dpo_ablation")


def _scores(loop: float, chrf: float) -> dict:
    one = {"n": 8, "loop_rate": loop, "end_rate": 1.0 - loop, "length_ratio": 1.0, "asr_chrf": chrf,
           "speaker_sim": 0.5}  # fmt: skip
    return {"held-out": one, "train": dict(one, n=4)}


def test_table_averages_seeds_and_names_models_without_runs():
    results = [{"seed": s, "model": "SFT", "scale": scale, **_scores(loop, chrf)}
               for s, (loop, chrf) in enumerate([(0.0, 10.0), (0.5, 20.0)]) for scale in (1.0, 2.0)]  # fmt: skip
    lines = _bench().table(results, 2.0).splitlines()
    sft = [line for line in lines if "| SFT (2 seeds) | off |" in line]
    assert len(sft) == 2 and sft[0].startswith("| held-out (8) |") and sft[1].startswith("| train (4) |")
    cells = [c.strip() for c in sft[0].strip("|").split("|")]
    assert cells[3] == "0.25 ± 0.25" and cells[4] == "0.75 ± 0.25" and cells[6] == "15.0 ± 5.0"
    missing = [line for line in lines if "SFT + DPO" in line]
    assert len(missing) == 4 and all("no seed had a preference pair" in line for line in missing)
    assert all(line.count("|") == lines[0].count("|") for line in lines)  # every row has every column


def test_unscored_speaker_similarity_is_counted_and_null_not_nan():
    bench = _bench()
    scores = bench.speaker_scores([0.5, None, 0.7, None])
    assert scores == {"speaker_sim": pytest.approx(0.6, abs=1e-15), "speaker_n": 2, "speaker_unscored": 2}
    none = bench.speaker_scores([None, None])
    assert none == {"speaker_sim": None, "speaker_n": 0, "speaker_unscored": 2}
    assert json.loads(json.dumps(none, allow_nan=False))["speaker_sim"] is None  # valid JSON: null

    results = [{"seed": s, "model": "SFT", "scale": 1.0, **_scores(0.0, 10.0)} for s in range(2)]
    results[0]["held-out"]["speaker_sim"] = None  # one seed scored no output
    results[1]["held-out"] = dict(results[1]["held-out"], speaker_sim=0.4)
    lines = bench.table(results, 2.0).splitlines()
    held_out = next(line for line in lines if line.startswith("| held-out (8) | SFT (2 seeds) | off |"))
    assert held_out.strip("|").split("|")[-1].strip() == "0.40 ± 0.00"  # the seed that scored
    results[1]["held-out"]["speaker_sim"] = None
    lines = bench.table(results, 2.0).splitlines()
    held_out = next(line for line in lines if line.startswith("| held-out (8) | SFT (2 seeds) | off |"))
    assert held_out.strip("|").split("|")[-1].strip() == "no score"


def test_a_seed_scored_under_other_flags_is_refused_not_mixed(tmp_path):
    """A seed folder remembers the flags its pairs, DPO run and scores came from; a rerun with others
    is told which, instead of reusing them under the new flags' name."""
    bench = _bench()
    args = bench.Args(demo=tmp_path / "demo", pair_prompts=64, pair_temperature=0.8)
    (tmp_path / "settings.json").write_text(json.dumps(bench.scored_settings(args)))
    assert bench.settings_problem(tmp_path / "settings.json", args) is None
    other = bench.Args(demo=tmp_path / "demo", pair_prompts=32, pair_temperature=0.8, seeds=[5])
    assert bench.settings_problem(tmp_path / "settings.json", other) == "scored with --pair-prompts 64"
    assert bench.settings_problem(tmp_path / "missing.json", other) is None  # a folder from before the file
