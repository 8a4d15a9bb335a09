"""Repetition-aware sampling inside vLLM: one custom logits processor class for either model runner.

    LLM(model, logits_processors=["sts.generation.vllm_ras:RepetitionAwareLogitsProcessor"])  # VllmBackend does it
    SamplingParams(temperature=0.0, extra_args={RAS_ARGS_KEY: ras_request_args(sampling, seed)})

Imports vLLM (the `gpu` extra); `VllmBackend` names the class by its path, so only vLLM's engine
process imports this module. vLLM 0.32/0.33 has two custom logits processor interfaces
(docs.vllm.ai/en/v0.32.0/features/custom_logitsprocs):

* Model Runner V2, the default runner since vLLM 0.30: subclasses of
  `vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor`, built as `cls(vllm_config,
  req_states)`; `add_request(slot, params)` says whether a request uses the processor, and
  `apply(logits, ctx)` gets `[rows, vocab]` float32 logits after the allowed-ids mask, penalties and
  bad words, before temperature, min-p and top-k/top-p. A request's generated ids are
  `req_states.all_token_ids[slot, prompt_len:total_len]` on the device.
* The legacy V1 runner (`VLLM_USE_V2_MODEL_RUNNER=0`, vLLM on CPU): subclasses of
  `vllm.v1.sample.logits_processor.LogitsProcessor`; `AdapterLogitsProcessor` wraps a request-level
  function `(output_token_ids, logits [V]) -> logits [V]` that `new_req_logits_processor(params)`
  makes per request. It too runs after the allowed-token-ids mask, but before the penalties: a
  `repetition_penalty` other than 1 has no effect on RAS rows there (transformers and Model Runner
  V2 apply it first).

`RepetitionAwareLogitsProcessor` subclasses both (the V2 base only where the installed vLLM has
it), so whichever runner the engine picks loads it. Either way the token is chosen by the one RAS
implementation, `sts.generation.ras.ras_choose` (the V1 path through `RepetitionAwareRequest`, the
request-level function; the V2 path over all its rows at once), and the row comes back -inf but
for that id. Speculative decoding is not supported (a request owns one logits row).

Tested on CPU against stand-ins of the two base classes (tests/test_generation_ras.py); not yet run
inside a real vLLM (none is installed here).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from sts.generation.ras import RepetitionAwareRequest, only, ras_choose
from sts.generation.request import RAS_ARGS_KEY

try:
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as RunnerV2LogitsProcessor
except Exception:  # a vLLM without Model Runner V2 processors, or one whose GPU runner cannot load here (CPU)
    RunnerV2LogitsProcessor = None

_BASES = (AdapterLogitsProcessor,) + (() if RunnerV2LogitsProcessor is None else (RunnerV2LogitsProcessor,))


def _request_args(params) -> dict | None:
    """The RAS settings of a request's `SamplingParams`, or None when it does not use RAS."""
    extra = getattr(params, "extra_args", None) or {}
    return extra.get(RAS_ARGS_KEY)


def _on_device(buffer) -> torch.Tensor:
    """A Model Runner V2 state buffer (`UvaBackedTensor`, `StagedWriteTensor`) as its device tensor."""
    return getattr(buffer, "gpu", buffer)


class RepetitionAwareLogitsProcessor(*_BASES):
    """RAS for the requests whose `extra_args` carry `RAS_ARGS_KEY`; other rows pass unchanged."""

    def __init__(self, vllm_config, *args):
        if len(args) == 1:  # Model Runner V2: (vllm_config, req_states)
            self.req_states = args[0]
            self.requests: dict[int, RepetitionAwareRequest] = {}
        else:  # V1: (vllm_config, device, is_pin_memory)
            AdapterLogitsProcessor.__init__(self, vllm_config, *args)
            self.req_states = None

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """Refuse a request whose RAS settings are malformed (ValueError), at admission."""
        args = _request_args(sampling_params)
        if args is not None:
            RepetitionAwareRequest(args)

    # --- legacy V1 runner (through AdapterLogitsProcessor) -------------------------------------------

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the token, greedy requests included

    def new_req_logits_processor(self, params):
        args = _request_args(params)
        return None if args is None else RepetitionAwareRequest(args)

    # --- Model Runner V2 ------------------------------------------------------------------------------

    def add_request(self, req_idx: int, sampling_params) -> bool:
        args = _request_args(sampling_params)
        if args is None:
            self.requests.pop(req_idx, None)  # the slot may hold a finished request's state
            return False
        self.requests[req_idx] = RepetitionAwareRequest(args)
        return True

    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        if ctx is None:
            return AdapterLogitsProcessor.apply(self, logits)
        slots = [int(slot) for slot in ctx.idx_mapping_np]
        if logits.shape[0] != len(slots):
            raise ValueError("repetition-aware sampling does not support speculative decoding")
        rows = [row for row, slot in enumerate(slots) if slot in self.requests]
        if not rows:
            return logits
        requests = [self.requests[slots[row]] for row in rows]
        device = logits.device
        history = recent_output(
            self.req_states,
            torch.tensor([slots[row] for row in rows], device=device),
            max(request.window for request in requests),
        )
        chosen, _ = ras_choose(
            logits[rows],
            history,
            torch.stack([request.draws.uniforms() for request in requests]),
            temperature=torch.tensor([r.temperature for r in requests], dtype=torch.float64, device=device),
            top_k=torch.tensor([r.top_k for r in requests], device=device),
            top_p=torch.tensor([r.top_p for r in requests], dtype=torch.float64, device=device),
            window=torch.tensor([r.window for r in requests], device=device),
            tau=torch.tensor([r.tau for r in requests], dtype=torch.float64, device=device),
        )
        index = torch.tensor(rows, device=device)
        logits[index] = only(chosen, logits[index])
        return logits


def recent_output(req_states, slots: torch.Tensor, window: int) -> torch.Tensor:
    """The last `window` generated ids of each request slot, `[K, window]` int64, -1 before its output.

    `req_states`: Model Runner V2's `LogitsProcRequestState` (`all_token_ids` `[max_reqs, max_len]`,
    `prompt_len` and `total_len` `[max_reqs]`, read on the device as its own n-gram processor does).
    """
    all_ids = _on_device(req_states.all_token_ids)
    prompt = _on_device(req_states.prompt_len)[slots].long()
    total = _on_device(req_states.total_len)[slots].long()
    positions = total[:, None] - window + torch.arange(window, device=slots.device)[None]
    ids = all_ids[slots[:, None], positions.clamp(min=0, max=all_ids.shape[1] - 1)].long()  # [K, window] only
    return torch.where(positions >= prompt[:, None], ids, torch.full_like(ids, -1))
