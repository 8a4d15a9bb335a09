"""vLLM's `LLM.generate` under the same request as `TransformersBackend`: the one vLLM wrapper of the package.

    backend = VllmBackend("runs/sft", dtype="bfloat16", gpu_memory_utilization=0.6)
    ids = backend.generate(prompts, GenerationRequest(allowed, [end], max_new_tokens=[500, 200]))

Prompts go in as token ids (`{"prompt_token_ids": [...]}`), so a tokenizer never adds a second BOS
and the ids are exactly those the transformers path feeds. Each row gets its own
`SamplingParams` from `vllm_sampling_kwargs` (pure Python, tested without vLLM): the constraint as
`allowed_token_ids` (a logits mask, as `AllowedTokensProcessor` is for transformers), the budget as
`max_tokens`, `min_tokens` for `min_new_tokens`, the end ids as `stop_token_ids`. A row that vLLM
stopped on an end id comes back with that id last (vLLM may leave it out of `token_ids`), one cut
by `finish_reason == "length"` without it: `split_end` reads both backends' rows alike. vLLM has no
custom stopping criteria, so `request.guard` cannot stop a row early here; callers check loops on
the output (`detect_loop`) either way. `vllm` is imported in the constructor only (the `gpu` extra);
`sts.vllm_compat.with_lfm2_overrides` supplies the config fields vLLM's LFM2 needs.

Repetition-aware sampling (`Sampling.repetition_aware`) runs inside vLLM as a custom logits
processor, `sts.generation.vllm_ras.RepetitionAwareLogitsProcessor`, which the engine loads at
construction (`logits_processors=[RAS_PROCESSOR]`, on by default) and a request switches on through
`SamplingParams.extra_args[RAS_ARGS_KEY]`. The processor leaves one finite logit per row, so the
row is decoded at temperature 0 (greedy) and vLLM's own top-k/top-p stay neutral.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sts.generation.request import RAS_ARGS_KEY, GenerationRequest

RAS_PROCESSOR = "sts.generation.vllm_ras:RepetitionAwareLogitsProcessor"
"""The RAS logits processor by its fully qualified class name (vLLM imports it in its engine process)."""


def vllm_sampling_kwargs(request: GenerationRequest) -> list[dict]:
    """`vllm.SamplingParams` keyword arguments per row: the request's constraint, budget and sampling.

    Greedy (`do_sample=False`) is temperature 0 with the other knobs neutral, as transformers
    ignores them. Repetition-aware sampling is temperature 0 too, its settings and the row's seed in
    `extra_args[RAS_ARGS_KEY]` (the engine's RAS processor picks the token). `allowed_token_ids` is
    None for an unconstrained request. A guided request (`guidance_scale` != 1) is a ValueError: vLLM
    has no classifier-free guidance.
    """
    if request.guided:
        raise ValueError(
            f"vLLM has no classifier-free guidance (guidance_scale {request.guidance_scale}): decode guided "
            "requests with the transformers backend, or use guidance_scale 1"
        )
    s = request.sampling
    plain = s.do_sample and not s.ras_active
    shared = dict(
        temperature=s.temperature if plain else 0.0,
        top_p=s.top_p if plain else 1.0,
        top_k=s.top_k if plain and s.top_k > 0 else -1,
        min_p=s.min_p if plain else 0.0,
        repetition_penalty=s.repetition_penalty if s.do_sample else 1.0,
        min_tokens=request.min_new_tokens,
        stop_token_ids=list(request.end_ids),
        allowed_token_ids=None if request.allowed is None else [int(i) for i in request.allowed],
        detokenize=False,
    )
    rows = [
        dict(shared, max_tokens=budget, seed=request.row_seed(row))
        for row, budget in enumerate(request.max_new_tokens)
    ]
    if s.ras_active:
        from sts.generation.ras import ras_request_args

        for row, kwargs in enumerate(rows):
            kwargs["extra_args"] = {RAS_ARGS_KEY: ras_request_args(s, request.row_seed(row))}
    return rows


def completion_ids(completion, end_ids: Sequence[int]) -> np.ndarray:
    """A vLLM `CompletionOutput` -> `[G]` int64 ids, the end id last when vLLM stopped on one.

    vLLM may or may not list the stop id in `token_ids`; `finish_reason == "stop"` says it stopped
    on one (`stop_reason` names it when it was a `stop_token_ids` entry), "length" that the budget
    cut the row, which then has no end id.
    """
    ids = np.asarray(completion.token_ids, dtype=np.int64)
    if completion.finish_reason == "stop" and (len(ids) == 0 or int(ids[-1]) not in end_ids):
        stop = completion.stop_reason if isinstance(completion.stop_reason, int) else end_ids[0]
        ids = np.append(ids, np.int64(stop))
    return ids


class VllmBackend:
    """An offline vLLM engine. Extra keyword arguments go to `vllm.LLM` (e.g. `gpu_memory_utilization`).

    `repetition_aware`: load the RAS logits processor (`RAS_PROCESSOR`) so that requests may use
    repetition-aware sampling; False leaves the engine without it (such requests are refused).
    """

    name = "vllm"

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "auto",
        seed: int = 0,
        repetition_aware: bool = True,
        **llm_kwargs,
    ):
        from vllm import LLM

        from sts.vllm_compat import with_lfm2_overrides

        llm_kwargs = with_lfm2_overrides(model, llm_kwargs)
        if repetition_aware:
            llm_kwargs["logits_processors"] = [*llm_kwargs.get("logits_processors", []), RAS_PROCESSOR]
        self.repetition_aware = repetition_aware
        self.llm = LLM(model=str(model), dtype=dtype, seed=seed, **llm_kwargs)

    def generate(
        self, prompts: Sequence[Sequence[int] | np.ndarray], request: GenerationRequest
    ) -> list[np.ndarray]:
        """Prompts `[L_i]` int -> generated ids `[G_i]` int64 per prompt, as `TransformersBackend.generate`."""
        from vllm import SamplingParams

        if request.extra_logits_processors:
            raise ValueError("the vLLM backend takes no extra logits processors")
        if len(prompts) != len(request.max_new_tokens):
            raise ValueError(f"{len(prompts)} prompts but {len(request.max_new_tokens)} budgets")
        if request.sampling.ras_active and not self.repetition_aware:
            raise ValueError("repetition-aware sampling needs the engine built with repetition_aware=True")
        params = [SamplingParams(**kwargs) for kwargs in vllm_sampling_kwargs(request)]
        outputs = self.llm.generate(
            [{"prompt_token_ids": [int(i) for i in p]} for p in prompts],
            sampling_params=params,
            use_tqdm=False,
        )
        return [
            completion_ids(o.outputs[0], request.end_ids) if o.outputs else np.zeros(0, dtype=np.int64)
            for o in outputs
        ]
