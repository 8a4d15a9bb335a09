"""What one generation call asks for: sampling, the constraint, per-row budgets, the loop guard.

    request = GenerationRequest(allowed, end_ids=[end], max_new_tokens=[300, 120], sampling=Sampling(temperature=0.8))
    ids = backend.generate(prompts, request)        # [G_i] int64 per prompt, end id last when it ended
    body, ended = split_end(ids[0], request.end_ids)

Every backend (`TransformersBackend`, `VllmBackend`) reads the same request and returns the same
thing: each row's generated ids, cut right after its first end id, at its own budget, or where the
loop guard stopped it. Pure Python + numpy, so requests are built and checked without torch.
A new decoding option (e.g. a constraint that depends on the row's state; repetition-aware sampling
is one) is one more field here, turned into a logits processor by `processors.logits_processors`
and into vLLM's terms by `vllm_backend.vllm_sampling_kwargs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from annotated_types import Ge, Gt, Interval

from sts.config import ConfigError, WhenOff, check_config
from sts.generation.loops import LoopGuard

GUIDANCE_PROCESSOR = "UnbatchedClassifierFreeGuidanceLogitsProcessor"
"""The class name of transformers' CFG processor, which `guidance.bind_guidance` adds."""
RAS_ARGS_KEY = "sts_repetition_aware"
"""Key of a request's repetition-aware sampling settings in vLLM's `SamplingParams.extra_args`."""


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; `do_sample=False` is greedy and ignores every other field.

    `repetition_aware=True` (with `do_sample`) is repetition-aware sampling (`sts.generation.ras`,
    after VALL-E 2 and CosyVoice): temperature, top_k and top_p make the nucleus, and a draw that
    the last `ras_window` tokens already hold `ceil(ras_window * ras_tau)` times is drawn again
    from the whole (temperature-scaled, constrained) distribution. `RAS_SAMPLING` holds
    CosyVoice's settings. Raises ValueError for settings that cannot sample.
    """

    do_sample: Annotated[
        bool, WhenOff("greedy decoding: the most likely token at each step (the other fields are unused)")
    ] = True
    """Sample with the settings below."""
    temperature: Annotated[float, Ge(0)] = 0.8
    """Softmax temperature (> 0 when sampling)."""
    top_p: Annotated[float, Interval(gt=0, le=1)] = 1.0
    """Nucleus threshold; 1: off."""
    top_k: Annotated[int, Ge(0)] = 0
    """Keep the k most likely ids; 0: off."""
    min_p: Annotated[float, Interval(ge=0, le=1)] = 0.0
    """Drop ids below min_p x the top probability; 0: off."""
    repetition_penalty: Annotated[float, Gt(0)] = 1.0
    """Penalty on ids already in prompt or output; 1: off."""
    repetition_aware: Annotated[bool, WhenOff("plain sampling: a repeated draw is kept")] = False
    """Repetition-aware sampling (RAS): a token drawn too often in the last ras_window is drawn again."""
    ras_window: Annotated[int, Ge(1)] = 10
    """RAS: last tokens looked at (VALL-E 2 / CosyVoice: 10)."""
    ras_tau: Annotated[float, Gt(0)] = 0.1
    """RAS: redraw a token held ceil(window x tau) times there."""

    def __post_init__(self):
        check_config(self)
        if self.do_sample and self.temperature <= 0:
            raise ConfigError(f"must be > 0 when sampling, got {self.temperature} (greedy: do_sample false)",
                              key="temperature")  # fmt: skip
        if self.ras_active and self.min_p > 0:
            raise ConfigError("must be 0 with repetition-aware sampling (it takes temperature, top_k, top_p)",
                              key="min_p")  # fmt: skip

    @property
    def ras_active(self) -> bool:
        """Whether repetition-aware sampling picks the tokens (repetition_aware and do_sample)."""
        return self.repetition_aware and self.do_sample

    def generate_kwargs(self) -> dict:
        """`model.generate` keyword arguments, every field explicit so that the model's own
        generation_config.json cannot add settings vLLM would not apply (vLLM takes only what
        `vllm_sampling_kwargs` gives it). Under RAS, `generate` decodes greedily: the RAS processor
        leaves one finite score per row, and `generate`'s own warpers must not run after it."""
        if not self.do_sample:
            return {"do_sample": False, "repetition_penalty": 1.0}
        if self.repetition_aware:
            return {"do_sample": False, "repetition_penalty": self.repetition_penalty}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p if self.min_p > 0 else None,
            "repetition_penalty": self.repetition_penalty,
        }


RAS_SAMPLING = Sampling(
    temperature=1.0, top_p=0.8, top_k=25, repetition_aware=True, ras_window=10, ras_tau=0.1
)
"""CosyVoice 2's `ras_sampling` defaults (top-p 0.8, top-k 25, win_size 10, tau_r 0.1; its log-softmax
scores are unscaled: temperature 1), the settings VALL-E 2 introduced RAS with."""


