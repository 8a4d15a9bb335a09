"""transformers `generate()` over left-padded batches, with the static-cache + CUDA-graph fast path.

    backend = TransformersBackend(model, pad_token_id=0, fast=True)   # fast: static cache (+ compile on CUDA)
    ids = backend.generate(prompts, GenerationRequest(allowed, [end], max_new_tokens=[500, 200]))
    for new_ids in (stream := backend.stream(prompt, request)): ...    # batch 1, ids as they come
    stream.ids                                                         # == backend.generate([prompt], request)[0]

The fast path is transformers' own: `cache_implementation="static"` and, on CUDA,
`compile_config=CompileConfig(mode="reduce-overhead")` (CUDA graphs). docs/measurements.md records it at
414 tok/s vs 13 tok/s for eager `generate()` at batch 1 on an H100. A static cache (and its graphs)
is sized by prompt width + max_new_tokens, so the fast path rounds both up (to multiples of 64 and
256 by default) and batches of different lengths share a few compiled shapes; each row still
stops at its own budget (`RowBudgetCriteria`), so rounding does not change the output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sts.generation.processors import LoopStoppingCriteria, cut_rows, logits_processors, stopping_criteria
from sts.generation.request import GenerationRequest
from sts.generation.row_stream import RowStream


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


class TransformersBackend:
    """`model.generate` on one left-padded batch per call, under the request's constraint and budgets.

    Args:
        model: a causal LM (`...ForCausalLM`), already on its device and in eval mode.
        pad_token_id: fills the left padding (masked out) and the rows that stopped early.
        fast: static KV cache, prompt width and max_new_tokens rounded up to `shape_multiples`.
        compile: torch.compile with CUDA graphs (default: when fast and the model is on CUDA); False
            keeps a static cache uncompiled (transformers would otherwise compile it on CUDA itself).
        shape_multiples: (prompt width, new tokens) rounding of the fast path.
    """

    name = "transformers"

    def __init__(
        self,
        model,
        *,
        pad_token_id: int,
        fast: bool = False,
        compile: bool | None = None,
        shape_multiples: tuple[int, int] = (64, 256),
    ):
        self.model = model
        self.pad_token_id = int(pad_token_id)
        self.fast = fast or bool(compile)
        self.compile = fast and model.device.type == "cuda" if compile is None else compile
        self.shape_multiples = shape_multiples
        self._worker = None  # the thread streams generate in (`stream`)

    def generate(
        self, prompts: Sequence[Sequence[int] | np.ndarray], request: GenerationRequest
    ) -> list[np.ndarray]:
        """Prompts `[L_i]` int -> generated ids `[G_i]` int64 per prompt, in order.

        Row i holds at most `request.max_new_tokens[i]` ids and ends right after its first end id
        when it reached one; a row the loop guard stopped ends where it was stopped.
        """
        return self._generate(prompts, request)

    def stream(self, prompt: Sequence[int] | np.ndarray, request: GenerationRequest) -> RowStream:
        """One prompt `[L]`: iterate the new ids `[k]` int64 as `generate` writes them; afterwards
        `.ids` is exactly `generate([prompt], request)[0]` (same processors, stopping criteria and
        seeding: the same ids for the same seed). `generate` runs in the backend's one worker thread
        (`sts.generation.row_stream`), where a compiled fast path records its CUDA graphs once."""
        if self._worker is None:  # one thread for every stream: torch keeps CUDA graphs per thread
            from concurrent.futures import ThreadPoolExecutor

            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sts-generate")
        run = lambda streamer, cancel: self._generate([prompt], request, streamer, cancel)[0]  # noqa: E731
        return RowStream(run, self._worker)

    def _generate(self, prompts, request: GenerationRequest, streamer=None, cancel=None) -> list[np.ndarray]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        if len(prompts) != len(request.max_new_tokens):
            raise ValueError(f"{len(prompts)} prompts but {len(request.max_new_tokens)} budgets")
        if not prompts:
            return []
        if request.guided:  # classifier-free guidance runs the model on the unconditional prompts too
            from sts.generation.guidance import bind_guidance

            request = bind_guidance(request, self.model, pad_token_id=self.pad_token_id)
        width = max(len(p) for p in prompts)
        max_new = max(request.max_new_tokens)
        if self.fast:
            width, max_new = (
                round_up(width, self.shape_multiples[0]),
                round_up(max_new, self.shape_multiples[1]),
            )
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {row} is empty")
            input_ids[row, width - len(prompt) :] = torch.as_tensor(np.asarray(prompt, dtype=np.int64))
            attention_mask[row, width - len(prompt) :] = 1
        stops = stopping_criteria(request, prompt_len=width)
        kwargs = dict(request.sampling.generate_kwargs())
        if self.fast:
            kwargs["cache_implementation"] = "static"
        if self.compile:
            from transformers import CompileConfig

            kwargs["compile_config"] = CompileConfig(mode="reduce-overhead", fullgraph=False)
        elif self.fast:  # transformers would compile a static cache on CUDA by itself
            kwargs["disable_compile"] = True
        if streamer is not None:
            kwargs["streamer"] = streamer
        if request.seed is not None:
            torch.manual_seed(request.seed)
        device = self.model.device
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new,
                logits_processor=LogitsProcessorList(logits_processors(request, prompt_len=width)),
                stopping_criteria=StoppingCriteriaList(stops + ([cancel] if cancel is not None else [])),
                eos_token_id=list(request.end_ids),
                pad_token_id=self.pad_token_id,
                **kwargs,
            )
        loop_stops = next((s.stopped_at for s in stops if isinstance(s, LoopStoppingCriteria)), None)
        return cut_rows(out[:, width:].cpu().numpy(), request, loop_stops)
