"""Turn a LoRA checkpoint into a plain Hugging Face model folder: `sts-train merge-lora CHECKPOINT -o OUT_DIR`.

    sts-train merge-lora runs/sft-lora/checkpoint-0020000 -o runs/sft-merged
    sts-infer in.wav --to en -o out.wav --model runs/sft-merged          # or vLLM, like any checkpoint

    from train.merge import MergeConfig, merge_lora
    merge_lora(MergeConfig(Path("runs/sft-lora/checkpoint-0020000"), Path("runs/sft-merged")))

A LoRA run (`--lora.r N`) saves adapters, which only peft-aware loaders read and vLLM serves only as
a LoRA request. This loads the base model the run trained on (`model` in the checkpoint's
`train_config.yaml`, else the adapter's `base_model_name_or_path`, else `--base-model`), applies the
adapter with peft's `merge_and_unload` (W + B A * alpha / r folded into each target weight), and
writes weights, tokenizer, the files that say how the checkpoint is decoded
(`sts.model_files.DECODING_FILES`: `sts_vocab.json`, `sts_tasks.json`, `sts_decoding.json`, as the
checkpoint holds them, so a text-first model stays text-first), the run's `train_config.yaml` and
`merged_from.json` (adapter, base, step, peft version) under a temporary name, renamed when complete.

Speech rows trained as PEFT trainable tokens (`--lora.train-speech-rows`, `train.lora`) are folded
into the embedding matrix by the same `merge_and_unload`; with LFM2's tied embeddings the output
layer is that same matrix, so the merged head scores speech with the trained rows too.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import tyro
import yaml

from sts.errors import InputError
from sts.io import staged_dir, write_json_atomic
from sts.model_files import copy_decoding_files
from sts.paths import absolute_if_local, resolve_recorded
from sts.vocab import SpeechVocab
from train.checkpoint import STATE_FILE, safetensors_problem

ADAPTER_CONFIG = "adapter_config.json"
MERGE_NOTE = "merged_from.json"


class MergeError(InputError, ValueError):
    """A checkpoint that cannot be merged; the message names the folder and the problem."""


@dataclass
class MergeConfig:
    """Merge a LoRA checkpoint into its base model and save a plain HF model folder."""

    checkpoint: tyro.conf.Positional[Path]
    """A LoRA checkpoint folder of `sts-train` (holds adapter_config.json and sts_vocab.json)."""
    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """Output folder; must not exist unless --overwrite."""
    base_model: str = ""
    """The base model the adapter was trained on; empty: the checkpoint's train_config.yaml `model`,
    else the adapter config's base_model_name_or_path. Give it when the base has moved."""
    dtype: str = "float32"
    """dtype of the merged weights ("float32", "bfloat16", "float16")."""
    overwrite: bool = False
    """Replace out_dir if it exists."""

    RENAMED_POSITIONALS: ClassVar[tuple[str, ...]] = ("out_dir",)
    """`sts-train merge-lora CHECKPOINT OUT_DIR` (the old form) reads as `--out-dir OUT_DIR`."""


def base_model_of(checkpoint: Path) -> str:
    """The base the adapter in `checkpoint` was trained on (train_config.yaml, then adapter_config.json),
    a local path resolved as recorded (`sts.paths.resolve_recorded`: absolute; older files relative to
    the folder they were made in), so the merge runs from any folder."""
    train_config = checkpoint / "train_config.yaml"
    if train_config.is_file():
        model = (yaml.safe_load(train_config.read_text()) or {}).get("model")
        if model:
            return resolve_recorded(str(model), checkpoint)
    base = json.loads((checkpoint / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise MergeError(f"{checkpoint}: cannot tell the base model; pass --base-model")
    return resolve_recorded(str(base), checkpoint)


def merge_lora(cfg: MergeConfig) -> Path:
    """Write the merged model to `cfg.out_dir`; returns it. Raises `MergeError` (or FileExistsError)."""
    import torch
    from peft import PeftModel
    from peft import __version__ as peft_version
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, out_dir = Path(cfg.checkpoint), Path(cfg.out_dir)
    if not checkpoint.is_dir():
        raise MergeError(f"{checkpoint}: no such checkpoint folder")
    if not (checkpoint / ADAPTER_CONFIG).is_file():
        raise MergeError(f"{checkpoint}: not a LoRA checkpoint (no {ADAPTER_CONFIG}); it loads as it is")
    adapter = checkpoint / "adapter_model.safetensors"
    problem = safetensors_problem(adapter) if adapter.exists() else f"{adapter.name}: missing"
    if problem:
        raise MergeError(f"{checkpoint}: {problem}")
    if out_dir.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    vocab = SpeechVocab.load(checkpoint)
    base = cfg.base_model or base_model_of(checkpoint)
    try:
        lm = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, cfg.dtype))
    except (OSError, ValueError) as err:  # no such model; a folder without a model config
        raise MergeError(
            f"{checkpoint}: cannot load its base model {base!r} ({err}); pass --base-model"
        ) from err
    rows = lm.get_input_embeddings().weight.shape[0]
    if rows != vocab.vocab_size:
        raise MergeError(
            f"{checkpoint}: base model {base} has {rows} embedding rows but the checkpoint's "
            f"sts_vocab.json says {vocab.vocab_size}: not the base this adapter was trained on"
        )
    merged = PeftModel.from_pretrained(lm, checkpoint).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    with staged_dir(out_dir) as staging:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        copy_decoding_files(checkpoint, staging)
        if (checkpoint / "train_config.yaml").is_file():
            shutil.copyfile(checkpoint / "train_config.yaml", staging / "train_config.yaml")
        state = checkpoint / STATE_FILE
        step = json.loads(state.read_text()).get("step") if state.is_file() else None
        note = {
            "adapter": str(checkpoint.resolve()),
            "base_model": absolute_if_local(base),
            "step": step,
            "dtype": cfg.dtype,
            "peft": peft_version,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(staging / MERGE_NOTE, note)
    return out_dir
