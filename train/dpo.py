"""`sts-train dpo`: preference optimization of an SFT checkpoint on chosen/rejected pairs.

    sts-train dpo-pairs --model runs/sft/checkpoint-0010000 --shards runs/encoded --out-dir runs/pairs
    sts-train dpo --config train/configs/dpo_lfm2_350m.yaml --model runs/sft/checkpoint-0010000 --dpo.pairs runs/pairs

    from train.dpo import preference_loss, train_dpo
    losses, chosen_rewards, rejected_rewards = preference_loss(pc, pr, rc, rr, beta=0.1)   # [B] each

Why: SFT alone leaves a speech LM that loops, stops too early or babbles; Koel-TTS reports that
preference alignment on ASR and speaker-verification rewards cuts such hallucinations with far less
data. The pairs come from the model itself, scored by the package's own metrics (`train.pairs`), or
from the user (`train.pair_data`).

The loss (`preference_loss`), on the summed log-probabilities of each answer under the policy
(`pi`) and the reference (`ref`), with `r = log pi(answer) - log ref(answer)`:

    sigmoid (DPO, Rafailov et al. 2023):  -log sigmoid(beta * (r_chosen - r_rejected))
    ipo     (IPO, Azar et al. 2023):      (r_chosen / n_chosen - r_rejected / n_rejected - 1 / (2 beta))^2

(n: answer tokens; IPO on per-token averages, as TRL computes it after confirming it with the IPO
authors). The rewards logged are `beta * r`. TRL 1.16 computes its losses inside
`DPOTrainer._compute_loss`, on outputs of its own model call (`fused_lm_head`) and its own batch
format, so it cannot be called on the log-probs this loop computes (chunked, without full logits);
the few lines are here, and tests/test_dpo.py checks them against TRL's on a fixed batch when TRL
imports.

The loop is the one of cpt/sft (`train.trainer`): the same runtime (one process or accelerate),
checkpoints with exact resume (the data position is the number of pairs drawn; `pair_index`), NaN
guard, LoRA, logger, per-eval held-out pair loss and generation metrics (when `shards` names a
corpus for the dev subset), early stop. The reference is a frozen copy of `model`, the LoRA policy
with its adapters off, or precomputed once (`dpo_reference`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sts.config import config_to_dict, save_config
from sts.model_files import model_fingerprint
from sts.tasks import load_task_formats
from sts.vocab import SpeechVocab
from train.checkpoint import latest_checkpoint, load_checkpoint, resume_checkpoint, run_folder
from train.config import TrainConfig
from train.logger import MetricLogger
from train.lora import check_speech_rows
from train.loss import CausalLMWithLoss
from train.pair_data import PairError, PairSet, load_pairs, pair_batch, pair_index
from train.resume_check import apply_optimizer_settings, check_resume, record_resume
from train.runtime import make_runtime, seed_everything
from train.trainer import apply_update, build_training, save_or_stop

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference_logps.npz"
"""Precomputed reference log-probs in the run folder (`dpo_reference: precomputed`)."""


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    kind: str = "sigmoid",
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss `[B]`, chosen and rejected rewards `[B]` (detached) from summed log-probs `[B]`.

    kind: "sigmoid" (DPO) or "ipo" (needs the answers' token counts `[B]`); see the module doc.
    """
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif kind == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs the answers' token counts")
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {kind!r}; known: sigmoid, ipo")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def compute_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`[2B]` summed answer log-probs and `[2B]` answer tokens of one pair batch (chosen rows first);
    a module-level hook so tests can inject NaN."""
    return model(batch["input_ids"], batch["labels"], batch["position_ids"], per_sequence=True)


class Reference:
    """The reference log-probs `(chosen [B], rejected [B])` of a pair batch (see `dpo_reference`).

    Built after `rt.prepare`. A precomputed table is read from the run folder when it belongs to
    these pairs and to what `cfg.model` holds now (`reference_key`), else computed: with the policy's
    initial weights (a fresh run), or, when a resumed policy has moved, with a frozen copy of
    `cfg.model` that is then freed. Every rank computes the whole table (one no-grad pass over the
    pairs; rank-local under FSDP too).
    """

    def __init__(self, cfg: TrainConfig, rt, model, splits: dict[str, PairSet], pad_id: int, fresh: bool):
        self.cfg, self.rt, self.pad_id = cfg, rt, pad_id
        self.model = None
        self.tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.lora = hasattr(rt.unwrap_model(model).lm, "disable_adapter")
        if cfg.dpo.reference == "model":
            self.model = model if self.lora else frozen_model(cfg, rt)
            return
        path = Path(cfg.out_dir) / REFERENCE_FILE
        key = reference_key(cfg.model, splits)
        if path.is_file():
            with np.load(path) as data:
                if json.loads(str(data["fingerprints"])) == key:
                    self.tables = {n: (data[f"{n}_chosen"], data[f"{n}_rejected"]) for n in splits}
                    rt.print(f"reference log-probs: {path}")
                    return
            log.warning(
                "%s belongs to another model or other pairs: computing it again from %s", path, cfg.model
            )
        source = model if fresh else frozen_model(cfg, rt)  # a resumed policy has moved: not the reference
        started = time.perf_counter()
        for name, pairs in splits.items():
            self.tables[name] = self._precompute(source, pairs)
        rt.print(
            f"reference log-probs of {sum(map(len, splits.values()))} pairs in {time.perf_counter() - started:.1f} s"
        )
        if rt.is_main_process:
            from sts.io import atomic_open

            arrays = {
                f"{n}_{side}": t[i]
                for n, t in self.tables.items()
                for i, side in enumerate(("chosen", "rejected"))
            }
            with atomic_open(path, "wb") as f:
                np.savez(f, fingerprints=np.array(json.dumps(key)), **arrays)

    @torch.no_grad()
    def _precompute(self, source, pairs: PairSet) -> tuple[np.ndarray, np.ndarray]:
        chosen, rejected = np.zeros(len(pairs), np.float32), np.zeros(len(pairs), np.float32)
        was_training = source.training
        source.eval()
        for start in range(0, len(pairs), self.cfg.optim.batch_size):
            index = list(range(start, min(start + self.cfg.optim.batch_size, len(pairs))))
            batch = to_device(pair_batch(pairs, index, self.pad_id), self.rt.device)
            with self.rt.autocast():
                logps, _ = compute_logps(source, batch)
            chosen[index], rejected[index] = logps.float().view(2, -1).cpu().numpy()
        source.train(was_training)
        return chosen, rejected

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tables:
            index = batch["index"].cpu().numpy()
            chosen, rejected = (torch.from_numpy(t[index]).to(self.rt.device) for t in self.tables[split])
            return chosen, rejected
        adapters_off = (
            self.rt.unwrap_model(self.model).lm.disable_adapter() if self.lora else contextlib.nullcontext()
        )
        with adapters_off, self.rt.autocast():
            logps, _ = compute_logps(self.model, batch)
        return logps.float().view(2, -1).unbind(0)


def reference_key(model: str | Path, splits: dict[str, PairSet]) -> dict[str, str]:
    """What a precomputed reference table belongs to: the reference model by content
    (`sts.model_files.model_fingerprint(full=True)`: every byte of its weights, so a model that
    differs from the cached one in a few tensors gets another key, which the default 16 sampled
    blocks per file could miss; the same model moved keeps its key; a hub id by its name) and each
    split's pairs by their token ids (`PairSet.fingerprint`). Hashing runs at ~1.5 GB/s (SHA-256),
    small next to the reference pass it guards."""
    return {
        "model": model_fingerprint(model, full=True) or str(model),
        **{name: pairs.fingerprint() for name, pairs in splits.items()},
    }


def frozen_model(cfg: TrainConfig, rt) -> CausalLMWithLoss:
    """`cfg.model` as a frozen reference (no gradients, eval mode) on the runtime's device."""
    from transformers import AutoModelForCausalLM

    kwargs = (
        {"attn_implementation": cfg.runtime.attn_implementation} if cfg.runtime.attn_implementation else {}
    )
    lm = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32, **kwargs).requires_grad_(False)
    return (
        CausalLMWithLoss(lm, impl=cfg.runtime.loss_impl, chunk_tokens=cfg.runtime.ce_chunk_tokens)
        .to(rt.device)
        .eval()
    )


