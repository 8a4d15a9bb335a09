"""One generation layer for every stage: constrained, budgeted, loop-guarded decoding on transformers or vLLM.

    from sts.generation import GenerationRequest, Sampling, TransformersBackend, allowed_token_ids, SPEECH_GUARD
    backend = TransformersBackend(model, pad_token_id=0, fast=True)        # or VllmBackend("runs/sft")
    request = GenerationRequest(
        allowed_token_ids(vocab, tokenizer, "speech"), [vocab.speech_end_id],
        max_new_tokens=[500, 200], sampling=Sampling(temperature=0.8, top_p=0.95), guard=SPEECH_GUARD,
    )
    ids = backend.generate(prompts, request)      # [G_i] int64 per prompt, end id last when it ended
    for new_ids in (row := stream_row(backend, prompt, request)): ...   # one prompt, ids as generated; row.ids

Used by `sts-infer` (speech and text outputs of a trained checkpoint), the corpus MT (`sts.mt`,
unconstrained: `allowed=None`) and the corpus Llasa TTS (speech block + end marker).

Modules: `request` (`Sampling`, `RAS_SAMPLING`, `GenerationRequest`, reading a row's end), `allowed`
(which ids an output may hold), `chain` (text-then-speech answers: the constraint switches at the
speech start marker), `guidance` (classifier-free guidance over an unconditional prompt,
transformers only), `loops` (`LoopGuard`, `detect_loop` and its four rules, `find_loop`,
`tail_is_loop`), `ras` (repetition-aware sampling), `processors` (the request as transformers logits
processors and stopping criteria), `transformers_backend`, `vllm_backend`, `vllm_ras` (RAS inside vLLM),
`stream` (one row's ids while it is generated: transformers streams them, other backends give the
row whole at its end).
Names are loaded lazily: `Sampling` or `GenerationRequest` alone import neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sts.generation.allowed import Modality, allowed_token_ids, speech_block_ids
    from sts.generation.chain import (
        ChainRow,
        chain_text_ids,
        check_chain_requests,
        generate_chain,
        speech_phase_prompt,
        text_phase,
    )
    from sts.generation.guidance import (
        GuidanceUnsupportedError,
        bind_guidance,
        generate_guided,
        unconditional_prompt,
    )
    from sts.generation.loops import (
        LOOP_KINDS,
        SPEECH_GUARD,
        TEXT_GUARD,
        Loop,
        LoopGuard,
        detect_loop,
        find_loop,
        rule_loops,
        tail_is_loop,
    )
    from sts.generation.processors import (
        AllowedTokensProcessor,
        LoopStoppingCriteria,
        RowBudgetCriteria,
    )
    from sts.generation.ras import RepetitionAwareProcessor, RepetitionAwareRequest, ras_choose
    from sts.generation.request import (
        RAS_SAMPLING,
        GenerationRequest,
        Sampling,
        generation_end_ids,
        length_sorted_batches,
        split_end,
    )
    from sts.generation.stream import RowStream, stream_row
    from sts.generation.transformers_backend import TransformersBackend
    from sts.generation.vllm_backend import VllmBackend, completion_ids, vllm_sampling_kwargs

_MODULES = {
    "allowed": ("Modality", "allowed_token_ids", "speech_block_ids"),
    "chain": (
        "ChainRow",
        "chain_text_ids",
        "check_chain_requests",
        "generate_chain",
        "speech_phase_prompt",
        "text_phase",
    ),
    "guidance": ("GuidanceUnsupportedError", "bind_guidance", "generate_guided", "unconditional_prompt"),
    "loops": (
        "LOOP_KINDS",
        "SPEECH_GUARD",
        "TEXT_GUARD",
        "Loop",
        "LoopGuard",
        "detect_loop",
        "find_loop",
        "rule_loops",
        "tail_is_loop",
    ),
    "ras": ("RepetitionAwareProcessor", "RepetitionAwareRequest", "ras_choose"),
    "processors": ("AllowedTokensProcessor", "LoopStoppingCriteria", "RowBudgetCriteria"),
    "request": (
        "RAS_SAMPLING",
        "GenerationRequest",
        "Sampling",
        "generation_end_ids",
        "length_sorted_batches",
        "split_end",
    ),
    "stream": ("RowStream", "stream_row"),
    "transformers_backend": ("TransformersBackend",),
    "vllm_backend": ("VllmBackend", "completion_ids", "vllm_sampling_kwargs"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "ChainRow",
    "chain_text_ids",
    "check_chain_requests",
    "generate_chain",
    "speech_phase_prompt",
    "text_phase",
    "GuidanceUnsupportedError",
    "bind_guidance",
    "generate_guided",
    "unconditional_prompt",
    "LOOP_KINDS",
    "RAS_SAMPLING",
    "SPEECH_GUARD",
    "TEXT_GUARD",
    "AllowedTokensProcessor",
    "GenerationRequest",
    "Loop",
    "LoopGuard",
    "LoopStoppingCriteria",
    "Modality",
    "RepetitionAwareProcessor",
    "RepetitionAwareRequest",
    "RowBudgetCriteria",
    "RowStream",
    "Sampling",
    "TransformersBackend",
    "VllmBackend",
    "allowed_token_ids",
    "completion_ids",
    "detect_loop",
    "find_loop",
    "generation_end_ids",
    "length_sorted_batches",
    "ras_choose",
    "rule_loops",
    "speech_block_ids",
    "split_end",
    "stream_row",
    "tail_is_loop",
    "vllm_sampling_kwargs",
]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"sts.generation.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'sts.generation' has no attribute {name!r}")
