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

Generation is constrained to the speech block plus the end marker, and a loop guard bounds it:
at most `max(min_speech_tokens, speech_tokens_per_char * len(text))` new tokens (capped at
`max_speech_tokens`); a row that hits its bound without `<|SPEECH_GENERATION_END|>` is dropped with
"tts_no_end_marker".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corpus_builder.interfaces import TTSBackend, TTSRequest, TTSResult

MARKERS = (
    "<|TEXT_GENERATION_START|>",
    "<|TEXT_GENERATION_END|>",
    "<|TEXT_UNDERSTANDING_START|>",
    "<|TEXT_UNDERSTANDING_END|>",
    "<|SPEECH_GENERATION_START|>",
    "<|SPEECH_GENERATION_END|>",
    "<|SPEECH_UNDERSTANDING_START|>",
    "<|SPEECH_UNDERSTANDING_END|>",
)
SPEECH_TOKEN_FORMAT = "<|s_{}|>"
USER_TEMPLATE = "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>"
SPEECH_START = "<|SPEECH_GENERATION_START|>"
SPEECH_END = "<|SPEECH_GENERATION_END|>"
DEFAULT_CODEC = "HKUSTAudio/xcodec2-hf"


@dataclass
class LlasaSampling:
    """Sampling and loop-guard settings shared by the transformers and vLLM paths."""

    temperature: float = 0.8
    """Llasa's card default; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling; the card notes 0.95/0.9 are more stable."""
    min_speech_tokens: int = 150
    """Loop guard floor: even a one-word text may run this long (3 s at 50 tokens/s)."""
    speech_tokens_per_char: dict[str, float] = field(default_factory=lambda: {"ja": 25.0, "en": 10.0})
    """Loop guard slope per character of the new text, by language: ~3x natural speech (ja ~5
    chars/s = 10 tokens/char, en ~14 chars/s = 3.6 tokens/char)."""
    max_speech_tokens: int = 2048
    """Hard cap on new speech tokens (Llasa's max length)."""
    seed: int | None = None
    """Seed for sampling (None: torch's current state)."""

    def max_new_tokens(self, text: str, lang: str) -> int:
        """The loop guard: how many tokens row `text` may generate, its end marker included."""
        per_char = self.speech_tokens_per_char.get(lang, max(self.speech_tokens_per_char.values()))
        return int(min(self.max_speech_tokens, max(self.min_speech_tokens, per_char * len(text))))


class LlasaPrompter:
    """Tokenizer-level half of Llasa: prompt ids in, generated ids -> codes out. No model, no torch.

    Args:
        tokenizer: a Llasa tokenizer (Llama vocab + the 8 markers + `<|s_0|>`...) with a chat template.
        num_speech_tokens: size of the speech block to use (the codec's codebook size).
    """

    def __init__(self, tokenizer, num_speech_tokens: int):
        self.tokenizer = tokenizer
        self.num_speech_tokens = num_speech_tokens
        ids = tokenizer.convert_tokens_to_ids([*MARKERS, SPEECH_TOKEN_FORMAT.format(0)])
        unk = tokenizer.unk_token_id
        missing = [name for name, i in zip([*MARKERS, "<|s_0|>"], ids, strict=True) if i is None or i == unk]
        if missing:
            raise ValueError(f"tokenizer is not a Llasa tokenizer: missing {missing}")
        self.marker_ids = dict(zip(MARKERS, ids[:-1], strict=True))
        self.speech_start_id = self.marker_ids[SPEECH_START]
        self.speech_end_id = self.marker_ids[SPEECH_END]
        self.speech_token_offset = ids[-1]
        # Verified once over the whole block, so codes map by arithmetic from here on.
        block = tokenizer.convert_tokens_to_ids(
            [SPEECH_TOKEN_FORMAT.format(k) for k in range(num_speech_tokens)]
        )
        expected = list(range(self.speech_token_offset, self.speech_token_offset + num_speech_tokens))
        if block != expected:
            raise ValueError(
                f"<|s_0|>..<|s_{num_speech_tokens - 1}|> are not contiguous ids from {self.speech_token_offset}"
            )
        self.allowed_ids = [*expected, self.speech_end_id]
        """Ids generation may produce: the speech block and the end marker."""
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
    prompt_ids: list[int]
    max_new_tokens: int


