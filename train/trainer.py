"""The training loop behind `sts-train cpt|sft`: one function for CPU, one GPU and many.

    from train.config import TrainConfig
    from train.trainer import train
    train(make_config(TrainConfig, model="runs/lfm2-350m-speech", out_dir="runs/sft", data__shards=["runs/corpus"]))

Multi-GPU: `accelerate launch --config_file train/configs/accelerate/fsdp.yaml -m train.cli sft --config ...`
(or deepspeed_zero2.yaml), or `torchrun --nproc_per_node 8 -m train.cli sft ...` (DDP); the loop is the
same (`train.runtime`). Each optimizer step reads `batch_size * grad_accum * world_size` sequences; rank r
takes every world_size-th one, so N ranks x batch b see the same global batch as 1 rank x batch N*b.
Sequence i is a pure function of i (see `train.packing`), so resuming needs only the number of sequences
consumed, kept in the checkpoint. A step whose loss or gradient is NaN/inf is skipped (no update, logged);
after `max_bad_steps` in a row the run stops with `TrainingDiverged` and the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch

from sts.config import ConfigError, config_to_dict, save_config
from sts.errors import UsageError
from sts.model_files import load_speech_contract
from sts.tasks import IGNORE_INDEX
from sts.vocab import SpeechVocab
from train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    run_folder,
    save_checkpoint,
)
from train.config import TrainConfig
from train.data import build_doc_stores, data_counts
from train.logger import MetricLogger
from train.lora import check_speech_rows
from train.loss import CausalLMWithLoss
from train.packing import PackedStream
from train.resume_check import apply_optimizer_settings, check_resume, record_resume
from train.runtime import make_runtime, seed_everything

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps."""


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up to 1, then cosine to `min_lr_ratio` at `max_steps` (a factor on cfg.optim.lr)."""

    def factor(step: int) -> float:
        if step < cfg.optim.warmup_steps:
            return (step + 1) / cfg.optim.warmup_steps
        progress = min(
            1.0, (step - cfg.optim.warmup_steps) / max(1, cfg.optim.max_steps - cfg.optim.warmup_steps)
        )
        return cfg.optim.min_lr_ratio + (1 - cfg.optim.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return factor


def load_model(cfg: TrainConfig, weights_from: Path | None = None):
    """The extended HF model (+ LoRA adapters and trainable speech rows when lora.r > 0, `train.lora`),
    fp32 master weights.

    weights_from: a checkpoint folder to take the weights from instead of `cfg.model` (resume).
    """
    from transformers import AutoModelForCausalLM

    kwargs = (
        {"attn_implementation": cfg.runtime.attn_implementation} if cfg.runtime.attn_implementation else {}
    )
    lora_resume = cfg.lora.r > 0 and weights_from is not None
    source = cfg.model if weights_from is None or lora_resume else weights_from
    lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    if cfg.runtime.gradient_checkpointing:
        if hasattr(lm, "activation_checkpointing_enable"):  # the newer name (transformers >= 5.2x)
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.config.use_cache = False
    if (
        cfg.runtime.compile
    ):  # per layer, in place: the state-dict names (and so the checkpoints) do not change
        for layer in lm.model.layers:
            layer.compile()
    if cfg.lora.r > 0:
        from peft import PeftModel

        from train.lora import add_lora

        if lora_resume:
            return PeftModel.from_pretrained(lm, weights_from, is_trainable=True)
        lm = add_lora(lm, cfg.lora, SpeechVocab.load(cfg.model), model_name=cfg.model)
    return lm


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices, none on norms, biases and embedding rows."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            embedding = "embed" in name or "token_adapter" in name  # LoRA's trainable token rows too
            (no_decay if p.ndim < 2 or embedding or "norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def mixture_weights(cfg: TrainConfig, group_names: list[str]) -> dict[str, float]:
    """Sampling weight per document group, summing to 1.

    sft: a task's weight is shared by its groups (`asr:ja`, `asr:en`, ...), so it is the task's share.
    cpt: `speech_weight` shared by the `speech_*` groups, the rest by the text groups.
    """
    if cfg.stage == "sft":
        task_of = {g: g.split(":")[0] for g in group_names}
        per_task = {t: sum(1 for g in group_names if task_of[g] == t) for t in set(task_of.values())}
        weights = {g: cfg.sft.task_weights.get(task_of[g], 0.0) / per_task[task_of[g]] for g in group_names}
    else:
        speech = [g for g in group_names if g.startswith("speech_")]
        text = [g for g in group_names if not g.startswith("speech_")]
        weights = {g: cfg.cpt.speech_weight / len(speech) for g in speech}
        weights.update({g: (1 - cfg.cpt.speech_weight) / len(text) for g in text})
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError(f"every data group has weight 0: groups {group_names}")
    return {g: w / total for g, w in weights.items()}


def compute_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, counted tokens) of one micro-batch; a module-level hook so tests can inject NaN."""
    return model(batch["input_ids"], batch["labels"], batch["position_ids"])


