"""Llasa through vLLM (GPU, `gpu` extra): the same prompts, constraint and loop guard as `llasa.py`.

    tts = load_tts("llasa-vllm:HKUSTAudio/Llasa-1B", gpu_memory_utilization=0.6)

vLLM batches and schedules every request of a `synthesize` call itself. Prompts go in as token ids
(`{"prompt_token_ids": ...}`), so the speech ids of a voice prompt are exactly those of the
transformers path. `vllm` is imported inside the constructor; `sampling_params_dict` and
`LlasaBase.jobs` hold the request-building logic and are tested on CPU without vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from corpus_builder.tts.llasa import (
    DEFAULT_CODEC,
    LlasaBase,
    LlasaJob,
    LlasaPrompter,
    LlasaSampling,
    _load_codec,
)


def sampling_params_dict(job: LlasaJob, prompter: LlasaPrompter, sampling: LlasaSampling) -> dict:
    """Keyword arguments of `vllm.SamplingParams` for one job."""
    return dict(
        temperature=max(sampling.temperature, 0.0),
        top_p=sampling.top_p,
        max_tokens=job.max_new_tokens,
        allowed_token_ids=list(prompter.allowed_ids),
        stop_token_ids=[prompter.speech_end_id],
        seed=None if sampling.seed is None else sampling.seed + job.index,
        detokenize=False,
        skip_special_tokens=False,
    )


def vllm_requests(jobs: Sequence[LlasaJob], prompter: LlasaPrompter, sampling: LlasaSampling):
    """`(prompts, sampling_params_dicts)` for `LLM.generate`: one token-id prompt per job."""
    prompts = [{"prompt_token_ids": list(job.prompt_ids)} for job in jobs]
    return prompts, [sampling_params_dict(job, prompter, sampling) for job in jobs]


def new_ids_from_output(output, end_id: int) -> list[int]:
    """A vLLM `RequestOutput` -> new ids, the end marker appended when vLLM stopped on it.

    vLLM may leave the stop token out of `token_ids`; `finish_reason == "stop"` says it was seen,
    "length" that the loop guard cut the row (then `LlasaPrompter.parse` drops it).
    """
    completion = output.outputs[0]
    ids = list(completion.token_ids)
    if completion.finish_reason == "stop" and end_id not in ids:
        ids.append(end_id)
    return ids


class LlasaVLLM(LlasaBase):
    """Llasa on a vLLM engine. Extra keyword arguments go to `vllm.LLM` (e.g. `gpu_memory_utilization`)."""

    def __init__(
        self,
        model: str | Path,
        *,
        codec=DEFAULT_CODEC,
        device: str = "cuda",
        dtype: str = "bfloat16",
        codec_dtype: str = "float32",
        sampling: LlasaSampling | None = None,
        voice_preserving: bool = True,
        languages: Sequence[str] = ("ja", "en"),
        **llm_kwargs,
    ):
        import vllm
        from transformers import AutoTokenizer

        super().__init__(
            AutoTokenizer.from_pretrained(model),
            _load_codec(codec, device, codec_dtype),
            sampling,
            voice_preserving=voice_preserving,
            languages=languages,
        )
        self.name = f"llasa-vllm:{model}"
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model), dtype=dtype, **llm_kwargs)

    def generate(self, jobs: Sequence[LlasaJob]) -> list[list[int]]:
        prompts, params = vllm_requests(jobs, self.prompter, self.sampling)
        outputs = self.llm.generate(
            prompts, sampling_params=[self._vllm.SamplingParams(**p) for p in params], use_tqdm=False
        )
        return [new_ids_from_output(o, self.prompter.speech_end_id) for o in outputs]
