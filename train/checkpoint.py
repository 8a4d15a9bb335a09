"""Checkpoints: complete Hugging Face model folders that also hold the state to resume from.

    runs/sft/checkpoint-0001000/
        config.json model.safetensors tokenizer* sts_vocab.json   # AutoModelForCausalLM.from_pretrained(...)
        sts_decoding.json                                         # the data's duration ratios (sts.decoding_info)
        train_config.yaml trainer_state.json                      # how it was made, step and data position
        train_state/                                              # optimizer, scheduler, RNG (accelerate)

A checkpoint is written under a temporary name and renamed when complete; `latest_checkpoint` only
sees complete ones. Weights are checked to be finite before anything is written.

Intact (what a resume trusts, `checkpoint_problem`): `trainer_state.json`, written last, is there and
parses with a step; every weights file (`model.safetensors`, the shards its index names, or a LoRA
`adapter_model.safetensors`) has a readable safetensors header whose tensors end exactly at the end of
the file (a truncated or half-copied file fails this); `train_state/` is there and every file in it
is whole (its safetensors files as above, its `torch.save` files by their zip directory: a truncated
optimizer state fails). A resume whose newest checkpoint is damaged says so and starts from the
newest intact one (`resume_checkpoint`). `keep_last` counts intact checkpoints only and removes
damaged ones first (`prune_list`), so it never deletes an intact checkpoint while keeping a damaged one.
A kill while saving leaves `.checkpoint-NNNNNNN.tmp`, which the next run removes (`run_folder`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from sts.config import save_config
from sts.decoding_info import DECODING_FILE, write_decoding_info
from sts.errors import InputError, writing
from sts.io import apply_default_mode, remove_stale_temps
from sts.lock import LOCK_NAME, FolderLockedError, folder_lock
from sts.model_files import safetensors_problem
from sts.tasks import save_task_formats
from sts.vocab import SpeechVocab
from train.data import list_shards

STATE_FILE = "trainer_state.json"
TORCH_SUFFIXES = (".pt", ".bin", ".pth", ".pkl")
"""Files of `train_state/` written by `torch.save` (the local runtime's, accelerate's optimizer,
scheduler and RNG states), checked by `torch_file_problem`."""
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")
SHARD_INDEX = "model.safetensors.index.json"


class CheckpointError(InputError, RuntimeError):
    """No checkpoint to resume from is intact; the message names each one and its problem."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}"


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints in out_dir, oldest first."""
    found = [p for p in Path(out_dir).glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (see the module docstring), or None when it is intact."""
    checkpoint = Path(checkpoint)
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
        if not isinstance(state.get("step"), int):
            return f"{STATE_FILE} has no step"
    except (OSError, ValueError, AttributeError) as err:
        return f"{STATE_FILE}: unreadable ({err})"
    weights = [checkpoint / name for name in WEIGHT_FILES if (checkpoint / name).exists()]
    if (checkpoint / SHARD_INDEX).exists():
        try:
            index = json.loads((checkpoint / SHARD_INDEX).read_text())
            weights += [checkpoint / name for name in sorted(set(index["weight_map"].values()))]
        except (OSError, ValueError, KeyError, AttributeError) as err:
            return f"{SHARD_INDEX}: unreadable ({err})"
    if not weights:
        return f"no weights file ({' / '.join(WEIGHT_FILES)})"
    for path in weights:
        if not path.is_file():
            return f"{path.name}: missing"
        problem = safetensors_problem(path)
        if problem:
            return problem
    train_state = checkpoint / "train_state"
    if not train_state.is_dir():
        return "train_state/ (optimizer and RNG state) is missing"
    files = sorted(p for p in train_state.rglob("*") if p.is_file())
    if not files:
        return "train_state/ (optimizer and RNG state) is empty"
    for path in files:
        if path.suffix == ".safetensors":
            problem = safetensors_problem(path)
        elif path.suffix in TORCH_SUFFIXES:
            problem = torch_file_problem(path)
        else:
            continue
        if problem:
            return f"train_state/{problem}"
    return None


def torch_file_problem(path: Path) -> str | None:
    """Why `path` is not a whole `torch.save` file (None when it is), from its zip directory alone:
    the directory at the end of the file must be there (a truncated or half-copied file loses it) and
    every member it lists must lie inside the file. The problem starts with the file name."""

    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return f"{path.name}: not a whole torch.save file, truncated or damaged ({err})"
    end = max((m.header_offset + 30 + len(m.filename.encode()) + m.compress_size for m in members), default=0)
    if end > size:
        return f"{path.name}: {size} bytes, but its zip directory describes {end} (truncated)"
    return None


