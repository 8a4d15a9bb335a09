"""Llasa-style codec-LM TTS through transformers: text (+ a voice prompt) -> XCodec2 codes -> 16 kHz audio.

    from corpus_builder.tts import load_tts
    tts = load_tts("llasa:HKUSTAudio/Llasa-1B", device="cuda", dtype="bfloat16")
    results = tts.synthesize([TTSRequest("Good morning.", "en")])      # [N] float32 at 16 kHz

Prompt (the layout of `HKUSTAudio/Llasa-1B`'s card), rendered with the model's own chat template:

    user:      Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>
    assistant: <|SPEECH_GENERATION_START|>{prompt speech ids}...   -> generated <|s_k|>... <|SPEECH_GENERATION_END|>

Voice-preserving mode (a request with `prompt_audio` and `prompt_text`): `{text}` is
`prompt_text + " " + text` and the assistant prefix carries the prompt clip's codes, so the model
continues in that voice; only the newly generated codes are returned. Speech ids are
`speech_token_offset + code` by arithmetic (the block `<|s_0|>...` is checked contiguous once).

Generation goes through `sts.generation` (the same layer as `sts-infer` and the corpus MT):

* constrained to the speech block plus `<|SPEECH_GENERATION_END|>` (`AllowedTokensProcessor` on
  transformers, `allowed_token_ids` on vLLM);
* budgeted per row: at most `max(min_speech_tokens, speech_tokens_per_char * len(text))` new tokens,
  and never past Llasa's window: prompt + new tokens <= `max_length` (2,048; Llasa's maintainers
  state that the limit covers text and speech together). A prompt that leaves fewer than
  `min_speech_tokens` (a long voice prompt) is dropped as "tts_prompt_too_long";
* sampled repetition-aware by default (`LLASA_SAMPLING`: nucleus top-p 0.8 /
  top-k 25 at Llasa's temperature 0.8, a draw that repeats one of the last 10 codes redrawn from the
  whole distribution; VALL-E 2 / CosyVoice, `sts.generation.ras`);
* loop-guarded: a row whose codes fall into a repetition loop (`sts.generation.SPEECH_GUARD`: an
  exact or approximate unit of up to 0.5 s repeated over >= 2 s, a 1 s segment said again, or 2 s
  over <= 4 distinct codes) is stopped as soon as its tail loops (transformers; vLLM runs it to its
  budget) and dropped as "tts_loop". `sts-infer` cuts a loop and keeps the rest; a corpus row must
  say its whole text, so a cut row would be a wrong pair;
* a row that hits its budget without the end marker is dropped as "tts_no_end_marker".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corpus_builder.interfaces import TTSBackend, TTSRequest, TTSResult
from sts.generation.allowed import speech_block_ids
from sts.generation.loops import SPEECH_GUARD, LoopGuard, detect_loop
from sts.generation.request import RAS_SAMPLING, GenerationRequest, Sampling, length_sorted_batches
from sts.llasa_layout import MARKERS as MARKERS  # re-exported: the layout lives in the base
from sts.llasa_layout import SPEECH_START, find_llasa_layout

USER_TEMPLATE = "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>"
DEFAULT_CODEC = "HKUSTAudio/xcodec2-hf"


LLASA_SAMPLING = Sampling(temperature=0.8, top_p=RAS_SAMPLING.top_p, top_k=RAS_SAMPLING.top_k, repetition_aware=True,
                          ras_window=RAS_SAMPLING.ras_window, ras_tau=RAS_SAMPLING.ras_tau)  # fmt: skip
"""Llasa's card temperature (0.8) on CosyVoice's repetition-aware nucleus (top-p 0.8, top-k 25; Llasa's
card samples at top-p 1 and calls 0.95/0.9 more stable): a draw one of the last 10 codes already holds
is redrawn from the whole distribution (`sts.generation.ras`)."""


@dataclass
class LlasaDecoding:
    """How Llasa decodes: its sampling, length budgets and loop guard (transformers and vLLM paths alike)."""

    sampling: Sampling = LLASA_SAMPLING
    """Sampling (`sts.generation.Sampling`; `Sampling(do_sample=False)` is greedy)."""
    min_speech_tokens: int = 150
    """Budget floor: even a one-word text may run this long (3 s at 50 tokens/s). A prompt that
    leaves less room than this in the window is dropped ("tts_prompt_too_long")."""
    speech_tokens_per_char: dict[str, float] = field(default_factory=lambda: {"ja": 25.0, "en": 10.0})
    """Budget slope per character of the new text, by language: ~3x natural speech (ja ~5
    chars/s = 10 tokens/char, en ~14 chars/s = 3.6 tokens/char)."""
    max_length: int = 2048
    """Llasa's window in tokens, prompt (text + voice prompt codes) and new tokens together; Llasa was
    trained on 2,048 and its maintainers state the limit covers text and speech."""
    loop_guard: LoopGuard | None = SPEECH_GUARD
    """A row whose codes loop is stopped early and dropped ("tts_loop"); None: no loop check."""
    seed: int | None = None
    """Seed for sampling (None: torch's current state; vLLM: row i gets seed + i)."""

    def max_new_tokens(self, text: str, lang: str, prompt_len: int = 0) -> int:
        """How many tokens row `text` may generate, its end marker included: the text's budget,
        cut to what the window leaves after a `prompt_len`-token prompt (may be < 1: no room)."""
        per_char = self.speech_tokens_per_char.get(lang, max(self.speech_tokens_per_char.values()))
        wanted = max(self.min_speech_tokens, per_char * len(text))
        return int(min(self.max_length - prompt_len, wanted))


class LlasaPrompter:
    """Tokenizer-level half of Llasa: prompt ids in, generated ids -> codes out. No model, no torch.

    Args:
        tokenizer: a Llasa tokenizer (Llama vocab + the 8 markers + `<|s_0|>`...) with a chat template.
        num_speech_tokens: size of the speech block to use (the codec's codebook size).
    """

    def __init__(self, tokenizer, num_speech_tokens: int):
        self.tokenizer = tokenizer
        self.num_speech_tokens = num_speech_tokens
        # Verified once over the whole block (sts.llasa_layout), so codes map by arithmetic from here on.
        layout = find_llasa_layout(tokenizer, num_speech_tokens)  # LlasaLayoutError is a ValueError
        self.marker_ids = layout.marker_ids
        self.speech_start_id = layout.speech_start_id
        self.speech_end_id = layout.speech_end_id
        self.speech_token_offset = layout.speech_token_offset
        self.allowed_ids = speech_block_ids(
            self.speech_token_offset, num_speech_tokens, end_id=self.speech_end_id
        )
        """`[num_speech_tokens + 1]` int64 ids generation may produce: the speech block and the end marker."""
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.speech_end_id

    def codes_to_ids(self, codes: np.ndarray) -> list[int]:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= self.num_speech_tokens):
            raise ValueError(f"codes must lie in [0, {self.num_speech_tokens})")
        return (codes + self.speech_token_offset).tolist()

    def prompt_ids(
        self, text: str, prompt_codes: np.ndarray | None = None, prompt_text: str | None = None
    ) -> list[int]:
        """Token ids of the whole prompt; the model continues after the last one.

        `prompt_codes` `[T_p]` and `prompt_text` (voice-preserving mode) must come together.
        """
        if (prompt_codes is None) != (prompt_text is None):
            raise ValueError("prompt_codes and prompt_text go together")
        if prompt_text is not None:
            text = f"{prompt_text} {text}"
        chat = [
            {"role": "user", "content": USER_TEMPLATE.format(text=text)},
            {"role": "assistant", "content": SPEECH_START},
        ]
        rendered = self.tokenizer.apply_chat_template(chat, tokenize=False, continue_final_message=True)
        ids = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if ids[-1] != self.speech_start_id:
            raise ValueError(f"chat template did not end the prompt on {SPEECH_START}: {rendered[-80:]!r}")
        if prompt_codes is not None:
            ids = ids + self.codes_to_ids(prompt_codes)
        return ids

    def parse(self, new_ids: Sequence[int]) -> tuple[np.ndarray | None, str | None]:
        """Generated ids (after the prompt) -> (`[T]` int32 codes, None) or (None, drop reason)."""
        new_ids = list(new_ids)
        if self.speech_end_id not in new_ids:
            return None, "tts_no_end_marker"
        ids = np.asarray(new_ids[: new_ids.index(self.speech_end_id)], dtype=np.int64)
        codes = ids - self.speech_token_offset
        if len(codes) == 0:
            return None, "tts_empty"
        if codes.min() < 0 or codes.max() >= self.num_speech_tokens:
            return None, "tts_non_speech_token"
        return codes.astype(np.int32), None


