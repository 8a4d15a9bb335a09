"""Generation metrics during training: the fixed dev subset decoded under the inference constraints.

    evaluator = GenEvaluator(cfg, tokenizer, vocab, rt, pad_id=0)   # rank 0; builds the dev subset once
    metrics = evaluator(model)      # {"gen/s2st:ja-en/loop_rate": 0.25, ..., "gen/speech_out/loop_rate": 0.1}
    groups = evaluate_generation(model, items, tokenizer=..., vocab=..., cfg=cfg, pad_id=0)  # {group: {...}}

Why: the first attempt's loss fell while its speech fell into loops (docs/background.md), so `sts-train` also
decodes at every eval (`eval.every`, after the eval loss; `eval.generate`). Each item of
`train.dev_subset` is decoded as `sts-infer` decodes: the ids of its output modality only
(`sts.generation.allowed_token_ids`), its end marker (speech end / end of turn), the loop guard of
its modality, its own budget; as `eval.sampling` says (greedy by default; sampling is seeded with
`seed` at every eval); speech outputs with classifier-free guidance when `eval.guidance_scale`
is not 1 (`sts.generation.guidance`; for an s2st chain format, on its speech phase). Metrics per task group and pooled by
output modality (`speech_out`, `text_out`):

    n                  prompts decoded
    loop_rate          share of outputs where `find_loop` finds a repetition loop
    end_marker_rate    share of outputs that ended with their end id (not cut by budget or loop guard)
    length_ratio_*     generated length / reference length (no end id): mean and median
    stray_id_rate      decoding steps whose unconstrained argmax was an id of the wrong modality /
                       all steps (the constraint keeps such ids out of the output, so this is what an
                       unconstrained greedy decoder would have let through)
    chrf               text output: corpus chrF++ on raw text (`sts.metrics.chrf`)
    asr_chrf           speech output: chrF++ of Whisper transcripts of the decoded audio
                       (`sts.metrics.asr_bleu`), when the codec and an offline ASR load

A metric that cannot be computed (no sacrebleu, no codec or ASR) is left out and the reason logged
once (scoring: `train.gen_metrics`). Decoding runs on rank 0 alone in eval mode under `torch.no_grad`, with the RNG state put back
afterwards, so the training that follows is the same as without it (exact resume holds). Under
FSDP or DeepSpeed ZeRO-3 rank 0 does not hold the whole model: the eval is skipped with a logged
reason (gathering the weights for every decoding step would cost more than it tells).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from transformers import LogitsProcessor

from sts.generation import SPEECH_GUARD, TEXT_GUARD, split_end
from sts.generation.allowed import allowed_token_ids
from sts.generation.chain import chain_text_ids, generate_chain
from sts.generation.guidance import generate_guided, unconditional_prompt
from sts.generation.processors import AllowedTokensProcessor
from sts.generation.request import GenerationRequest, length_sorted_batches
from sts.generation.transformers_backend import TransformersBackend
from sts.tasks import TaskFormatter
from sts.vocab import SpeechVocab
from train.config import TrainConfig
from train.dev_subset import TEXT_MARGIN, DevItem, build_dev_subset
from train.gen_metrics import POOLS, SpeechScorer, early_stop_reason, flatten, headline, summarize
from train.logger import plot_gen_eval

log = logging.getLogger(__name__)


class ModalityConstraint(LogitsProcessor):
    """The output constraint (`AllowedTokensProcessor`), noting first where the unconstrained argmax fell.

    `wrong[t]`: `[B]` bool, step t's argmax was outside `allowed` (kept on the device, read once at the end).
    """

    def __init__(self, allowed: np.ndarray, end_id: int):
        self.constraint = AllowedTokensProcessor(allowed, end_ids=[end_id], prompt_len=0)
        self.allowed = torch.as_tensor(np.asarray(allowed), dtype=torch.long)
        self.wrong: list[torch.Tensor] = []
        self._ok: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._ok is None or self._ok.shape[0] != scores.shape[-1] or self._ok.device != scores.device:
            self._ok = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
            self._ok[self.allowed[self.allowed < scores.shape[-1]].to(scores.device)] = True
        self.wrong.append(~self._ok[scores.argmax(-1)])
        return self.constraint(input_ids, scores)

    def wrong_steps(self) -> np.ndarray:
        """`[B, steps]` bool: per row and step, was the unconstrained argmax of the wrong modality."""
        return torch.stack(self.wrong, dim=1).cpu().numpy() if self.wrong else np.zeros((0, 0), bool)


def generation_lm(model, rt=None):
    """The Hugging Face causal LM inside the training wrappers (accelerate/DDP/DeepSpeed, the loss
    wrapper `CausalLMWithLoss`, peft's `PeftModel`, whose LoRA layers stay in the returned model)."""
    model = rt.unwrap_model(model) if rt is not None else model
    model = getattr(model, "lm", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decode(
    lm, items: list[DevItem], *, tokenizer, vocab: SpeechVocab, pad_id: int, cfg: TrainConfig
) -> list[dict]:
    """Decode every item (batched by output modality, `eval.batch_size` a call): one dict per item
    with `ids` (`[G]` int64, with its end id when it ended), `ended`, `steps` and `wrong` (steps whose
    unconstrained argmax was of the wrong modality)."""
    backend = TransformersBackend(lm, pad_token_id=pad_id, fast=cfg.eval.fast)
    sampling = cfg.eval.sampling
    out: list[dict | None] = [None] * len(items)
    chain = [i for i, item in enumerate(items) if item.task == "s2st" and cfg.sft.s2st_format != "direct"]
    if chain:
        _decode_chain(
            backend, items, chain, out, tokenizer=tokenizer, vocab=vocab, sampling=sampling, cfg=cfg
        )
    for output in ("speech", "text"):
        index = [i for i, item in enumerate(items) if item.output == output and i not in chain]
        if not index:
            continue
        allowed = allowed_token_ids(vocab, tokenizer, output)
        end_id = vocab.speech_end_id if output == "speech" else tokenizer.eos_token_id
        for batch in length_sorted_batches([len(items[i].prompt) for i in index], cfg.eval.batch_size):
            rows = [items[index[b]] for b in batch]
            constraint = ModalityConstraint(allowed, end_id)
            guided = output == "speech" and cfg.eval.guidance_scale != 1.0
            request = GenerationRequest(
                None,  # the constraint runs in ModalityConstraint, which first looks at the raw argmax
                [end_id],
                [r.max_new_tokens for r in rows],
                sampling=sampling,
                guard=SPEECH_GUARD if output == "speech" else TEXT_GUARD,
                extra_logits_processors=[constraint],
                seed=cfg.seed if sampling.do_sample else None,
                guidance_scale=cfg.eval.guidance_scale if guided else 1.0,
                unconditional_prompts=[unconditional_prompt(r.prompt, vocab) for r in rows]
                if guided
                else None,
            )
            generated = generate_guided(backend, [r.prompt for r in rows], request)
            wrong = constraint.wrong_steps()  # [B, steps], rows in batch order
            for k, (b, ids) in enumerate(zip(batch, generated, strict=True)):
                body, ended = split_end(ids, [end_id])
                n_wrong = int(wrong[k, : len(ids)].sum()) if wrong.size else 0
                out[index[b]] = {
                    "ids": ids,
                    "body": body,
                    "ended": ended,
                    "steps": len(ids),
                    "wrong": n_wrong,
                }
    return out  # type: ignore[return-value]


def _decode_chain(backend, items, index, out, *, tokenizer, vocab, sampling, cfg) -> None:
    """s2st in a chain format (`sts.generation.chain`): texts, then speech, as sts-infer decodes it.
    Fills `out[i]`: `ids` the whole answer, `body`/`ended` its speech, `steps`/`wrong` both phases."""
    text_ids = chain_text_ids(vocab, tokenizer)
    speech_ids = allowed_token_ids(vocab, tokenizer, "speech")
    lines = 2 if cfg.sft.s2st_format == "text-first" else 1
    for batch in length_sorted_batches([len(items[i].prompt) for i in index], cfg.eval.batch_size):
        rows = [items[index[b]] for b in batch]
        text_budgets = [
            min(cfg.eval.max_new_tokens,
                lines * (2 * len(tokenizer(r.ref_text or "", add_special_tokens=False).input_ids) + TEXT_MARGIN))
            for r in rows
        ]  # fmt: skip
        text_check = ModalityConstraint(text_ids, vocab.speech_start_id)
        speech_check = ModalityConstraint(speech_ids, vocab.speech_end_id)
        seed = cfg.seed if sampling.do_sample else None
        text = GenerationRequest(None, [vocab.speech_start_id], text_budgets, sampling=sampling,
                                 guard=TEXT_GUARD, extra_logits_processors=[text_check], seed=seed)  # fmt: skip
        speech = GenerationRequest(None, [vocab.speech_end_id], [r.max_new_tokens for r in rows],
                                   sampling=sampling, guard=SPEECH_GUARD, extra_logits_processors=[speech_check],
                                   seed=seed)  # fmt: skip
        guide = None
        if cfg.eval.guidance_scale != 1.0:

            def guide(request, prompts):
                unconditional = [unconditional_prompt(p, vocab) for p in prompts]
                return replace(
                    request, guidance_scale=cfg.eval.guidance_scale, unconditional_prompts=unconditional
                )

        answers = generate_chain(backend, [r.prompt for r in rows], text, speech, guide=guide)
        wrong_text, wrong_speech = text_check.wrong_steps(), speech_check.wrong_steps()
        switched = [k for k, a in enumerate(answers) if a.switched]
        for k, (b, answer) in enumerate(zip(batch, answers, strict=True)):
            body, ended = split_end(answer.speech_ids, [vocab.speech_end_id])
            steps_text = len(answer.text_ids) + answer.switched
            wrong = int(wrong_text[k, :steps_text].sum()) if wrong_text.size else 0
            if answer.switched and wrong_speech.size:
                wrong += int(wrong_speech[switched.index(k), : len(answer.speech_ids)].sum())
            out[index[b]] = {
                "ids": answer.ids(vocab.speech_start_id),
                "body": body,
                "ended": ended,
                "steps": steps_text + len(answer.speech_ids),
                "wrong": wrong,
            }


def sharding_reason(rt) -> str | None:
    """Why rank 0 cannot decode alone under this runtime (FSDP, DeepSpeed ZeRO-3), or None."""
    kind = getattr(rt, "shards_weights", None)
    return f"skipped under {kind}: rank 0 does not hold the whole model" if kind else None


class GenEvaluator:
    """The dev subset of a run and the decoding + scoring of it; `__call__(model)` -> flat metrics.

    Build it on rank 0 only. `items` overrides the subset (tests); `speech_scorer` the ASR-chrF path.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        tokenizer,
        vocab: SpeechVocab,
        rt,
        *,
        pad_id: int,
        items: list[DevItem] | None = None,
        speech_scorer: SpeechScorer | None = None,
    ):
        self.cfg, self.tokenizer, self.vocab, self.rt, self.pad_id = cfg, tokenizer, vocab, rt, pad_id
        self._said: set[str] = set()
        self.skip_reason = sharding_reason(rt)
        if self.skip_reason:
            self.items = []
        else:
            self.items = items if items is not None else build_dev_subset(cfg, tokenizer, vocab)
        self.fmt = (
            TaskFormatter(tokenizer, vocab, s2st_format=cfg.sft.s2st_format) if cfg.stage != "cpt" else None
        )
        self.speech_scorer = speech_scorer
        if self.fmt is None:
            self.note("ASR-chrF++ left out: cpt continuations have no reference text")
        elif speech_scorer is None and cfg.eval.asr == "none":
            self.note("ASR-chrF++ left out: eval.asr is none")
        elif speech_scorer is None:
            device = "cuda" if rt.device.type == "cuda" else "cpu"
            self.speech_scorer = SpeechScorer(cfg.eval.codec or vocab.codec, cfg.eval.asr, device)

    def note(self, reason: str) -> None:
        """Log `reason` the first time it comes up."""
        if reason not in self._said:
            self._said.add(reason)
            log.warning("gen eval: %s", reason)

    def __call__(self, model) -> dict[str, float]:
        """Decode and score the dev subset with `model` (the prepared training model); {} when skipped."""
        if self.skip_reason or not self.items:
            self.note(self.skip_reason or "skipped: no dev prompt (every corpus row was unusable)")
            return {}
        start = time.perf_counter()
        groups = evaluate_generation(
            model,
            self.items,
            tokenizer=self.tokenizer,
            vocab=self.vocab,
            cfg=self.cfg,
            pad_id=self.pad_id,
            rt=self.rt,
            fmt=self.fmt,
            speech_scorer=self.speech_scorer,
            note=self.note,
        )
        if self.speech_scorer is not None and self.speech_scorer.failed:
            self.speech_scorer = None  # reported once; not retried at every eval
        flat = flatten(groups)
        flat["gen/seconds"] = time.perf_counter() - start
        return flat


def evaluate_generation(
    model,
    items: list[DevItem],
    *,
    tokenizer,
    vocab: SpeechVocab,
    cfg: TrainConfig,
    pad_id: int,
    rt=None,
    fmt: TaskFormatter | None = None,
    speech_scorer: SpeechScorer | None = None,
    note: Callable[[str], None] = log.warning,
) -> dict[str, dict[str, float]]:
    """Decode `items` with `model` (any training wrapper; see `generation_lm`) and score them:
    `{group or pool: {metric: value}}` (`train.gen_metrics.summarize`). The model is put in eval mode
    and back in the mode it was in; the torch RNG state (CPU and the current GPU) is restored
    afterwards. sft needs `fmt` to read outputs back as text/codes (chrF++, ASR-chrF++);
    `speech_scorer` (codec + ASR) adds ASR-chrF++, and a failing one is marked `failed`."""
    lm = generation_lm(model, rt)
    was_training = model.training
    devices = [lm.device] if lm.device.type == "cuda" else []
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            decoded = decode(lm, items, tokenizer=tokenizer, vocab=vocab, pad_id=pad_id, cfg=cfg)
    finally:
        model.train(was_training)
    parsed = [fmt.parse(d["ids"], item.task) if fmt else None for d, item in zip(decoded, items, strict=True)]
    texts = [p.text if p is not None else None for p in parsed]
    by_lang: dict[str, list[int]] = {}  # speech outputs with a reference text, by language
    for i, item in enumerate(items):
        if parsed[i] is not None and item.output == "speech" and item.ref_text is not None:
            by_lang.setdefault(item.lang, []).append(i)
    transcripts = None
    if speech_scorer is not None and by_lang:
        transcripts = [None] * len(items)
        try:
            for lang, index in by_lang.items():
                for i, text in zip(
                    index, speech_scorer.transcribe([parsed[i].codes for i in index], lang), strict=True
                ):
                    transcripts[i] = text
        except RuntimeError as err:
            note(f"ASR-chrF++ left out: {err}")
            speech_scorer.failed = True
            transcripts = None
    return summarize(items, decoded, texts=texts, transcripts=transcripts, note=note)


def gen_eval_step(
    evaluator: GenEvaluator | None, model, rt, logger, state: dict, cfg: TrainConfig
) -> str | None:
    """One eval's generation metrics: rank 0 (the one holding `evaluator`) decodes, logs a `gen_eval`
    record (metrics.jsonl, the logger, one printed line), redraws `gen_eval.png` and appends the speech
    loop rate to `state["gen_loop_rates"]` (saved with the checkpoint, so early stopping resumes
    exactly). Every rank must call it: all get the same early-stop reason back (None: go on)."""

    reason = None
    if evaluator is not None:
        flat = evaluator(model)
        if flat:
            logger.log(state["step"], flat, kind="gen_eval", line=headline(flat))
            plot_gen_eval(cfg.out_dir)
            rate = flat.get(f"gen/{POOLS['speech']}/loop_rate")
            if rate is not None:
                state.setdefault("gen_loop_rates", []).append(rate)
                reason = early_stop_reason(
                    state["gen_loop_rates"], cfg.eval.early_stop_loop_rate, cfg.eval.early_stop_patience
                )
    stop = rt.reduce(torch.tensor(float(reason is not None), device=rt.device), "sum").item() > 0
    return (reason or "early stop decided on rank 0") if stop else None
