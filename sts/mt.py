"""Text MT, shared by the corpus builder and `sts-eval-mt`: a Hugging Face chat model, vLLM, an
OpenAI-compatible endpoint, or the source's reference.

    from sts.mt import load_mt
    mt = load_mt("hf", model="LiquidAI/LFM2-350M-ENJP-MT", device="cuda")     # the preset's prompts + sampling
    mt = load_mt("http", model="LiquidAI/LFM2-350M-ENJP-MT", base_url="http://localhost:8000/v1")
    mt.translate(["こんにちは"], "ja", "en")      # [MTResult(text="Hello", drop_reason=None)]

Every backend builds the same chat: a system prompt naming the target language (for
`LiquidAI/LFM2-350M-ENJP-MT` exactly `Translate to Japanese.` / `Translate to English.`), then the
optional context (previous source/translation pairs of the same recording, as prior user/assistant
turns), then the text as the user turn. The ENJP-MT card uses a single turn: pass no context for it.
A failed or empty translation is an `MTResult` with a drop reason ("mt_error", "mt_empty"), never
an exception.
"""

from __future__ import annotations

import json
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class MTResult:
    text: str | None
    """The translation; None when dropped."""
    drop_reason: str | None = None
    """Why there is no translation, e.g. "mt_empty", "mt_error"."""
    truncated: bool = False
    """The model hit its token budget without ending: usually a repetition loop or a cut sentence."""


class MTBackend(ABC):
    """Translates batches of sentences between `sts.LANGUAGES`."""

    name: str
    """Recorded in the `mt_backend` column and the corpus card, e.g. "hf:LiquidAI/LFM2-350M-ENJP-MT"."""

    @abstractmethod
    def translate(
        self,
        texts: Sequence[str],
        src_lang: str,
        tgt_lang: str,
        contexts: Sequence[list[tuple[str, str]]] | None = None,
    ) -> list[MTResult]:
        """One result per text, in order. `contexts[i]`: previous (source, translation) pairs of the same recording."""


LANGUAGE_NAMES = {"ja": "Japanese", "en": "English"}


@dataclass
class MTPreset:
    """Prompts and sampling of one MT model."""

    system_prompts: dict[str, str] = field(
        default_factory=lambda: {t: f"Translate to {n}." for t, n in LANGUAGE_NAMES.items()}
    )
    """System prompt by target language."""
    temperature: float = 0.0
    """0 is greedy."""
    min_p: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256


PRESETS: dict[str, MTPreset] = {
    # Model card of LiquidAI/LFM2-350M-ENJP-MT: single turn, the system prompt names the target
    # language exactly so, and the recommended sampling is temperature 0.5, min_p 0.1,
    # repetition_penalty 1.05.
    "LiquidAI/LFM2-350M-ENJP-MT": MTPreset(
        system_prompts={"ja": "Translate to Japanese.", "en": "Translate to English."},
        temperature=0.5,
        min_p=0.1,
        repetition_penalty=1.05,
    ),
    # A translation-only fine-tune of LFM2-350M by shisa.ai, reported at +49 % win rate over ENJP-MT
    # on a translation benchmark. We assume ENJP-MT's prompt format; no recommended sampling was
    # found in our sources, so it decodes greedily. Check both against its card before a large run.
    "shisa-ai/shisa-v2.1c-lfm2-350m-sft3-tlonly": MTPreset(
        system_prompts={"ja": "Translate to Japanese.", "en": "Translate to English."},
    ),
    # Any HF chat model: the same system prompts, greedy decoding.
    "generic": MTPreset(),
}


def preset_for(model: str, preset: str | None = None) -> MTPreset:
    """The named preset, the model's own, or the generic one (same prompts, greedy)."""
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"unknown MT preset {preset!r}; presets are {sorted(PRESETS)}")
        return PRESETS[preset]
    return PRESETS.get(str(model), MTPreset())


def build_messages(
    text: str, tgt_lang: str, preset: MTPreset, context: Sequence[tuple[str, str]] | None = None
) -> list[dict[str, str]]:
    """System prompt, then each (source, translation) context pair as a user/assistant turn, then the text."""
    messages = [{"role": "system", "content": preset.system_prompts[tgt_lang]}]
    for source, translation in context or ():
        messages += [{"role": "user", "content": source}, {"role": "assistant", "content": translation}]
    messages.append({"role": "user", "content": text})
    return messages


def result_from_text(text: str | None, truncated: bool = False) -> MTResult:
    text = (text or "").strip()
    return MTResult(text, truncated=truncated) if text else MTResult(None, "mt_empty")


def _contexts(contexts, n: int) -> list:
    return list(contexts) if contexts is not None else [None] * n