@dataclass
class LlasaJob:
    """One request, ready to generate."""

    index: int
    """Position of the request in the `synthesize` call."""
    prompt_ids: list[int]
    """`[L]` the whole prompt (chat template, text, voice prompt codes)."""
    max_new_tokens: int
    """Its budget, end marker included: L + max_new_tokens <= `LlasaDecoding.max_length`."""


class LlasaBase(TTSBackend):
    """What the transformers and vLLM paths share: prompts, budgets, the generation request, parsing, decoding."""

    languages = ("ja", "en")

    def __init__(
        self,
        tokenizer,
        codec,
        decoding: LlasaDecoding | None = None,
        *,
        voice_preserving: bool = True,
        languages: Sequence[str] = ("ja", "en"),
    ):
        self.codec = codec
        self.decoding = decoding or LlasaDecoding()
        self.voice_preserving = voice_preserving
        self.languages = tuple(languages)
        self.prompter = LlasaPrompter(tokenizer, codec.codebook_size)

    def jobs(self, requests: Sequence[TTSRequest]) -> tuple[list[LlasaJob], dict[int, str]]:
        """Prompt ids and budgets per request; requests that cannot run get a drop reason."""
        drops: dict[int, str] = {}
        cloned = [
            i
            for i, r in enumerate(requests)
            if self.voice_preserving
            and r.prompt_audio is not None
            and r.prompt_text
            and len(r.prompt_audio)
            and np.isfinite(r.prompt_audio).all()
        ]
        prompt_codes = dict(
            zip(cloned, self.codec.encode([requests[i].prompt_audio for i in cloned]), strict=True)
        )
        jobs = []
        for i, request in enumerate(requests):
            if request.lang not in self.languages:
                drops[i] = "tts_unsupported_language"
            elif not request.text.strip():
                drops[i] = "tts_empty_text"
            elif (
                self.voice_preserving
                and request.prompt_audio is not None
                and i not in prompt_codes
                and request.prompt_text
            ):
                # Empty or NaN/inf: cannot clone, and must not fail the batch.
                drops[i] = "tts_bad_prompt_audio"
            else:
                codes = prompt_codes.get(i)
                ids = self.prompter.prompt_ids(
                    request.text, codes, request.prompt_text if codes is not None else None
                )
                if self.decoding.max_length - len(ids) < self.decoding.min_speech_tokens:
                    drops[i] = "tts_prompt_too_long"
                    continue
                budget = self.decoding.max_new_tokens(request.text, request.lang, prompt_len=len(ids))
                jobs.append(LlasaJob(i, ids, budget))
        return jobs, drops

    def request(self, jobs: Sequence[LlasaJob]) -> GenerationRequest:
        """The `sts.generation` request of `jobs` (either backend): speech block + end marker, each
        job's budget, Llasa's sampling and the loop guard."""
        return GenerationRequest(
            self.prompter.allowed_ids,
            end_ids=[self.prompter.speech_end_id],
            max_new_tokens=[job.max_new_tokens for job in jobs],
            sampling=self.decoding.sampling,
            min_new_tokens=0,
            guard=self.decoding.loop_guard,
            seed=self.decoding.seed,
        )

    def generate(self, jobs: Sequence[LlasaJob]) -> list[list[int]]:
        """New ids per job (prompt excluded), in order, up to and including the end marker."""
        raise NotImplementedError

    def read(self, new_ids: Sequence[int]) -> tuple[np.ndarray | None, str | None]:
        """Generated ids -> (`[T]` int32 codes, None) or (None, drop reason); a looping row is "tts_loop"."""
        new_ids = list(new_ids)
        end = self.prompter.speech_end_id
        body = new_ids[: new_ids.index(end)] if end in new_ids else new_ids
        guard = self.decoding.loop_guard
        if guard is not None and detect_loop(np.asarray(body, dtype=np.int64), guard) is not None:
            return None, "tts_loop"
        return self.prompter.parse(new_ids)

    def synthesize(self, requests: Sequence[TTSRequest]) -> list[TTSResult]:
        jobs, drops = self.jobs(requests)
        codes: dict[int, np.ndarray] = {}
        for job, new_ids in zip(jobs, self.generate(jobs) if jobs else [], strict=True):
            job_codes, reason = self.read(new_ids)
            if reason:
                drops[job.index] = reason
            else:
                codes[job.index] = job_codes
        order = sorted(codes)
        waves = dict(zip(order, self.codec.decode([codes[i] for i in order]) if order else [], strict=True))
        rate = self.codec.sample_rate
        return [
            TTSResult(waves[i], rate) if i in waves else TTSResult(None, rate, drops[i])
            for i in range(len(requests))
        ]