class LlasaBase(TTSBackend):
    """What the transformers and vLLM paths share: prompts, voice prompts' codes, parsing, decoding."""

    languages = ("ja", "en")

    def __init__(
        self,
        tokenizer,
        codec,
        sampling: LlasaSampling | None = None,
        *,
        voice_preserving: bool = True,
        languages: Sequence[str] = ("ja", "en"),
    ):
        self.codec = codec
        self.sampling = sampling or LlasaSampling()
        self.voice_preserving = voice_preserving
        self.languages = tuple(languages)
        self.prompter = LlasaPrompter(tokenizer, codec.codebook_size)

    def jobs(self, requests: Sequence[TTSRequest]) -> tuple[list[LlasaJob], dict[int, str]]:
        """Prompt ids and loop-guard budgets per request; requests that cannot run get a drop reason."""
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
                drops[i] = (
                    "tts_bad_prompt_audio"  # empty or NaN/inf: cannot clone, and must not fail the batch
                )
            else:
                codes = prompt_codes.get(i)
                ids = self.prompter.prompt_ids(
                    request.text, codes, request.prompt_text if codes is not None else None
                )
                jobs.append(LlasaJob(i, ids, self.sampling.max_new_tokens(request.text, request.lang)))
        return jobs, drops

    def generate(self, jobs: Sequence[LlasaJob]) -> list[list[int]]:
        """New ids per job (prompt excluded), in order."""
        raise NotImplementedError

    def synthesize(self, requests: Sequence[TTSRequest]) -> list[TTSResult]:
        jobs, drops = self.jobs(requests)
        codes: dict[int, np.ndarray] = {}
        for job, new_ids in zip(jobs, self.generate(jobs) if jobs else [], strict=True):
            job_codes, reason = self.prompter.parse(new_ids)
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
    """Llasa through transformers `generate()`: batched, left-padded, constrained, loop-guarded.

    Args:
        model: Hugging Face id or local dir of a Llasa checkpoint (e.g. `HKUSTAudio/Llasa-1B`).
        codec: an XCodec2 id/dir, or a ready `sts.codec.Codec`.
        device, dtype: where and in which dtype the LM runs.
        codec_dtype: the codec's dtype (fp32 by default).
        batch_size: requests per `generate()` call (sorted by prompt length first).
        sampling: temperature / top_p / loop guard.
        static_cache: `cache_implementation="static"` (+ `compile` for CUDA graphs: the fast GPU path).
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
        sampling: LlasaSampling | None = None,
        voice_preserving: bool = True,
        languages: Sequence[str] = ("ja", "en"),
        static_cache: bool = False,
        compile: bool = False,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        super().__init__(
            tokenizer,
            _load_codec(codec, device, codec_dtype),
            sampling,
            voice_preserving=voice_preserving,
            languages=languages,
        )
        self.name = f"llasa:{model}"
        self.device = torch.device(device)
        self.model = (
            AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        )
        self.batch_size = batch_size
        self.static_cache = static_cache or compile
        self.compile = compile
        self._allowed_mask = None

    def generate(self, jobs: Sequence[LlasaJob]) -> list[list[int]]:
        order = sorted(range(len(jobs)), key=lambda j: len(jobs[j].prompt_ids))
        out: list[list[int] | None] = [None] * len(jobs)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for j, ids in zip(batch, self._generate_batch([jobs[j] for j in batch]), strict=True):
                out[j] = ids
        return out

    def _generate_batch(self, jobs: Sequence[LlasaJob]) -> list[list[int]]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        prompts = [job.prompt_ids for job in jobs]
        width = max(len(p) for p in prompts)
        max_new = max(job.max_new_tokens for job in jobs)
        if self.static_cache:
            # A static cache (and its CUDA graphs) is sized by prompt width + max_new_tokens: round both
            # up so that batches share a few shapes instead of recompiling for each. Rows still stop at
            # their own budget (RowBudget), so the output is the same.
            width, max_new = _round_up(width, 64), _round_up(max_new, 256)
        pad = self.prompter.pad_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        budgets = torch.tensor([job.max_new_tokens for job in jobs], device=self.device)
        if self._allowed_mask is None:
            self._allowed_mask = allowed_mask(
                self.prompter.allowed_ids, self.model.config.vocab_size, self.device
            )
        if self.sampling.seed is not None:
            torch.manual_seed(self.sampling.seed)
        kwargs = {}
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        if self.compile:
            from transformers import CompileConfig

            kwargs["compile_config"] = CompileConfig(mode="reduce-overhead")
        greedy = self.sampling.temperature <= 0
        with torch.inference_mode():
            sequences = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=not greedy,
                temperature=None if greedy else self.sampling.temperature,
                top_p=None if greedy else self.sampling.top_p,
                top_k=None,
                max_new_tokens=max_new,
                eos_token_id=self.prompter.speech_end_id,
                pad_token_id=pad,
                logits_processor=LogitsProcessorList([AllowedIdsProcessor(self._allowed_mask)]),
                stopping_criteria=StoppingCriteriaList([RowBudget(width, budgets)]),
                **kwargs,
            )
        return [row[width:].tolist() for row in sequences.cpu()]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def allowed_mask(allowed_ids: Sequence[int], vocab_size: int, device):
    """`[V]` additive mask: 0 on allowed ids, -inf elsewhere."""
    import torch

    mask = torch.full((vocab_size,), float("-inf"), device=device)
    mask[torch.tensor(allowed_ids, device=device)] = 0.0
    return mask


class AllowedIdsProcessor:
    """Logits processor: only the speech block and the end marker can be sampled."""

    def __init__(self, mask):
        self.mask = mask  # [V]

    def __call__(self, input_ids, scores):
        return scores + self.mask[: scores.shape[-1]].to(scores.dtype)


class RowBudget:
    """Stopping criterion: row b stops after `budgets[b]` new tokens (the per-row loop guard)."""

    def __init__(self, prompt_width: int, budgets):
        self.prompt_width = prompt_width
        self.budgets = budgets  # [B] int

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids.shape[1] - self.prompt_width) >= self.budgets