def train(cfg: TrainConfig) -> Path | None:
    """Run (or resume) the cpt or sft training `cfg` describes; returns the last checkpoint written.

    Stage dpo is `train.dpo.train_dpo` (preference pairs instead of packed documents); UsageError here."""
    if cfg.stage == "dpo":
        raise UsageError("stage dpo trains on preference pairs: call train.dpo.train_dpo(cfg)")
    rt = make_runtime(
        cfg.runtime.distributed, cfg.runtime.precision, cfg.optim.grad_accum, cfg.optim.batch_size
    )
    with run_folder(rt, Path(cfg.out_dir), f"sts-train {cfg.stage}"):  # one run per folder
        return _train(cfg, rt)


def _train(cfg: TrainConfig, rt) -> Path | None:
    from train.gen_eval import GenEvaluator, gen_eval_step

    # The model folder and the whole sts_vocab.json against its tokenizer and config, before any data
    # is tokenized (a one-off offset would otherwise train every code as its neighbour).
    vocab, tokenizer = load_speech_contract(cfg.model)
    check_speech_rows(cfg, vocab)  # LoRA with frozen speech rows needs trained ones
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # which checkpoint, and whether the request is its run, before any data is tokenized
    resume_from = resume_checkpoint(out_dir, log=rt.print) if cfg.resume else None
    changes = check_resume(cfg, resume_from, log=rt.print) if resume_from is not None else []
    seed_everything(cfg.seed)
    with rt.main_process_first():
        train_store, eval_store = build_doc_stores(cfg, tokenizer, vocab)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    weights = mixture_weights(cfg, train_store.group_names)
    stream = PackedStream(
        train_store, weights, cfg.data.seq_len, cfg.seed, pack=cfg.data.packing, pad_id=pad_id
    )

    model, optimizer, scheduler = build_training(cfg, rt, resume_from)

    world, rank = rt.num_processes, rt.process_index
    per_step = cfg.optim.batch_size * cfg.optim.grad_accum * world
    state = {"step": 0, "bad_steps": 0, "sequences_per_step": per_step, "sequences_consumed": 0}
    if resume_from is not None:
        state = load_checkpoint(rt, optimizer, resume_from)
        apply_optimizer_settings(cfg, optimizer, scheduler)
        if state.get("sequences_per_step", per_step) != per_step:
            log.warning(
                "resuming with %d sequences per step (was %d): the data position is approximate",
                per_step,
                state["sequences_per_step"],
            )
        rt.print(f"resumed from {resume_from} at step {state['step']}")
        if state.get("stopped"):  # an early stop is final: rerunning the command does not train on
            rt.print(f"the run stopped early at step {state['step']}: {state['stopped']}")
            return resume_from
    resumed_with = record_resume(state, changes, cfg)
    if rt.is_main_process:
        save_config(cfg, out_dir / "train_config.yaml")
    logger = MetricLogger(
        out_dir, cfg.optim.max_steps, cfg.log.logger, enabled=rt.is_main_process, config=config_to_dict(cfg)
    )
    if resumed_with:
        logger.log(state["step"], resumed_with, kind="resume")
    rt.print(
        f"{cfg.stage}: {train_store.num_docs} documents in {train_store.group_names}, loss {model_loss_impl(model, rt)}"
    )
    logger.log(state["step"], data_counts(train_store, eval_store), kind="data")  # kept, skipped, dropped

    gen_eval = None
    if cfg.eval.generate and cfg.eval.every and rt.is_main_process:
        gen_eval = GenEvaluator(cfg, tokenizer, vocab, rt, pad_id=pad_id)

    last_saved, t0, steps_timed = None, time.perf_counter(), 0
    model.train()
    while state["step"] < cfg.optim.max_steps:
        micro = []
        for m in range(cfg.optim.grad_accum):
            start = state["sequences_consumed"] + m * cfg.optim.batch_size * world + rank
            arrays = stream.batch(start, cfg.optim.batch_size, stride=world)
            micro.append({k: torch.from_numpy(v).to(rt.device, non_blocking=True) for k, v in arrays.items()})
        lr = scheduler.get_last_lr()[0]
        metrics = train_step(rt, model, micro, cfg.optim.max_grad_norm)
        state["step"] += 1
        state["sequences_consumed"] += per_step
        if not apply_update(
            metrics, optimizer, scheduler, state, logger, cfg.optim.max_bad_steps, last_saved
        ):
            continue
        steps_timed += 1
        if state["step"] % cfg.log.every == 0 or state["step"] == cfg.optim.max_steps:
            elapsed = time.perf_counter() - t0
            metrics.update(lr=lr, tokens_per_s=steps_timed * per_step * cfg.data.seq_len / max(elapsed, 1e-9))
            logger.log(state["step"], metrics)
            t0, steps_timed = time.perf_counter(), 0
        if cfg.eval.every and state["step"] % cfg.eval.every == 0:
            if eval_store.num_docs:
                logger.log(state["step"], evaluate(model, eval_store, cfg, rt, pad_id), kind="eval")
            if cfg.eval.generate:
                state["stopped"] = gen_eval_step(gen_eval, model, rt, logger, state, cfg)
        last_saved, stop = save_or_stop(
            rt, model, optimizer, tokenizer, vocab, cfg, state, logger, last_saved
        )
        if stop:
            break
    logger.close()
    return last_saved or latest_checkpoint(out_dir)