def resume_checkpoint(out_dir: Path, log: Callable[[str], None] = print) -> Path | None:
    """The newest intact checkpoint in `out_dir` (None when there is no checkpoint at all).

    Damaged newer ones are reported through `log` and passed over. Raises `CheckpointError` when
    checkpoints exist but none is intact, rather than silently training from the start.
    """
    found = list_checkpoints(out_dir)
    problems = []
    for checkpoint in reversed(found):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            if problems:
                log(f"resuming from {checkpoint.name}, the newest intact checkpoint")
            return checkpoint
        problems.append(f"{checkpoint.name}: {problem}")
        log(f"{checkpoint} is damaged ({problem}); trying the one before it")
    if problems:
        raise CheckpointError(
            f"{out_dir}: no intact checkpoint to resume from ({'; '.join(problems)}); "
            "remove them to start over, or pass --no-resume with a new --out-dir"
        )
    return None


@contextmanager
def run_folder(rt, out_dir: Path, program: str) -> Iterator[None]:
    """Hold the run folder `out_dir` (created if missing) for this run while the block runs.

    The main process takes its lock (`sts.lock`, `.sts.lock`), so a second run of the same folder
    refuses naming the holder (program, pid, host, start time) instead of writing the same
    checkpoints; every rank raises together. Holding it, the main process removes what a killed run
    left: unfinished checkpoints (`.checkpoint-NNNNNNN.tmp`) and temp files of gone writers.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        refused = None
        if rt.is_main_process:
            refusal = (
                "{folder}: another run holds this run folder: {holder}; wait for it to end, or use "
                "another --out-dir"
            )
            try:
                stack.enter_context(folder_lock(out_dir / LOCK_NAME, program=program, refusal=refusal))
            except FolderLockedError as err:
                refused = err
        if rt.reduce(torch.tensor(float(refused is not None), device=rt.device), "sum").item() > 0:
            raise refused or FolderLockedError(f"{out_dir}: another run holds this run folder (see rank 0)")
        if rt.is_main_process:
            removed = [p for p in out_dir.glob(".checkpoint-*.tmp") if p.is_dir()]  # no other writer now
            for leftover in removed:
                shutil.rmtree(leftover, ignore_errors=True)
            removed += remove_stale_temps(out_dir)
            if removed:
                rt.print(f"removed what a killed run left in {out_dir}: {', '.join(p.name for p in removed)}")
        rt.wait_for_everyone()
        yield


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
    with writing(tmp):  # a full disk names the checkpoint (torch.save's own error names no file)
        if rt.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            lm_state = {k.removeprefix("lm."): v for k, v in full_state.items()}
            if hasattr(unwrapped.lm, "peft_config"):  # LoRA: the adapter (transformers loads it with peft)
                unwrapped.lm.save_pretrained(tmp)
            else:
                unwrapped.lm.save_pretrained(tmp, state_dict=lm_state)
            tokenizer.save_pretrained(tmp)
            vocab.save(tmp)
            if cfg.stage == "dpo":  # the pairs are the model's own outputs: keep what the SFT data recorded
                if (Path(cfg.model) / DECODING_FILE).is_file():
                    shutil.copyfile(Path(cfg.model) / DECODING_FILE, tmp / DECODING_FILE)
            else:
                write_decoding_info(tmp, list_shards(cfg.data.shards))
            if cfg.stage in ("sft", "dpo"):
                save_task_formats(tmp, cfg.sft.s2st_format)
            save_config(cfg, tmp / "train_config.yaml")
        rt.wait_for_everyone()
        rt.save_state(tmp / "train_state", optimizer)
        rt.wait_for_everyone()
        if rt.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")  # last: the completion marker
    if rt.is_main_process:
        apply_default_mode(tmp, recursive=True)  # save_pretrained writes its weights 0600
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if cfg.log.keep_last > 0:
            for old, why in prune_list(out_dir, cfg.log.keep_last):
                if why:
                    rt.print(f"removing damaged {old.name} ({why})")
                shutil.rmtree(old, ignore_errors=True)
    rt.wait_for_everyone()
    return final


def prune_list(out_dir: Path, keep_last: int) -> list[tuple[Path, str | None]]:
    """The checkpoints `keep_last` lets go, with their problem (None: intact): every damaged one, and
    the intact ones older than the newest `keep_last` intact ones. So an intact checkpoint is never
    removed while a damaged one stays, and the ones kept can all be resumed from."""
    found = [(c, checkpoint_problem(c)) for c in list_checkpoints(out_dir)]
    intact = [c for c, problem in found if problem is None]
    keep = set(intact[-keep_last:]) if keep_last > 0 else set(intact)
    return [(c, problem) for c, problem in found if c not in keep]


def load_checkpoint(rt, optimizer, checkpoint: Path) -> dict:
    """Restore optimizer, scheduler and RNG (and, under accelerate, the model) from `checkpoint`.

    Returns its trainer state (step, data position, bad-step count). Under the local runtime the
    weights were already loaded from the checkpoint folder (`train.trainer.load_model(weights_from=)`).
    """
    rt.load_state(Path(checkpoint) / "train_state", optimizer)
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())