class ReferenceMT(MTBackend):
    """No model: the pipeline takes each row's reference translation (`SourceRow.tgt_text`)."""

    name = "reference"

    def translate(self, texts, src_lang, tgt_lang, contexts=None) -> list[MTResult]:
        raise TypeError("ReferenceMT translates nothing: the pipeline reads the rows' reference text")


class HFChatMT(MTBackend):
    """A causal chat LM through transformers: batched, left-padded `generate`."""

    def __init__(
        self,
        model: str,
        *,
        preset: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 32,
        max_new_tokens: int | None = None,
        seed: int = 0,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"hf:{model}"
        self.preset = preset_for(model, preset)
        self.max_new_tokens = max_new_tokens or self.preset.max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device(device)
        self.model = (
            AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        )

    def translate(self, texts, src_lang, tgt_lang, contexts=None) -> list[MTResult]:
        contexts = _contexts(contexts, len(texts))
        results: list[MTResult] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [
                build_messages(t, tgt_lang, self.preset, c)
                for t, c in zip(
                    texts[start : start + self.batch_size],
                    contexts[start : start + self.batch_size],
                    strict=True,
                )
            ]
            try:
                results += [result_from_text(t, cut) for t, cut in self._generate(batch)]
            except Exception:  # one bad batch (OOM, a tokenizer error) drops its rows only
                results += [MTResult(None, "mt_error")] * len(batch)
        return results

    def _generate(self, conversations: list[list[dict[str, str]]]) -> list[tuple[str, bool]]:
        """(translation, truncated) per conversation; truncated: no end-of-turn id was generated."""
        import torch

        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        # The chat template already holds BOS; don't let the tokenizer add another.
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        p = self.preset
        sampling = (
            dict(do_sample=True, temperature=p.temperature, min_p=p.min_p or None, top_p=p.top_p)
            if p.temperature > 0
            else dict(do_sample=False)
        )
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                repetition_penalty=p.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        ended = torch.isin(new_tokens, torch.tensor(self._end_ids(), device=new_tokens.device)).any(dim=1)
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [(text, not bool(done)) for text, done in zip(texts, ended, strict=True)]

    def _end_ids(self) -> list[int]:
        """The ids `generate` stops on: the generation config's eos ids, else the tokenizer's."""
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        return [int(i) for i in (eos if isinstance(eos, list) else [eos])]


class VLLMMT(MTBackend):
    """vLLM offline batched generation with the same chat prompts (vllm is imported on first use)."""

    def __init__(
        self,
        model: str,
        *,
        preset: str | None = None,
        max_new_tokens: int | None = None,
        seed: int = 0,
        **engine_kwargs,
    ):
        from transformers import AutoTokenizer

        self.name = f"vllm:{model}"
        self.model_name = model
        self.preset = preset_for(model, preset)
        self.max_new_tokens = max_new_tokens or self.preset.max_new_tokens
        self.seed = seed
        self.engine_kwargs = engine_kwargs
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self._engine = None

    def build_prompts(self, texts, tgt_lang, contexts=None) -> list[str]:
        """Chat-template-rendered prompts, one per text (what vLLM's `generate` receives)."""
        return [
            self.tokenizer.apply_chat_template(
                build_messages(t, tgt_lang, self.preset, c), tokenize=False, add_generation_prompt=True
            )
            for t, c in zip(texts, _contexts(contexts, len(texts)), strict=True)
        ]

    def sampling_kwargs(self) -> dict:
        """Keyword arguments of `vllm.SamplingParams`."""
        p = self.preset
        return dict(
            temperature=p.temperature,
            min_p=p.min_p,
            top_p=p.top_p,
            repetition_penalty=p.repetition_penalty,
            max_tokens=self.max_new_tokens,
            seed=self.seed,
            detokenize=False,
        )

    def translate(self, texts, src_lang, tgt_lang, contexts=None) -> list[MTResult]:
        prompts = self.build_prompts(texts, tgt_lang, contexts)
        try:
            outputs = self._generate(prompts)
        except ImportError:
            raise
        except Exception:
            return [MTResult(None, "mt_error")] * len(texts)
        return [result_from_text(text, cut) for text, cut in outputs]

    def _generate(self, prompts: list[str]) -> list[tuple[str, bool]]:
        """(translation, truncated) per prompt; truncated: vLLM stopped on the length budget."""
        from vllm import LLM, SamplingParams

        from sts.vllm_compat import with_lfm2_overrides

        if self._engine is None:
            kwargs = with_lfm2_overrides(self.model_name, self.engine_kwargs)
            self._engine = LLM(model=self.model_name, seed=self.seed, **kwargs)
        # Token ids, not text: vLLM tokenizes text with special tokens, and a tokenizer that adds BOS
        # would put a second one before the template's. These are the ids the transformers backend feeds.
        token_prompts = [
            {"prompt_token_ids": self.tokenizer(p, add_special_tokens=False).input_ids} for p in prompts
        ]
        outputs = self._engine.generate(
            token_prompts, SamplingParams(**self.sampling_kwargs()), use_tqdm=False
        )
        # Decoded as the transformers backend decodes (vLLM's own text holds back a trailing partial
        # UTF-8 character, transformers shows it as U+FFFD), so both backends give the same string.
        return [
            (
                self.tokenizer.decode(o.outputs[0].token_ids, skip_special_tokens=True),
                o.outputs[0].finish_reason == "length",
            )
            if o.outputs
            else ("", False)
            for o in outputs
        ]


class HTTPChatMT(MTBackend):
    """An OpenAI-compatible `/chat/completions` endpoint (e.g. `vllm serve`), requests in parallel threads."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://localhost:8000/v1",
        preset: str | None = None,
        api_key: str = "EMPTY",
        max_new_tokens: int | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        retries: int = 2,
    ):
        self.name = f"http:{model}"
        self.model_name = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.preset = preset_for(model, preset)
        self.api_key = api_key
        self.max_new_tokens = max_new_tokens or self.preset.max_new_tokens
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries

    def request_body(self, text: str, tgt_lang: str, context=None) -> dict:
        """The JSON body of one request; min_p and repetition_penalty are vLLM's extra sampling fields."""
        p = self.preset
        return {
            "model": self.model_name,
            "messages": build_messages(text, tgt_lang, p, context),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "min_p": p.min_p,
            "repetition_penalty": p.repetition_penalty,
            "max_tokens": self.max_new_tokens,
        }

    def translate(self, texts, src_lang, tgt_lang, contexts=None) -> list[MTResult]:
        bodies = [
            self.request_body(t, tgt_lang, c)
            for t, c in zip(texts, _contexts(contexts, len(texts)), strict=True)
        ]
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(bodies)))) as pool:
            return list(pool.map(self._post, bodies))

    def _post(self, body: dict) -> MTResult:
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
        error = "mt_error"
        for _ in range(self.retries + 1):
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read())
                choice = reply["choices"][0]
                return result_from_text(choice["message"]["content"], choice.get("finish_reason") == "length")
            except Exception:  # HTTP errors, timeouts, malformed replies: retried, then dropped
                error = "mt_error"
        return MTResult(None, error)