def build_training(cfg: TrainConfig, rt, resume_from: Path | None):
    """The model (with its loss), AdamW and the warm-up/cosine schedule, prepared by the runtime; the
    weights come from `resume_from` unless the runtime restores them with its own state. Returns
    (model, optimizer, scheduler)."""
    lm = load_model(cfg, weights_from=None if resume_from is None or rt.weights_in_state else resume_from)
    model = CausalLMWithLoss(lm, impl=cfg.runtime.loss_impl, chunk_tokens=cfg.runtime.ce_chunk_tokens).to(
        rt.device
    )
    fused = {"fused": True} if rt.device.type == "cuda" and not rt.weights_in_state else {}  # one GPU
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr, betas=cfg.optim.betas, **fused
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    model, optimizer = rt.prepare(model, optimizer, scheduler)
    return model, optimizer, scheduler


def save_or_stop(rt, model, optimizer, tokenizer, vocab, cfg: TrainConfig, state: dict, logger, last_saved):
    """After a step: report an early stop (`state["stopped"]`, set by the gen eval), and save a
    checkpoint every `save_every` steps, at `max_steps` and at a stop. Returns (the newest
    checkpoint, whether the run stops here)."""
    stopped = state.get("stopped")
    if stopped:
        rt.print(f"early stop at step {state['step']}: {stopped}")
        logger.log(state["step"], {"reason": stopped}, kind="early_stop")
    if state["step"] % cfg.log.save_every == 0 or state["step"] == cfg.optim.max_steps or stopped:
        last_saved = save_checkpoint(rt, model, optimizer, tokenizer, vocab, cfg, dict(state))
    return last_saved, bool(stopped)


