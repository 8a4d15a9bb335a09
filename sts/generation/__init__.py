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
`row_stream` (one row's ids while it is generated: transformers streams them, other backends give the
row whole at its end).
The torch-free parts are imported here; the logits processors and the transformers backend load
when first used, so `Sampling` or `GenerationRequest` alone import neither torch nor transformers.
"""

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
from sts.generation.request import (
    RAS_SAMPLING,
    GenerationRequest,
    Sampling,
    generation_end_ids,
    length_sorted_batches,
    split_end,
)
from sts.generation.row_stream import RowStream, stream_row
from sts.generation.vllm_backend import VllmBackend, completion_ids, vllm_sampling_kwargs
from sts.lazy import lazy_exports

_torch_exports, __getattr__ = lazy_exports(__name__, {
    "AllowedTokensProcessor": "sts.generation.processors",
    "LoopStoppingCriteria": "sts.generation.processors",
    "RowBudgetCriteria": "sts.generation.processors",
    "RepetitionAwareProcessor": "sts.generation.ras",
    "RepetitionAwareRequest": "sts.generation.ras",
    "ras_choose": "sts.generation.ras",
    "TransformersBackend": "sts.generation.transformers_backend",
})  # fmt: skip
