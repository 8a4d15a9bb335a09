"""benchmarks/train_throughput.py --tiny: the naive and fast paths run and agree; the FLOP count is right."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("train_throughput")


def test_tiny_benchmark_runs_both_paths(bench, tmp_path, capsys):
    rows = bench.main(
        ["--tiny", "--steps", "1", "--warmup", "0", "--peak-tflops", "1", "--json", str(tmp_path / "r.json")]
    )
    assert [r["path"] for r in rows] == ["naive", "fast"]
    naive, fast = rows
    assert fast["loss_impl"] == "chunked" and naive["loss_impl"] == "hf"
    assert fast["first_loss"] == pytest.approx(naive["first_loss"], abs=1e-3)  # same model, same loss
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in rows)
    assert "| fast | chunked | 2x128 |" in capsys.readouterr().out
    assert (tmp_path / "r.json").is_file()


def test_full_shape_is_the_extended_lfm2_350m(bench):
    import torch
    from transformers import Lfm2ForCausalLM

    config = bench.model_config(tiny=False)
    assert config.vocab_size == 131_200  # 65,536 text + 65,536 speech + 2 markers, padded to 128
    with torch.device("meta"):
        params = sum(p.numel() for p in Lfm2ForCausalLM(config).parameters())
    assert 421e6 < params < 423e6
    assert sum(t == "full_attention" for t in config.layer_types) == 6
    # 6N + 12 * 6 layers * 1024 * 4096 FLOPs per token
    assert bench.flops_per_token(config, params, 4096) == pytest.approx(6 * params + 12 * 6 * 1024 * 4096)