def apply_update(metrics, optimizer, scheduler, state: dict, logger, max_bad_steps: int, last_saved) -> bool:
    """Step the optimizer and schedule after a finite step (`metrics` not None) and return True; after
    a non-finite one, drop its gradients, move the schedule on, count it in `state["bad_steps"]`, log
    it and return False. Raises `TrainingDiverged` at `max_bad_steps` non-finite steps in a row."""
    if metrics is not None:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if metrics is not None:
        state["bad_steps"] = 0
        return True
    state["bad_steps"] += 1
    logger.log(state["step"], {"skipped": "non-finite loss or gradient", "bad_steps": state["bad_steps"]})
    if state["bad_steps"] >= max_bad_steps:
        logger.close()
        raise TrainingDiverged(
            f"{state['bad_steps']} consecutive non-finite steps; last good checkpoint: {last_saved}"
        )
    return False


def train_step(rt, model, micro: list[dict[str, torch.Tensor]], max_grad_norm: float) -> dict | None:
    """Forward/backward of one optimizer step's micro-batches and gradient clipping (no update).

    Returns {loss, grad_norm, tokens}, or None when the loss or the gradient is NaN/inf on any rank.
    The loss is the summed token loss over the whole step divided by its loss tokens (all ranks, all
    micro-batches), so every token weighs the same however the batch is split.
    """
    world = rt.num_processes
    n_local = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro)
    n_global = int(rt.reduce(torch.tensor(n_local, device=rt.device), "sum").item())
    loss_total = torch.zeros((), device=rt.device)
    for m, batch in enumerate(micro):
        sync = rt.no_sync(model) if m < len(micro) - 1 else contextlib.nullcontext()
        with sync:
            with rt.autocast():
                loss_sum, _ = compute_loss(model, batch)
            not_finite = 1.0 - torch.isfinite(loss_sum.detach()).float()
            if rt.reduce(not_finite, "sum").item() > 0:  # every rank skips together
                return None
            rt.backward(loss_sum * world / max(n_global, 1))  # DDP/FSDP average gradients over ranks
        loss_total += loss_sum.detach().float()
    grad_norm = float(
        rt.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else math.inf)
    )
    if not math.isfinite(grad_norm):
        return None
    loss = rt.reduce(loss_total, "sum").item() / max(n_global, 1)
    return {"loss": loss, "grad_norm": grad_norm, "tokens": n_global}


def model_loss_impl(model, rt) -> str:
    return getattr(rt.unwrap_model(model), "impl", "?")


@torch.no_grad()
def evaluate(model, store, cfg: TrainConfig, rt, pad_id: int) -> dict[str, float]:
    """Mean loss per group (task or data source) over `eval_batches` batches of held-out sequences."""
    model.eval()
    world, rank = rt.num_processes, rt.process_index
    results = {}
    for group in store.group_names:
        stream = PackedStream(
            store, None, cfg.data.seq_len, seed=1234, pack=cfg.data.packing, pad_id=pad_id, groups=[group]
        )
        total = torch.zeros(2, device=rt.device)
        for b in range(cfg.eval.batches):
            arrays = stream.batch(b * cfg.optim.batch_size * world + rank, cfg.optim.batch_size, stride=world)
            batch = {k: torch.from_numpy(v).to(rt.device) for k, v in arrays.items()}
            with rt.autocast():
                loss_sum, n = compute_loss(model, batch)
            total += torch.stack([loss_sum.float(), n.float()])
        total = rt.reduce(total, "sum")
        results[f"loss/{group}"] = (total[0] / total[1].clamp(min=1)).item()
    model.train()
    return results
