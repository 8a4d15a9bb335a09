"""`sts tiny-run [OUT_DIR]`: flags -> `sts.smoke.run_tiny_pipeline`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tyro

from sts.config import parse_cli


@dataclass
class TinyRunConfig:
    """Run every existing stage end to end on tiny random models (no download, CPU, < 1 min)."""

    out_dir: tyro.conf.Positional[Path] = Path("runs/tiny")
    """Where the tiny models, audio and report.json go."""
    steps: int = 60
    """Optimizer steps of the overfitting check."""
    seed: int = 0
    """Seed for the random models and data."""


def main(args: Sequence[str] | None = None) -> int:
    import torch
    from rich.console import Console

    cfg = parse_cli(TinyRunConfig, args, prog="sts tiny-run")
    console = Console(stderr=True)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    from sts.smoke import run_tiny_pipeline

    report = run_tiny_pipeline(cfg.out_dir, steps=cfg.steps, seed=cfg.seed, log=console.log)
    print(json.dumps(report, indent=2))
    console.print(f"wrote {cfg.out_dir}/report.json, source.wav and translation.wav")
    return 0