def _load_codec(codec, device: str, dtype: str):
    if not isinstance(codec, str | Path):
        return codec
    from sts.codec import load_codec

    # The codec is small: keep it in fp32 unless asked otherwise; bf16 codes can differ.
    return load_codec(str(codec), device=device, dtype=dtype)


class LlasaTTS(LlasaBase):
    """Llasa through transformers `generate()` (`sts.generation.TransformersBackend`): batched, left-padded.

    Args:
        model: Hugging Face id or local dir of a Llasa checkpoint (e.g. `HKUSTAudio/Llasa-1B`).
        codec: an XCodec2 id/dir, or a ready `sts.codec.Codec`.
        device, dtype: where and in which dtype the LM runs.
        codec_dtype: the codec's dtype (fp32 by default).
        batch_size: requests per `generate()` call (sorted by prompt length first).
        decoding: sampling, budgets and loop guard (`LlasaDecoding`).
        static_cache: `cache_implementation="static"` (+ `compile` for CUDA graphs: the fast GPU path),
            shapes rounded so that batches share compiled graphs.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        codec=DEFAULT_CODEC,
        device: str = "cpu",
        dtype: str = "float32",
        codec_dtype: str = "float32",
        batch_size: int = 16,
        decoding: LlasaDecoding | None = None,
        voice_preserving: bool = True,
        languages: Sequence[str] = ("ja", "en"),
        static_cache: bool = False,
        compile: bool = False,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sts.generation.transformers_backend import TransformersBackend

        tokenizer = AutoTokenizer.from_pretrained(model)
        super().__init__(
            tokenizer,
            _load_codec(codec, device, codec_dtype),
            decoding,
            voice_preserving=voice_preserving,
            languages=languages,
        )
        self.name = f"llasa:{model}"
        self.device = torch.device(device)
        self.model = (
            AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        )
        self.batch_size = batch_size
        self.backend = TransformersBackend(
            self.model, pad_token_id=self.prompter.pad_id, fast=static_cache or compile, compile=compile
        )

    def generate(self, jobs: Sequence[LlasaJob]) -> list[list[int]]:
        out: list[list[int] | None] = [None] * len(jobs)
        for batch in length_sorted_batches([len(job.prompt_ids) for job in jobs], self.batch_size):
            rows = self.backend.generate(
                [jobs[j].prompt_ids for j in batch], self.request([jobs[j] for j in batch])
            )
            for j, ids in zip(batch, rows, strict=True):
                out[j] = ids.tolist()
        return out
