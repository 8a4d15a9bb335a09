"""Metrics: one line per logging step on stdout (rank 0), `metrics.jsonl` in the run folder, and
tensorboard or wandb when installed and chosen (a no-op otherwise)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricLogger:
    """`log(step, {...})` prints `step 10/100 | loss 3.2100 | ...`, appends to metrics.jsonl, and forwards."""

    def __init__(
        self, out_dir: Path, max_steps: int, backend: str = "auto", enabled: bool = True, config=None
    ):
        self.enabled, self.max_steps = enabled, max_steps
        self.path = Path(out_dir) / "metrics.jsonl"
        self._tb = self._wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if backend == "none":
            return
        if backend in ("auto", "tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except ImportError:
                if backend == "tensorboard":
                    raise
        if backend == "wandb":
            import wandb

            self._wandb = wandb.init(dir=str(out_dir), config=config, resume="allow")

    def log(self, step: int, values: dict[str, float], kind: str = "train") -> None:
        if not self.enabled:
            return
        parts = [f"{kind} step {step}/{self.max_steps}"]
        for k, v in values.items():
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) and not math.isnan(v) else f"{k} {v}")
        print(" | ".join(parts), flush=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
        if self._wandb is not None:
            self._wandb.log({f"{kind}/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(out_dir: str | Path, kind: str = "train") -> list[dict]:
    """The metric records of a run folder, oldest first."""
    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["kind"] == kind]
