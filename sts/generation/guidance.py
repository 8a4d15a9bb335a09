"""Classifier-free guidance (CFG) for speech output: each step moved away from an unconditional prompt.

    request = GenerationRequest(allowed, [end], [500], guidance_scale=1.5,
                                unconditional_prompts=[unconditional_prompt(prompt, vocab)])
    ids = generate_guided(backend, [prompt], request)      # TransformersBackend; VllmBackend refuses

With guidance scale s, a step's scores are `s * (log p(.|prompt) - log p(.|unconditional)) +
log p(.|unconditional)` (Sanchez et al. 2023, "Stay on topic with Classifier-Free Guidance";
transformers' `UnbatchedClassifierFreeGuidanceLogitsProcessor`, which this module uses: it runs the
model a second time on the unconditional prompt plus the tokens generated so far, with its own KV
cache). s = 1 is plain decoding (no processor is added); s > 1 strengthens the condition. Koel-TTS
reports that CFG on the text and context-audio condition cuts hallucinations of a codec-LM TTS;
Hibiki applies it to the voice condition and reports that too high a scale hurts translation
(docs/background.md), so measure it (`sts-train --eval.guidance-scale`, `benchmarks/dpo_ablation.py`).

The unconditional prompt (`unconditional_prompt`): a prompt with a source speech segment (s2st,
asr, s2tt) keeps everything but that segment's codes (the markers stay: "no source speech"); a prompt
without one (tts: text input) becomes the bare speech start marker, dropping the text (and the chat
around it), as Koel-TTS drops the text condition. The guidance processor runs after the output
constraint and before repetition-aware sampling (`processors.logits_processors`), and the sampling
warpers of `generate` (temperature, top-p) act on the guided scores. vLLM has no CFG: a guided
request is refused there (`vllm_backend.vllm_sampling_kwargs`). A two-phase chain request
(`chain.py`) cannot carry per-row unconditional prompts and is not guided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from sts.generation.request import GenerationRequest
from sts.vocab import SpeechVocab


class GuidanceUnsupportedError(ValueError):
    """A guided request sent where CFG cannot run (vLLM, or without a model to run it)."""


def unconditional_prompt(prompt: np.ndarray | Sequence[int], vocab: SpeechVocab) -> np.ndarray:
    """The unconditional counterpart `[U]` int64 of a speech-output prompt `[L]` (see the module doc).

    A source speech segment is the first `<|speech_start|>` that speech ids follow; its ids are cut
    up to its `<|speech_end|>`. Without one, `[<|speech_start|>]`.
    """
    prompt = np.asarray(prompt, dtype=np.int64).ravel()
    starts = np.flatnonzero(prompt == vocab.speech_start_id)
    lo, hi = vocab.speech_token_offset, vocab.speech_token_offset + vocab.num_speech_tokens
    for s in starts:
        if s + 1 < len(prompt) and lo <= prompt[s + 1] < hi:
            ends = np.flatnonzero(prompt[s + 1 :] == vocab.speech_end_id)
            stop = s + 1 + (ends[0] if len(ends) else len(prompt) - s - 1)
            return np.concatenate([prompt[: s + 1], prompt[stop:]])
    return np.array([vocab.speech_start_id], dtype=np.int64)


def guidance_processor(model, request: GenerationRequest, *, pad_token_id: int):
    """transformers' `UnbatchedClassifierFreeGuidanceLogitsProcessor` over the request's unconditional
    prompts, left-padded into one `[B, U]` batch with its attention mask, on the model's device."""
    import torch
    from transformers.generation.logits_process import UnbatchedClassifierFreeGuidanceLogitsProcessor

    prompts = request.unconditional_prompts or []
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.as_tensor(np.asarray(prompt, dtype=np.int64))
        mask[row, width - len(prompt) :] = 1
    return UnbatchedClassifierFreeGuidanceLogitsProcessor(
        request.guidance_scale, model, ids.to(model.device), mask.to(model.device), use_cache=True
    )


def bind_guidance(request: GenerationRequest, model, *, pad_token_id: int) -> GenerationRequest:
    """The request with its guidance processor among `extra_logits_processors` (transformers), ready
    for `TransformersBackend.generate`; the request itself when it is not guided."""
    if not request.guided or request.guidance_bound:
        return request
    processor = guidance_processor(model, request, pad_token_id=pad_token_id)
    return replace(request, extra_logits_processors=[*request.extra_logits_processors, processor])


def generate_guided(backend, prompts: Sequence[np.ndarray], request: GenerationRequest) -> list[np.ndarray]:
    """`backend.generate(prompts, request)`, with CFG when the request is guided.

    Raises GuidanceUnsupportedError for a guided request on a backend without a transformers model
    (vLLM has no classifier-free guidance).
    """
    if not request.guided:
        return backend.generate(list(prompts), request)
    model = getattr(backend, "model", None)
    if getattr(backend, "name", "") != "transformers" or model is None:
        raise GuidanceUnsupportedError(
            f"classifier-free guidance (guidance_scale {request.guidance_scale}) runs on the transformers "
            f"backend only; {getattr(backend, 'name', type(backend).__name__)} has none: use guidance_scale 1"
        )
    return backend.generate(list(prompts), bind_guidance(request, model, pad_token_id=backend.pad_token_id))