def to_device(arrays: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in arrays.items()}


def train_dpo(cfg: TrainConfig) -> Path | None:
    """Run (or resume) DPO as `cfg` describes; returns the last checkpoint written.

    Raises PairError (no pair to train on, unreadable pairs), FileNotFoundError, TrainingDiverged.
    """
    rt = make_runtime(
        cfg.runtime.distributed, cfg.runtime.precision, cfg.optim.grad_accum, cfg.optim.batch_size
    )
    with run_folder(rt, Path(cfg.out_dir), "sts-train dpo"):  # one run per folder
        return _train_dpo(cfg, rt)


def _train_dpo(cfg: TrainConfig, rt) -> Path | None:
    from transformers import AutoTokenizer

    from train.gen_eval import GenEvaluator, gen_eval_step

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    vocab = SpeechVocab.load(cfg.model)
    check_speech_rows(cfg, vocab)  # LoRA with frozen speech rows needs trained ones
    cfg.sft.s2st_format = load_task_formats(cfg.model)[
        "s2st"
    ]  # the SFT checkpoint's; kept beside every checkpoint
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # which checkpoint, and whether the request is its run, before the pairs are read
    resume_from = resume_checkpoint(out_dir, log=rt.print) if cfg.resume else None
    changes = check_resume(cfg, resume_from, log=rt.print) if resume_from is not None else []
    pairs = load_pairs(
        cfg.dpo.pairs, tokenizer, vocab, s2st_format=cfg.sft.s2st_format, seq_len=cfg.data.seq_len
    )
    train_pairs, eval_pairs = pairs.split(cfg.data.eval_fraction)
    if not len(train_pairs):
        raise PairError(f"no preference pair to train on in {cfg.dpo.pairs} (counts: {pairs.counts})")

    model, optimizer, scheduler = build_training(cfg, rt, resume_from)

    world, rank = rt.num_processes, rt.process_index
    per_step = cfg.optim.batch_size * cfg.optim.grad_accum * world
    state = {"step": 0, "bad_steps": 0, "pairs_per_step": per_step, "pairs_consumed": 0}
    if resume_from is not None:
        state = load_checkpoint(rt, optimizer, resume_from)
        apply_optimizer_settings(cfg, optimizer, scheduler)
        rt.print(f"resumed from {resume_from} at step {state['step']}")
        if state.get("stopped"):
            rt.print(f"the run stopped early at step {state['step']}: {state['stopped']}")
            return resume_from
    splits = {"train": train_pairs, "eval": eval_pairs}
    reference = Reference(cfg, rt, model, splits, pad_id, fresh=resume_from is None)
    resumed_with = record_resume(state, changes, cfg)
    if rt.is_main_process:
        save_config(cfg, out_dir / "train_config.yaml")
    logger = MetricLogger(
        out_dir, cfg.optim.max_steps, cfg.log.logger, enabled=rt.is_main_process, config=config_to_dict(cfg)
    )
    if resumed_with:
        logger.log(state["step"], resumed_with, kind="resume")
    rt.print(f"dpo: {len(train_pairs)} pairs ({len(eval_pairs)} held out), {cfg.dpo.loss} loss, "
             f"beta {cfg.dpo.beta}, reference {cfg.dpo.reference}")  # fmt: skip
    logger.log(
        state["step"],
        {**pairs.counts, "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs)},
        kind="data",
    )
    gen_eval = None
    if cfg.eval.generate and cfg.eval.every and cfg.data.shards and rt.is_main_process:
        gen_eval = GenEvaluator(cfg, tokenizer, vocab, rt, pad_id=pad_id)

    last_saved, t0, steps_timed = None, time.perf_counter(), 0
    model.train()
    while state["step"] < cfg.optim.max_steps:
        micro = []
        for m in range(cfg.optim.grad_accum):
            first = state["pairs_consumed"] + m * cfg.optim.batch_size * world + rank
            index = [
                pair_index(first + j * world, len(train_pairs), cfg.seed) for j in range(cfg.optim.batch_size)
            ]
            micro.append(to_device(pair_batch(train_pairs, index, pad_id), rt.device))
        lr = scheduler.get_last_lr()[0]
        metrics = dpo_step(rt, model, reference, micro, cfg)
        state["step"] += 1
        state["pairs_consumed"] += per_step
        if not apply_update(
            metrics, optimizer, scheduler, state, logger, cfg.optim.max_bad_steps, last_saved
        ):
            continue
        steps_timed += 1
        if state["step"] % cfg.log.every == 0 or state["step"] == cfg.optim.max_steps:
            elapsed = time.perf_counter() - t0
            metrics.update(lr=lr, pairs_per_s=steps_timed * per_step / max(elapsed, 1e-9))
            logger.log(state["step"], metrics)
            t0, steps_timed = time.perf_counter(), 0
        if cfg.eval.every and state["step"] % cfg.eval.every == 0:
            if len(eval_pairs):
                logger.log(
                    state["step"], evaluate_pairs(model, reference, eval_pairs, cfg, rt, pad_id), kind="eval"
                )
            if cfg.eval.generate and cfg.data.shards:
                state["stopped"] = gen_eval_step(gen_eval, model, rt, logger, state, cfg)
        last_saved, stop = save_or_stop(
            rt, model, optimizer, tokenizer, vocab, cfg, state, logger, last_saved
        )
        if stop:
            break
    logger.close()
    return last_saved or latest_checkpoint(out_dir)


def dpo_step(
    rt, model, reference: Reference, micro: list[dict[str, torch.Tensor]], cfg: TrainConfig
) -> dict | None:
    """Forward/backward of one optimizer step's pair batches and gradient clipping (no update).

    The loss is the mean over the step's pairs (all ranks, all micro-batches). Returns {loss,
    rewards/chosen, rewards/rejected, rewards/accuracy, rewards/margin, logps/chosen, logps/rejected,
    grad_norm}, or None when a loss or the gradient is NaN/inf on any rank.
    """
    world = rt.num_processes
    n_global = cfg.optim.batch_size * len(micro) * world
    sums = torch.zeros(7, device=rt.device)
    for m, batch in enumerate(micro):
        ref_chosen, ref_rejected = reference(batch, "train")
        sync = rt.no_sync(model) if m < len(micro) - 1 else contextlib.nullcontext()
        with sync:
            with rt.autocast():
                logps, tokens = compute_logps(model, batch)
            losses, chosen_rewards, rejected_rewards = _pair_losses(
                logps, tokens, ref_chosen, ref_rejected, cfg
            )
            loss_sum = losses.sum()
            not_finite = 1.0 - torch.isfinite(loss_sum.detach()).float()
            if rt.reduce(not_finite, "sum").item() > 0:  # every rank skips together
                return None
            rt.backward(loss_sum * world / n_global)  # DDP/FSDP average gradients over ranks
        sums += _pair_sums(losses, chosen_rewards, rejected_rewards, logps)
    grad_norm = float(
        rt.clip_grad_norm_(
            model.parameters(), cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else math.inf
        )
    )
    if not math.isfinite(grad_norm):
        return None
    return {**_pair_means(rt.reduce(sums, "sum"), n_global), "grad_norm": grad_norm}


def _pair_losses(logps, tokens, ref_chosen, ref_rejected, cfg: TrainConfig):
    chosen, rejected = logps.float().view(2, -1)
    n_chosen, n_rejected = tokens.view(2, -1)
    return preference_loss(chosen, rejected, ref_chosen, ref_rejected, beta=cfg.dpo.beta, kind=cfg.dpo.loss,
                           chosen_tokens=n_chosen, rejected_tokens=n_rejected)  # fmt: skip


def _pair_sums(losses, chosen_rewards, rejected_rewards, logps) -> torch.Tensor:
    """`[7]`: summed loss, rewards, accuracy count, margin, chosen and rejected log-probs."""
    chosen, rejected = logps.detach().float().view(2, -1)
    return torch.stack([
        losses.detach().sum(), chosen_rewards.sum(), rejected_rewards.sum(),
        (chosen_rewards > rejected_rewards).float().sum(), (chosen_rewards - rejected_rewards).sum(),
        chosen.sum(), rejected.sum(),
    ])  # fmt: skip


def _pair_means(sums: torch.Tensor, n: int) -> dict[str, float]:
    names = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin",
             "logps/chosen", "logps/rejected")  # fmt: skip
    return {name: float(v) / max(n, 1) for name, v in zip(names, sums.tolist(), strict=True)}