def context_waves(keys: Sequence[str | None]) -> list[int]:
    """Wave of each item: how many earlier items share its document key (None: always wave 0).

    Items of one wave are independent of each other and can be translated in one batch; an item's
    context needs the translations of its document's earlier items, which are in earlier waves.
    """
    seen: dict[str, int] = {}
    waves = []
    for key in keys:
        if key is None:
            waves.append(0)
            continue
        waves.append(seen.get(key, 0))
        seen[key] = waves[-1] + 1
    return waves


def translate_in_context(
    mt: MTBackend,
    texts: Sequence[str],
    keys: Sequence[str | None],
    src_lang: str,
    tgt_lang: str,
    *,
    window: int,
    history: dict[str, list[tuple[str, str]]] | None = None,
) -> list[MTResult]:
    """Translate `texts` in order, each with the previous `window` (source, translation) pairs of its document.

    `keys[i]` names the document (e.g. the recording) of `texts[i]`; None means no context. `history`
    holds earlier pairs per document and is extended in place (pass the same dict to continue a
    document across calls). A dropped translation adds nothing to the history. With `window` 0 this
    is one plain `mt.translate` call. Items are batched by wave (`context_waves`), so the number of
    backend calls is the length of the longest document in `keys`, not the number of items.
    """
    if window <= 0:
        return list(mt.translate(list(texts), src_lang, tgt_lang))
    history = {} if history is None else history
    waves = context_waves(keys)
    results: list[MTResult | None] = [None] * len(texts)
    for wave in range(max(waves, default=-1) + 1):
        items = [i for i, w in enumerate(waves) if w == wave]
        contexts = [history.get(keys[i], [])[-window:] if keys[i] is not None else [] for i in items]
        batch = mt.translate([texts[i] for i in items], src_lang, tgt_lang, contexts)
        for i, result in zip(items, batch, strict=True):
            results[i] = result
            if keys[i] is not None and result.text and not result.truncated:  # a loop is no context
                history.setdefault(keys[i], []).append((texts[i], result.text))
    return results  # type: ignore[return-value]


def load_mt(kind: str, model: str = "", **kwargs) -> MTBackend:
    """An MT backend by kind: "hf", "vllm", "http" (these need `model`) or "reference"."""
    if kind == "reference":
        return ReferenceMT()
    classes = {"hf": HFChatMT, "vllm": VLLMMT, "http": HTTPChatMT}
    if kind not in classes:
        raise ValueError(f"unknown MT backend {kind!r}; choose from {sorted(classes) + ['reference']}")
    if not model:
        raise ValueError(f"MT backend {kind!r} needs a model (a HF id or local directory)")
    return classes[kind](model, **kwargs)
