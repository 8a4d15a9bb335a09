"""Training throughput of the speech-extended LFM2-350M: tokens/s, MFU and peak memory, naive vs fast.

    python benchmarks/train_throughput.py                                  # GPU: 350M shape, seq 4096
    python benchmarks/train_throughput.py --batches 2x4096,16x4096 --paths naive,fast,fast-compile
    python benchmarks/train_throughput.py --tiny                           # CPU: tiny model, checks the logic

The model is a random-init LFM2-350M shape (hidden 1024, 16 layers: 10 short-conv + 6 attention at
2,5,8,10,12,14; 16 heads / 8 KV heads; tied embeddings) whose 65,536-token vocabulary is extended by
65,536 speech tokens and two markers, padded to a multiple of 128 (131,200 rows), as
`sts-extend-tokenizer` writes it. Each step is a full training step of `train.trainer`'s kind: fp32
master weights, bf16 autocast on GPU, forward + backward + AdamW, on random token ids.

paths:
  naive         eager transformers: `model(input_ids, labels=...)`, the full [B, L, V] logits
  fast          train.loss.CausalLMWithLoss with loss_impl=auto: liger's fused linear cross-entropy when
                liger-kernel imports on CUDA, else the chunked linear cross-entropy (no full logits); the
                `causal-conv1d` kernel is used by transformers itself when importable
  fast-compile  fast + torch.compile of each decoder layer (TrainConfig.compile)

MFU = achieved FLOP/s / peak: training FLOPs per token are 6 * (matmul parameters, the tied lm_head
counted once) + 12 * attention_layers * hidden * seq (PaLM's convention). Peak bf16 dense: H100/H200
989 TFLOP/s, A100 312 (or --peak-tflops). Each row: median of --steps timed steps after --warmup.
A configuration that runs out of memory is reported as OOM, and the next one runs.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Ge, Gt

from sts.cli import parse_cli
from sts.devices import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sts.testing.lm import LFM2_350M_SHAPE  # noqa: E402
from sts.vocab import round_up  # noqa: E402
from train.loss import CausalLMWithLoss  # noqa: E402
from train.trainer import param_groups  # noqa: E402

LFM2_350M = dict(
    LFM2_350M_SHAPE,
    max_position_embeddings=128_000,
    norm_eps=1e-5,
    conv_L_cache=3,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=7,
)
BASE_VOCAB = 65_536
SPEECH_TOKENS = 65_536
PEAK_BF16_TFLOPS = {  # dense bf16; the first name found in torch.cuda.get_device_name() wins
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
}


def model_config(tiny: bool):
    from transformers import Lfm2Config

    if tiny:
        from sts.testing.lm import tiny_lfm2_config

        return tiny_lfm2_config(vocab_size=round_up(384 + 1024 + 2, 128))
    vocab = round_up(BASE_VOCAB + SPEECH_TOKENS + 2, 128)
    return Lfm2Config(vocab_size=vocab, **LFM2_350M)


def flops_per_token(config, num_params: int, seq_len: int) -> float:
    n_attn = sum(t == "full_attention" for t in config.layer_types)
    return 6.0 * num_params + 12.0 * n_attn * config.hidden_size * seq_len


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def kernels() -> dict[str, bool]:
    return {
        name: importlib.util.find_spec(module) is not None
        for name, module in (
            ("causal_conv1d", "causal_conv1d"),
            ("liger_kernel", "liger_kernel"),
            ("flash_attn", "flash_attn"),
        )  # fmt: skip
    }


def build(config, path: str, device: torch.device, args):
    from transformers import Lfm2ForCausalLM

    torch.manual_seed(0)
    kwargs = {"attn_implementation": args.attn} if args.attn else {}
    lm = Lfm2ForCausalLM._from_config(config, dtype=torch.float32, **kwargs).to(device)
    if args.grad_ckpt:
        enable = getattr(lm, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if path == "naive":

        def step_loss(ids):
            return lm(input_ids=ids, labels=ids).loss

        model = lm
    else:
        model = CausalLMWithLoss(lm, impl="auto", chunk_tokens=args.ce_chunk_tokens)
        if path == "fast-compile":  # as train.trainer does with compile: true
            for layer in lm.model.layers:
                layer.compile()

        def step_loss(ids):
            loss_sum, n = model(ids, ids)
            return loss_sum / n

    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, **fused)
    return model, lm, optimizer, step_loss


def run_one(config, path: str, batch: int, seq: int, device: torch.device, args) -> dict:
    row = {"path": path, "batch": batch, "seq": seq}
    model = lm = optimizer = None
    gc.collect()  # the previous configuration's tensors (an OOM leaves some behind)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        model, lm, optimizer, step_loss = build(config, path, device, args)
        row["loss_impl"] = getattr(model, "impl", "hf")
        num_params = sum(p.numel() for p in lm.parameters())
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else contextlib.nullcontext()
        )
        gen = torch.Generator(device="cpu").manual_seed(0)
        ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen).to(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        times, losses = [], []
        for i in range(args.warmup + args.steps):
            _sync(device)
            start = time.perf_counter()
            with autocast:
                loss = step_loss(ids)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
            losses.append(loss.item())
        step_s = statistics.median(times)
        tokens_per_s = batch * seq / step_s
        peak = peak_tflops(device, args.peak_tflops)
        achieved = flops_per_token(config, num_params, seq) * tokens_per_s
        row.update(
            params_m=round(num_params / 1e6, 1),
            step_s=round(step_s, 4),
            tokens_per_s=round(tokens_per_s),
            tflops=float(f"{achieved / 1e12:.3g}"),
            mfu=round(achieved / (peak * 1e12), 4) if peak else None,
            peak_mem_gb=round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda"
            else None,
            first_loss=round(losses[0], 4),
            last_loss=round(losses[-1], 4),
        )
    except torch.OutOfMemoryError:
        row["error"] = "OOM"
    finally:
        del model, lm, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_table(rows: list[dict]) -> str:
    head = (
        "| path | loss | batch x seq | tokens/s | TFLOP/s | MFU | peak mem GB | step s | loss first -> last |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['path']} | - | {r['batch']}x{r['seq']} | {r['error']} | | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a"
        mem = r["peak_mem_gb"] if r["peak_mem_gb"] is not None else "n/a"
        lines.append(
            f"| {r['path']} | {r['loss_impl']} | {r['batch']}x{r['seq']} | {r['tokens_per_s']:,} | {r['tflops']} "
            f"| {mfu} | {mem} | {r['step_s']} | {r['first_loss']} -> {r['last_loss']} |"
        )
    return "\n".join(lines)


@dataclass
class Args:
    """Training speed and memory: naive against fast paths (see the module docstring)."""

    tiny: bool = False
    """Tiny random LFM2 on CPU (checks the logic)."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    batches: str | None = None
    """Comma-separated BxL (default 2x4096,8x4096,16x4096)."""
    paths: str = "naive,fast"
    """naive, fast, fast-compile (comma-separated)."""
    steps: Annotated[int, Ge(1)] = 10
    """Timed steps per configuration."""
    warmup: Annotated[int, Ge(0)] = 3
    """Untimed steps first."""
    grad_ckpt: bool = False
    """Gradient checkpointing."""
    attn: str | None = None
    """attn_implementation (sdpa, flash_attention_2, ...)."""
    ce_chunk_tokens: Annotated[int, Ge(1)] = 4096
    """Tokens per chunk of the chunked cross-entropy."""
    peak_tflops: Annotated[float | None, Gt(0)] = None
    """The device's peak for MFU."""
    json: Path | None = None
    """Also write the rows here."""

    def __post_init__(self):
        self.device = resolve_device(self.device)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_cli(Args, argv, prog="benchmarks/train_throughput.py")
    if args.tiny:
        args.batches = args.batches or "2x128"
        args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 1)
    batches = [tuple(map(int, b.split("x"))) for b in (args.batches or "2x4096,8x4096,16x4096").split(",")]
    device = torch.device(args.device)
    config = model_config(args.tiny)
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "vocab_size": config.vocab_size,
        "kernels": kernels(),
        "grad_ckpt": args.grad_ckpt,
    }
    print(json.dumps(env), flush=True)
    rows = []
    for path in args.paths.split(","):
        for batch, seq in batches:
            row = run_one(config, path, batch, seq, device, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
