"""Llasa through vLLM (GPU, `gpu` extra): the same prompts, request and drops as `llasa.py`.

    tts = load_tts("llasa-vllm:HKUSTAudio/Llasa-1B", gpu_memory_utilization=0.6)

vLLM batches and schedules every request of a `synthesize` call itself. The engine is the package's
one vLLM wrapper, `sts.generation.VllmBackend`: prompts go in as token ids, so the speech ids of a
voice prompt are exactly those of the transformers path, and `LlasaBase.request` becomes one
`SamplingParams` per row through `sts.generation.vllm_sampling_kwargs` (tested on CPU without
vLLM). vLLM cannot stop a looping row early; it runs to its budget and is dropped as "tts_loop" all
the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from corpus_builder.tts.llasa import DEFAULT_CODEC, LlasaBase, LlasaDecoding, LlasaJob, _load_codec
from sts.generation.vllm_backend import VllmBackend


class LlasaVllm(LlasaBase):
    """Llasa on a vLLM engine. Extra keyword arguments go to `vllm.LLM` (e.g. `gpu_memory_utilization`)."""

    def __init__(
        self,
        model: str | Path,
        *,
        codec=DEFAULT_CODEC,
        device: str = "cuda",
        dtype: str = "bfloat16",
        codec_dtype: str = "float32",
        decoding: LlasaDecoding | None = None,
        voice_preserving: bool = True,
        languages: Sequence[str] = ("ja", "en"),
        **llm_kwargs,
    ):
        import vllm  # noqa: F401  (the gpu extra: fail here, before the tokenizer and codec load)
        from transformers import AutoTokenizer

        super().__init__(
            AutoTokenizer.from_pretrained(model),
            _load_codec(codec, device, codec_dtype),
            decoding,
            voice_preserving=voice_preserving,
            languages=languages,
        )
        self.name = f"llasa-vllm:{model}"
        self.backend = VllmBackend(model, dtype=dtype, **llm_kwargs)

    def generate(self, jobs: Sequence[LlasaJob]) -> list[list[int]]:
        rows = self.backend.generate([job.prompt_ids for job in jobs], self.request(jobs))
        return [ids.tolist() for ids in rows]