@dataclass
class GenerationRequest:
    """What the rows of one `generate` call share, plus each row's length budget.

    Raises ValueError when a budget is not positive, there is no end id, or an end id is not
    allowed (the output could then never end).
    """

    allowed: np.ndarray | None
    """`[K]` int64 ids the output may contain (end ids included); None: unconstrained (text MT)."""
    end_ids: list[int]
    """Ids that end a row (speech end marker, end-of-turn, a chat model's eos ids)."""
    max_new_tokens: list[int]
    """Budget of each row, its end id included: the row stops there (`[B]`)."""
    sampling: Sampling = field(default_factory=Sampling)
    """Decoding settings shared by the rows."""
    min_new_tokens: int = 1
    """The end ids are masked for this many first steps (vLLM: `min_tokens`)."""
    guard: LoopGuard | None = None
    """Stop a row once its tail loops (transformers; vLLM has no custom stop, its rows run to their
    budget). The caller still runs `detect_loop` on the output to cut or drop it."""
    extra_logits_processors: list = field(default_factory=list)
    """More transformers `LogitsProcessor`s, run after the constraint (transformers backend only)."""
    seed: int | None = None
    """Sampling seed: transformers seeds torch once per call; vLLM gives row i `seed + i`, and so does
    repetition-aware sampling on either backend (each row draws from its own generator)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance scale (`sts.generation.guidance`): != 1 mixes each step's log-probs with
    those under `unconditional_prompts`; 1 is plain decoding. transformers only (vLLM refuses it)."""
    unconditional_prompts: list[np.ndarray] | None = None
    """`[U_i]` int64 per row: the prompt without its condition (`guidance.unconditional_prompt`);
    needed when `guidance_scale` != 1."""

    def __post_init__(self):
        self.end_ids = [int(i) for i in self.end_ids]
        self.max_new_tokens = [int(b) for b in self.max_new_tokens]
        if not self.end_ids:
            raise ValueError("a generation request needs at least one end id")
        if any(b < 1 for b in self.max_new_tokens):
            raise ValueError(f"every row needs a budget of at least 1 token, got {self.max_new_tokens}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.guided:
            rows = self.unconditional_prompts
            if rows is None or len(rows) != len(self.max_new_tokens) or any(len(p) == 0 for p in rows):
                raise ValueError(
                    f"guidance_scale {self.guidance_scale} needs one non-empty unconditional prompt per row "
                    f"({len(self.max_new_tokens)} rows)"
                )
            self.unconditional_prompts = [np.asarray(p, dtype=np.int64).ravel() for p in rows]
        if self.allowed is not None:
            self.allowed = np.asarray(self.allowed, dtype=np.int64).ravel()
            missing = sorted(set(self.end_ids) - set(self.allowed.tolist()))
            if missing:
                raise ValueError(f"end ids {missing} are not among the allowed ids: no row could end")

    @property
    def guided(self) -> bool:
        """Whether classifier-free guidance applies (a scale other than 1)."""
        return self.guidance_scale != 1.0

    @property
    def guidance_bound(self) -> bool:
        """Whether the guidance processor is already among `extra_logits_processors` (`bind_guidance`)."""
        return any(type(p).__name__ == GUIDANCE_PROCESSOR for p in self.extra_logits_processors)

    def row_seed(self, row: int) -> int | None:
        """The seed of row `row` where rows are seeded one by one (vLLM, repetition-aware sampling)."""
        return None if self.seed is None else self.seed + row


def split_end(ids: np.ndarray | Sequence[int], end_ids: Sequence[int]) -> tuple[np.ndarray, bool]:
    """A backend's row `[G]` -> (the ids before the end id `[G']` int64, whether it ended on one).

    Not ended: the row ran into its budget or was stopped by the loop guard (MT calls it truncated).
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    ended = len(ids) > 0 and int(ids[-1]) in set(int(i) for i in end_ids)
    return (ids[:-1] if ended else ids), ended


def generation_end_ids(generation_config, tokenizer) -> list[int]:
    """The ids a chat model ends a turn with: its generation config's `eos_token_id` (an int or a
    list, as in generation_config.json), else the tokenizer's eos. `generation_config` may be None."""
    eos = getattr(generation_config, "eos_token_id", None)
    eos = tokenizer.eos_token_id if eos is None else eos
    if eos is None:
        raise ValueError("neither the generation config nor the tokenizer names an eos token")
    return [int(i) for i in (eos if isinstance(eos, list | tuple) else [eos])]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of `lengths` in batches of at most `batch_size`, shortest first (less left padding)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
