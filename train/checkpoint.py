"""Checkpoints: complete Hugging Face model folders that also hold the state to resume from.

    runs/sft/checkpoint-0001000/
        config.json model.safetensors tokenizer* sts_vocab.json   # AutoModelForCausalLM.from_pretrained(...)
        sts_decoding.json                                         # the data's duration ratios (sts.decoding_info)
        train_config.yaml trainer_state.json                      # how it was made, step and data position
        train_state/                                              # optimizer, scheduler, RNG (accelerate)

A checkpoint is written under a temporary name and renamed when complete; `latest_checkpoint` only
sees complete ones. Weights are checked to be finite before anything is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from sts.config import save_config
from sts.decoding_info import write_decoding_info
from sts.vocab import SpeechVocab
from train.data import list_shards

STATE_FILE = "trainer_state.json"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}"


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints in out_dir, oldest first."""
    found = [p for p in Path(out_dir).glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(rt, model, optimizer, tokenizer, vocab: SpeechVocab, cfg, state: dict) -> Path:
    """Write checkpoint-<step> (all ranks must call: the state dict and optimizer may be sharded).

    rt: a `train.runtime` runtime; model: the prepared `CausalLMWithLoss`. Raises FloatingPointError,
    writing nothing, when a weight is NaN/inf.
    """
    out_dir = Path(cfg.out_dir)
    final = out_dir / checkpoint_name(state["step"])
    tmp = out_dir / f".{final.name}.tmp"
    full_state = rt.get_state_dict(model)  # gathered on rank 0 under FSDP/ZeRO-3
    finite = all(torch.isfinite(v).all() for v in full_state.values() if v.is_floating_point())
    if rt.reduce(torch.tensor(float(not finite), device=rt.device), "sum").item() > 0:  # every rank raises
        raise FloatingPointError(f"refusing to save {final.name}: the weights hold NaN/inf")
    unwrapped = rt.unwrap_model(model)
    if rt.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        lm_state = {k.removeprefix("lm."): v for k, v in full_state.items()}
        if hasattr(unwrapped.lm, "peft_config"):
            unwrapped.lm.save_pretrained(tmp)  # LoRA: the adapter (transformers loads it with peft installed)
        else:
            unwrapped.lm.save_pretrained(tmp, state_dict=lm_state)
        tokenizer.save_pretrained(tmp)
        vocab.save(tmp)
        write_decoding_info(tmp, list_shards(cfg.shards))
        save_config(cfg, tmp / "train_config.yaml")
    rt.wait_for_everyone()
    rt.save_state(tmp / "train_state", optimizer)
    rt.wait_for_everyone()
    if rt.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if cfg.keep_last > 0:
            for old in list_checkpoints(out_dir)[: -cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    rt.wait_for_everyone()
    return final


def load_checkpoint(rt, optimizer, checkpoint: Path) -> dict:
    """Restore optimizer, scheduler and RNG (and, under accelerate, the model) from `checkpoint`.

    Returns its trainer state (step, data position, bad-step count). Under the local runtime the
    weights were already loaded from the checkpoint folder (`train.trainer.load_model(weights_from=)`).
    """
    rt.load_state(Path(checkpoint) / "train_state", optimizer)
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())
