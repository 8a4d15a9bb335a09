"""Where the loop runs: one process (CPU or one GPU, no extra dependency) or many through accelerate.

    rt = make_runtime(cfg)          # LocalRuntime, or AccelerateRuntime under `accelerate launch` / torchrun
    model, optimizer = rt.prepare(model, optimizer)
    with rt.autocast():
        loss = ...
    rt.backward(loss)

Both expose the handful of operations the trainer needs (device, rank, reduce, autocast, no_sync,
clip_grad_norm_, unwrap_model, get_state_dict, save_state/load_state). `LocalRuntime` saves the
optimizer, scheduler and RNG state with `torch.save`; the weights come back from the checkpoint's own
HF folder. `AccelerateRuntime` delegates to `accelerate.Accelerator` (FSDP, DeepSpeed ZeRO, DDP), whose
`save_state` also holds the (possibly sharded) weights.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from sts.config import ConfigError

LOCAL_STATE_FILE = "train_state.pt"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class LocalRuntime:
    """One process on CPU or one GPU."""

    num_processes = 1
    process_index = 0
    is_main_process = True
    weights_in_state = False
    """False: resume reloads the weights from the checkpoint's HF folder, not from save_state."""
    shards_weights: str | None = None
    """What splits the weights over ranks (FSDP, DeepSpeed ZeRO-3), None when rank 0 holds them all."""

    def __init__(self, precision: str = "fp32", device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision
        self._scheduler = None

    def prepare(self, model, optimizer, scheduler):
        self._scheduler = scheduler
        return model.to(self.device), optimizer

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def no_sync(self, model):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return tensor

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(list(params), max_norm)

    def unwrap_model(self, model):
        return model

    def get_state_dict(self, model) -> dict:
        return model.state_dict()

    def wait_for_everyone(self) -> None:
        pass

    def main_process_first(self):
        return contextlib.nullcontext()

    def print(self, *args) -> None:
        print(*args, flush=True)

    def save_state(self, out_dir: Path, optimizer) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": self._scheduler.state_dict(),
            "rng": rng_state(),
        }
        torch.save(state, out_dir / LOCAL_STATE_FILE)

    def load_state(self, in_dir: Path, optimizer) -> None:
        state = torch.load(Path(in_dir) / LOCAL_STATE_FILE, map_location=self.device, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        self._scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])


class AccelerateRuntime:
    """Many processes (or one) through `accelerate` (needs `pip install accelerate`).

    Under DeepSpeed the engine steps inside `backward`, so the trainer needs grad_accum 1 (accumulate
    with DeepSpeed's own gradient_accumulation_steps) and a non-finite gradient is DeepSpeed's to handle;
    a non-finite loss is still skipped before backward.
    """

    weights_in_state = True

    def __init__(self, precision: str = "fp32", cpu: bool = False, batch_size: int = 1):
        from accelerate import Accelerator

        self.acc = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=cpu)
        self.is_deepspeed = self.acc.distributed_type.value == "DEEPSPEED"
        if self.is_deepspeed:  # no dataloader goes through prepare(), so DeepSpeed is told the batch size
            self.acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size
        self.device = self.acc.device
        self.num_processes = self.acc.num_processes
        self.process_index = self.acc.process_index
        self.is_main_process = self.acc.is_main_process
        self.shards_weights: str | None = None  # as LocalRuntime.shards_weights
        if self.acc.distributed_type.value == "FSDP":
            self.shards_weights = "FSDP"
        elif self.is_deepspeed and self.acc.state.deepspeed_plugin.zero_stage == 3:
            self.shards_weights = "DeepSpeed ZeRO-3"

    def prepare(self, model, optimizer, scheduler):
        model, optimizer = self.acc.prepare(model, optimizer)
        # the scheduler steps once per optimizer step on every rank; accelerate must not rescale it
        self.acc.register_for_checkpointing(scheduler)
        return model, optimizer

    def autocast(self):
        return self.acc.autocast()

    def no_sync(self, model):
        return self.acc.no_sync(model)

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return self.acc.reduce(tensor, op)

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        norm = self.acc.clip_grad_norm_(params, max_norm)
        if norm is None:  # DeepSpeed clips (gradient_clipping) and steps inside its engine
            wrapped = getattr(self.acc, "deepspeed_engine_wrapped", None)
            norm = wrapped.engine.get_global_grad_norm() if wrapped is not None else None
            return torch.tensor(0.0 if norm is None else float(norm))
        if hasattr(norm, "full_tensor"):  # FSDP2 returns a DTensor
            norm = norm.full_tensor()
        return norm

    def unwrap_model(self, model):
        return self.acc.unwrap_model(model)

    def get_state_dict(self, model) -> dict:
        return self.acc.get_state_dict(model)

    def wait_for_everyone(self) -> None:
        self.acc.wait_for_everyone()

    def main_process_first(self):
        return self.acc.main_process_first()

    def print(self, *args) -> None:
        self.acc.print(*args)

    def save_state(self, out_dir: Path, optimizer) -> None:
        self.acc.save_state(str(out_dir))

    def load_state(self, in_dir: Path, optimizer) -> None:
        self.acc.load_state(str(in_dir))


def make_runtime(distributed: str, precision: str, grad_accum: int = 1, batch_size: int = 1):
    """`distributed`: auto (accelerate when launched with more than one process), accelerate, or none."""
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if distributed == "accelerate" or (distributed == "auto" and world > 1):
        rt = AccelerateRuntime(precision, cpu=not torch.cuda.is_available(), batch_size=batch_size)
        if rt.is_deepspeed and grad_accum > 1:
            raise ConfigError("under DeepSpeed use grad_accum 1 and its own gradient_accumulation_steps")
        return rt
    if world > 1:
        raise ConfigError("launched with several processes but distributed=none")
    return LocalRuntime(precision)
