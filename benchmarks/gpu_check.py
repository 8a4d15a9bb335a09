"""The one GPU check: every speed benchmark, naive and fast side by side, in at most 9 minutes.

    python benchmarks/gpu_check.py --json gpu_check.json        # one GPU (an H200 lease: 15 min in all)
    python benchmarks/gpu_check.py --tiny --json /tmp/gpu.json  # CPU logic check, about a minute (CI runs it)

A GPU is lent rarely and briefly, so this one script fills `benchmarks/RESULTS.md`: it runs the
training, inference, codec, TTS and data-path benchmarks one after another, each in its own process
(an OOM or a crash in one leaves the others running) under its own wall-clock budget, and stops
starting new steps when the total budget (`--budget-s`, default 540 s) would be passed. It writes
one JSON (every step's own result, its status, its time) and prints the Markdown rows to paste into
`RESULTS.md`, with the device, date and command.

Steps and what they compare (each script's docstring has the details):

    train   benchmarks/train_throughput.py   LFM2-350M + 65,536 speech tokens, seq 4096: eager full-logits
                                             loss vs chunked/fused linear cross-entropy (tokens/s, MFU, memory)
    infer   benchmarks/infer_throughput.py   speech tokens/s at batch 1 and 32: eager generate() vs the
                                             static-cache + CUDA-graph path; one 10 s clip end to end
    tts     benchmarks/tts_throughput.py     Llasa-1B shape: eager / static / compiled at batch 1, 64, 256
    codec   benchmarks/codec_throughput.py   XCodec2 (random full-size weights) encode and decode, x real time
    stream  benchmarks/stream_latency.py     time to first audio and real-time factor, `Translator.stream`
                                             vs `run` (LFM2-350M shape + full-size XCodec2, 250 codes)
    data    benchmarks/data_path.py          SFT samples/s and CPT docs/s, naive vs ours (CPU-bound)

Needs on the GPU machine: torch with CUDA, transformers >= 5.16, numpy, pyarrow, tokenizers (all in
the H200 image); `liger-kernel` (carried as a wheel) makes the train step use the fused loss; the
stream step builds its checkpoint with `tokenizer_ext`, which imports `tyro` and `pyyaml` (pure
Python: carry their wheels too, or that one step fails and the others run). The
repository root goes on PYTHONPATH; nothing is installed and nothing is downloaded (random weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

from annotated_types import Gt

from sts.cli import parse_cli

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@dataclass(frozen=True)
class Step:
    """One benchmark run: its command for the GPU and for the CPU logic check, and its time budget."""

    name: str
    gpu: list[str]
    """Python argv after the interpreter; `{json}` is replaced by the step's result file."""
    tiny: list[str]
    budget_s: float
    """Wall-clock seconds the step may take on the GPU before it is stopped."""


STEPS = [
    Step(
        "train",
        [str(BENCH / "train_throughput.py"), "--batches", "2x4096,16x4096", "--paths", "naive,fast",
         "--steps", "5", "--warmup", "2", "--json", "{json}"],
        [str(BENCH / "train_throughput.py"), "--tiny", "--steps", "2", "--warmup", "1", "--json", "{json}"],
        budget_s=150,
    ),
    Step(
        "infer",
        [str(BENCH / "infer_throughput.py"), "--device", "cuda", "--batch-sizes", "1", "32",
         "--new-tokens", "500", "--repeats", "1", "--json", "{json}"],
        [str(BENCH / "infer_throughput.py"), "--tiny", "--batch-sizes", "1", "2", "--new-tokens", "16",
         "--repeats", "1", "--json", "{json}"],
        budget_s=150,
    ),
    Step(
        "tts",
        ["-c", "import sys; sys.path.insert(0, {bench!r}); import tts_throughput as t; "
               "t.main(t.Args(batch_sizes=(1, 64, 256), new_tokens=500, json={json!r}))"],
        ["-c", "import sys; sys.path.insert(0, {bench!r}); import tts_throughput as t; "
               "t.main(t.Args(tiny=True, device='cpu', batch_sizes=(1, 2), new_tokens=8, json={json!r}))"],
        budget_s=150,
    ),
    Step(
        "codec",
        [str(BENCH / "codec_throughput.py"), "--random-init", "--device", "cuda", "--clips", "8",
         "--seconds", "10", "--repeats", "2", "--json", "{json}"],
        [str(BENCH / "codec_throughput.py"), "--tiny", "--device", "cpu", "--clips", "2", "--seconds", "1",
         "--repeats", "1", "--json", "{json}"],
        budget_s=60,
    ),
    Step(
        "stream",
        [str(BENCH / "stream_latency.py"), "--mode", "gpu", "--new-tokens", "250", "--repeats", "2",
         "--json", "{json}"],
        [str(BENCH / "stream_latency.py"), "--mode", "tiny", "--new-tokens", "40", "--repeats", "1",
         "--json", "{json}"],
        budget_s=150,
    ),
    Step(
        "data",
        [str(BENCH / "data_path.py"), "--repeats", "1", "--json", "{json}"],
        [str(BENCH / "data_path.py"), "--tiny", "--repeats", "1", "--json", "{json}"],
        budget_s=60,
    ),
]  # fmt: skip


