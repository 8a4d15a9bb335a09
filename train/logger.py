"""Metrics: one line per logging step on stdout (rank 0), `metrics.jsonl` in the run folder, and
tensorboard or wandb when installed and chosen (a no-op otherwise); `gen_eval.png`, the generation
metrics over training (`plot_gen_eval`, with matplotlib)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


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

    def log(self, step: int, values: dict[str, float], kind: str = "train", line: str | None = None) -> None:
        """Record `values` at `step`; `line` replaces the printed `k v` list (every value is still recorded)."""
        if not self.enabled:
            return
        parts = [f"{kind} step {step}/{self.max_steps}"]
        if line is not None:
            parts.append(line)
        else:
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


PLOTTED = (
    ("loop_rate", "loop rate"),
    ("end_marker_rate", "end-marker rate"),
    ("length_ratio_median", "length / reference (median)"),
    ("stray_id_rate", "stray-id rate"),
    ("chrf", "chrF++ (text out) / ASR-chrF++ (speech out)"),
)
"""The per-group generation metrics `plot_gen_eval` draws, one panel each."""


def plot_gen_eval(out_dir: str | Path) -> Path | None:
    """Draw `gen_eval.png` in the run folder from its `gen_eval` records: one panel per metric of
    `PLOTTED`, one line per task group (the pooled `speech_out`/`text_out` dashed), over the steps.
    None without matplotlib or records."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = read_metrics(out_dir, kind="gen_eval")
    if not records:
        return None
    groups = sorted(
        {k.split("/")[1] for r in records for k in r if k.startswith("gen/") and k.count("/") == 2}
    )
    colors = dict(zip(groups, plt.get_cmap("tab20")(np.linspace(0, 1, max(len(groups), 2))), strict=False))
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (metric, title) in zip(axes.flat, PLOTTED, strict=False):
        for group in groups:
            for key in (f"gen/{group}/{metric}", f"gen/{group}/asr_{metric}"):
                points = [(r["step"], r[key]) for r in records if key in r]
                if points:
                    pooled = group.endswith("_out")
                    ax.plot(*zip(*points, strict=True), marker="o", ms=3, color=colors[group], label=group,
                            ls="--" if pooled else "-", lw=2.5 if pooled else 1.2)  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    handles = {line.get_label(): line for ax in axes.flat for line in ax.lines}
    axes.flat[-1].axis("off")
    axes.flat[-1].legend(handles.values(), handles.keys(), loc="center", fontsize=8, ncol=2)
    fig.tight_layout()
    path = Path(out_dir) / "gen_eval.png"
    tmp = path.with_name(f".{path.stem}.tmp.png")  # written whole, then renamed over the old plot
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path