@torch.no_grad()
def evaluate_pairs(model, reference: Reference, pairs: PairSet, cfg: TrainConfig, rt, pad_id: int) -> dict:
    """Mean loss, rewards, reward accuracy and margin over the first `eval_batches` batches of held-out
    pairs (each rank takes every world-size-th pair)."""
    model.eval()
    world, rank = rt.num_processes, rt.process_index
    sums = torch.zeros(7, device=rt.device)
    count = torch.zeros((), device=rt.device)
    limit = min(len(pairs), cfg.eval.batches * cfg.optim.batch_size * world)
    mine = list(range(rank, limit, world))
    for start in range(0, len(mine), cfg.optim.batch_size):
        batch = to_device(pair_batch(pairs, mine[start : start + cfg.optim.batch_size], pad_id), rt.device)
        ref_chosen, ref_rejected = reference(batch, "eval")
        with rt.autocast():
            logps, tokens = compute_logps(model, batch)
        losses, chosen_rewards, rejected_rewards = _pair_losses(logps, tokens, ref_chosen, ref_rejected, cfg)
        sums += _pair_sums(losses, chosen_rewards, rejected_rewards, logps)
        count += len(losses)
    model.train()
    n = int(rt.reduce(count, "sum").item())
    return {f"pairs/{k}": v for k, v in _pair_means(rt.reduce(sums, "sum"), n).items()}