@dataclass
class StepResult:
    name: str
    status: str
    """ok | failed | timeout | skipped (no time left)"""
    seconds: float = 0.0
    result: dict | None = None
    tail: str = ""
    """The end of the step's output (for a failure)."""
    command: list[str] = field(default_factory=list)


def run_step(step: Step, *, tiny: bool, timeout_s: float, workdir: Path) -> StepResult:
    """Run one step in its own process; its JSON result, or why there is none."""
    out = workdir / f"{step.name}.json"
    argv = [
        a.format(json=str(out), bench=str(BENCH)) if "{" in a else a
        for a in (step.tiny if tiny else step.gpu)
    ]
    command = [sys.executable, *argv]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if tiny:
        env.setdefault("CUDA_VISIBLE_DEVICES", "")  # the CPU logic check never touches a GPU
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1.0, timeout_s)
        )
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout
        return StepResult(
            step.name, "timeout", time.perf_counter() - started, None, (output or "")[-2000:], command
        )
    seconds = time.perf_counter() - started
    tail = (done.stdout + done.stderr)[-2000:]
    if done.returncode != 0 or not out.is_file():
        return StepResult(step.name, "failed", seconds, None, tail, command)
    return StepResult(step.name, "ok", seconds, json.loads(out.read_text()), tail, command)


def run_all(steps: list[Step], *, tiny: bool, budget_s: float, workdir: Path, log=print) -> list[StepResult]:
    """Every step in order, each under min(its budget, what is left of `budget_s`)."""
    deadline = time.perf_counter() + budget_s
    results = []
    for step in steps:
        left = deadline - time.perf_counter()
        if left < 10:
            results.append(StepResult(step.name, "skipped", 0.0, None, f"{left:.0f} s of the budget left"))
            log(f"{step.name}: skipped, no time left")
            continue
        log(f"{step.name}: running (at most {min(step.budget_s, left):.0f} s)")
        result = run_step(step, tiny=tiny, timeout_s=min(step.budget_s, left), workdir=workdir)
        log(f"{step.name}: {result.status} in {result.seconds:.0f} s")
        if result.status != "ok":
            log(result.tail[-600:])
        results.append(result)
    return results


