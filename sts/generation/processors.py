"""The request's constraint, budgets and loop guard as transformers logits processors and stopping criteria.

    processors = logits_processors(request, prompt_len=L)       # [AllowedTokensProcessor, *extra, RAS?]
    stops = stopping_criteria(request, prompt_len=L)            # [RowBudgetCriteria, LoopStoppingCriteria?]

`prompt_len` is the left-padded prompt width: `input_ids.shape[1] - prompt_len` tokens have been
generated when a processor runs. Each row stops on its own (its end id, its budget, its looping
tail); `generate` pads the rows that stopped until the last one does, and the backend cuts each row
where it stopped. A new kind of constraint (e.g. text ids inside a text segment, speech ids after
the speech start marker) is one more processor built here from one more request field.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor, StoppingCriteria

from sts.generation.loops import LoopGuard, tail_is_loop
from sts.generation.request import GenerationRequest


class AllowedTokensProcessor(LogitsProcessor):
    """Sets every score outside `allowed` to -inf, and the end ids too for the first `min_new_tokens` steps.

    `allowed`: `[K]` int ids, or None (no mask: only the end ids are held back). Scores `[B, V]`;
    allowed ids at or above V are ignored.
    """

    def __init__(
        self, allowed: np.ndarray | None, *, end_ids: list[int], prompt_len: int, min_new_tokens: int = 0
    ):
        self.allowed = None if allowed is None else torch.as_tensor(np.asarray(allowed), dtype=torch.long)
        self.end_ids = torch.as_tensor(end_ids, dtype=torch.long)
        self.prompt_len = prompt_len
        self.min_new_tokens = min_new_tokens
        self._mask: torch.Tensor | None = None

    def _mask_for(self, scores: torch.Tensor) -> torch.Tensor:
        mask = self._mask
        if mask is None or (mask.shape[0], mask.device, mask.dtype) != (
            scores.shape[-1],
            scores.device,
            scores.dtype,
        ):
            # Built once per vocabulary width, device and dtype: no host-to-device copy while decoding.
            mask = torch.full((scores.shape[-1],), float("-inf"), device=scores.device, dtype=scores.dtype)
            mask[self.allowed[self.allowed < scores.shape[-1]].to(scores.device)] = 0.0
            self._mask = mask
        return mask

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.allowed is not None:
            scores = scores + self._mask_for(scores)
        if input_ids.shape[1] - self.prompt_len < self.min_new_tokens:
            if self.end_ids.device != scores.device:
                self.end_ids = self.end_ids.to(scores.device)
            scores = scores.index_fill(1, self.end_ids, float("-inf"))
        return scores


class RowBudgetCriteria(StoppingCriteria):
    """Stops row b once it has `budgets[b]` new tokens (`generate`'s own max_new_tokens is the largest)."""

    def __init__(self, budgets: list[int], *, prompt_len: int):
        self.budgets = torch.as_tensor(budgets, dtype=torch.long)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        if self.budgets.device != input_ids.device:
            self.budgets = self.budgets.to(input_ids.device)
        return (input_ids.shape[1] - self.prompt_len) >= self.budgets


class LoopStoppingCriteria(StoppingCriteria):
    """Stops each row whose generated tail is a loop (`tail_is_loop`); checked every `check_every` steps.

    Reading the ids back to the CPU syncs the GPU, hence the stride (the check itself is one
    vectorized pass over the batch). `stopped_at[b]` (`[B]` int64)
    records how many tokens row b had when it was stopped, 0 when it never was.
    """

    def __init__(self, guard: LoopGuard, *, prompt_len: int, check_every: int = 16):
        self.guard = guard
        self.prompt_len = prompt_len
        self.check_every = check_every
        self.stopped_at: np.ndarray | None = None
        self._done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        steps = input_ids.shape[1] - self.prompt_len
        if self._done is None or self._done.shape[0] != input_ids.shape[0]:
            self._done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            self.stopped_at = np.zeros(input_ids.shape[0], dtype=np.int64)
        if steps > 0 and steps % self.check_every == 0:
            generated = input_ids[:, self.prompt_len :].cpu().numpy()
            looping = tail_is_loop(generated, self.guard)
            self.stopped_at[looping & (self.stopped_at == 0)] = steps
            self._done = self._done | torch.from_numpy(looping).to(input_ids.device)
        return self._done


def logits_processors(request: GenerationRequest, *, prompt_len: int) -> list:
    """The request's constraint (when it has one or holds the end back), its extra processors (the
    guidance processor among them for a guided request), and last, when its sampling is
    repetition-aware, the RAS processor that picks each row's token.

    Raises ValueError for a guided request whose guidance processor was not bound
    (`TransformersBackend.generate` binds it with its model, `sts.generation.guidance.bind_guidance`)."""
    if request.guided and not request.guidance_bound:
        raise ValueError(
            "a guided request (guidance_scale != 1) needs its model: decode it with "
            "TransformersBackend.generate (or sts.generation.guidance.generate_guided)"
        )
    processors = []
    if request.allowed is not None or request.min_new_tokens > 0:
        processors.append(
            AllowedTokensProcessor(
                request.allowed,
                end_ids=request.end_ids,
                prompt_len=prompt_len,
                min_new_tokens=request.min_new_tokens,
            )
        )
    processors += list(request.extra_logits_processors)
    if request.sampling.ras_active:
        from sts.generation.ras import RepetitionAwareProcessor

        seeds = [request.row_seed(row) for row in range(len(request.max_new_tokens))]
        processors.append(RepetitionAwareProcessor(request.sampling, prompt_len=prompt_len, seeds=seeds))
    return processors


def stopping_criteria(request: GenerationRequest, *, prompt_len: int) -> list:
    """Per-row budgets, and the loop guard when the request has one."""
    stops: list = [RowBudgetCriteria(request.max_new_tokens, prompt_len=prompt_len)]
    if request.guard is not None:
        stops.append(LoopStoppingCriteria(request.guard, prompt_len=prompt_len))
    return stops


def cut_rows(
    generated: np.ndarray, request: GenerationRequest, stopped_at: np.ndarray | None = None
) -> list[np.ndarray]:
    """`[B, T]` generated ids (padded after each row stopped) -> each row up to where it stopped.

    A row ends after its first end id, at its budget, or at `stopped_at[b]` (the loop guard's stop,
    0 = none), whichever comes first.
    """
    rows = []
    for b, (row, budget) in enumerate(zip(generated, request.max_new_tokens, strict=True)):
        n = min(budget, len(row))
        if stopped_at is not None and stopped_at[b] > 0:
            n = min(n, int(stopped_at[b]))
        ends = np.flatnonzero(np.isin(row[:n], request.end_ids))
        rows.append(np.asarray(row[: ends[0] + 1 if len(ends) else n], dtype=np.int64))
    return rows