def markdown_rows(results: list[StepResult], *, device: str, date: str) -> list[str]:
    """The lines to paste into RESULTS.md: one per measured figure, naive and fast side by side."""
    rows = []
    by_name = {r.name: r for r in results}

    def ok(name: str) -> dict | None:
        r = by_name.get(name)
        return r.result if r is not None and r.status == "ok" else None

    if train := ok("train"):
        for row in train.get("rows", []):
            shape = f"{row.get('batch')} × {row.get('seq')}"
            if "error" in row:
                rows.append(f"| train {row.get('path')} | {shape} | {device} | {date} | {row['error']} | | |")
                continue
            mfu = f"{100 * row['mfu']:.1f} % MFU" if row.get("mfu") is not None else ""
            memory = f"{row['peak_mem_gb']:.1f} GB peak" if row.get("peak_mem_gb") is not None else ""
            rows.append(
                f"| train {row.get('path')} ({row.get('loss_impl')}) | {shape} | {device} | {date} | "
                f"{row.get('tokens_per_s', 0):,.0f} tok/s | {mfu} | {memory} |"
            )
    if infer := ok("infer"):
        for row in infer.get("generate", []):
            rows.append(
                f"| infer {row['path']} | batch {row['batch']} | {device} | {date} | "
                f"{row['tokens_per_s']:,.0f} speech tok/s | |"
            )
        e2e = infer.get("end_to_end", {})
        if e2e:
            rows.append(
                f"| infer one 10 s clip end to end (fast) | | {device} | {date} | {e2e.get('total')} s | |"
            )
    if tts := ok("tts"):
        for row in tts.get("rows", []):
            if "error" in row:
                rows.append(
                    f"| tts {row['mode']} | batch {row['batch']} | {device} | {date} | {row['error'][:60]} | |"
                )
            else:
                rows.append(
                    f"| tts {row['mode']} | batch {row['batch']} | {device} | {date} | "
                    f"{row['tokens_per_s']:,.0f} tok/s | {row['x_real_time']:.1f}x real time |"
                )
    if codec := ok("codec"):
        for row in codec.get("rows", []):
            rows.append(
                f"| codec {row['stage']} | {codec['clips']} clips, batch {row['batch']} | {device} | {date} | "
                f"{row['x_real_time']:,.1f}x real time | |"
            )
    if stream := ok("stream"):
        for row in stream.get("rows", []):
            rows.append(
                f"| stream latency, {row['path']} | {stream['info']['new_tokens']} codes, batch 1 | {device} | "
                f"{date} | first audio {row['first_audio']:.2f} s | RTF {row['rtf']:.3f} |"
            )
    if data := ok("data"):
        for key, value in data.items():
            if isinstance(value, dict) and {"naive", "ours"} <= set(value):
                rows.append(
                    f"| data {key} | naive vs ours | {device} | {date} | {value['naive']:,.0f} vs "
                    f"{value['ours']:,.0f} | {value.get('speedup', 0):.1f}x | |"
                )
    for r in results:
        if r.status != "ok":
            rows.append(f"| {r.name} | | {device} | {date} | {r.status.upper()} | |")
    return rows


@dataclass
class Args:
    """Every GPU benchmark in one run (see the module docstring)."""

    tiny: bool = False
    """CPU logic check with tiny models (CI)."""
    json: Path = Path("gpu_check.json")
    """The one JSON result."""
    budget_s: Annotated[float | None, Gt(0)] = None
    """Total wall time (GPU: 540, tiny: 600)."""
    only: list[str] | None = None
    """Run only these steps."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out": "json"}
    """`--out` was the JSON result's flag."""


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/gpu_check.py")

    budget = args.budget_s or (600.0 if args.tiny else 540.0)
    steps = [s for s in STEPS if args.only is None or s.name in args.only]
    device = "cpu (tiny logic check)" if args.tiny else _device_name()
    date = time.strftime("%Y-%m-%d")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        results = run_all(steps, tiny=args.tiny, budget_s=budget, workdir=Path(workdir))
    command = "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "device": device,
        "date": date,
        "command": command.strip(),
        "total_seconds": round(time.perf_counter() - started, 1),
        "steps": {
            r.name: {
                "status": r.status,
                "seconds": round(r.seconds, 1),
                "result": r.result,
                **({"tail": r.tail} if r.status != "ok" else {}),
            }
            for r in results
        },  # fmt: skip
        "markdown": markdown_rows(results, device=device, date=date),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\n## GPU check: {device}, {date}, `{report['command']}`, {report['total_seconds']:.0f} s\n")
    print("| measure | setting | device | date | result | | |\n|---|---|---|---|---|---|---|")
    print("\n".join(report["markdown"]))
    print(f"\nwrote {args.json}")
    return report


def _device_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "unknown"


if __name__ == "__main__":
    main()
