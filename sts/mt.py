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
`hf` and `vllm` tokenize that chat and generate through `sts.generation` (the preset's sampling,
the model's eos ids from its generation config, no constraint on the ids); a row that reaches
`max_new_tokens` without an eos id is `truncated`. A failed or empty translation is an `MTResult` with a drop reason ("mt_error", "mt_empty"), never
an exception.
"""

from __future__ import annotations

import json
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sts.errors import UsageError
from sts.generation.request import GenerationRequest, Sampling, generation_end_ids, split_end


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
    sampling: Sampling = Sampling(do_sample=False)
    """How the model decodes (greedy unless its card recommends sampling)."""
    max_new_tokens: int = 256
    """Longest translation in tokens."""


PRESETS: dict[str, MTPreset] = {
    # Model card of LiquidAI/LFM2-350M-ENJP-MT: single turn, the system prompt names the target
    # language exactly so, and the recommended sampling is temperature 0.5, min_p 0.1,
    # repetition_penalty 1.05.
    "LiquidAI/LFM2-350M-ENJP-MT": MTPreset(
        system_prompts={"ja": "Translate to Japanese.", "en": "Translate to English."},
        sampling=Sampling(temperature=0.5, min_p=0.1, repetition_penalty=1.05),
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
            raise UsageError(f"unknown MT preset {preset!r}; presets are {sorted(PRESETS)}")
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


class _ChatLM(MTBackend):
    """What `HFChatMT` and `VllmMT` share: chat prompts as token ids, one unconstrained generation
    request (`sts.generation`, `allowed=None`), and each row read back as text + `truncated`."""

    batch_size: int | None = None
    """Rows per backend call (None: all); a failing call drops its rows only ("mt_error")."""

    def _setup(self, model: str, tokenizer, preset: str | None, max_new_tokens: int | None, seed: int):
        self.model_name = str(model)
        self.preset = preset_for(model, preset)
        self.max_new_tokens = max_new_tokens or self.preset.max_new_tokens
        self.seed = seed
        self.tokenizer = tokenizer

    def build_prompts(self, texts, tgt_lang, contexts=None) -> list[str]:
        """Chat-template-rendered prompts, one per text."""
        return [
            self.tokenizer.apply_chat_template(
                build_messages(t, tgt_lang, self.preset, c), tokenize=False, add_generation_prompt=True
            )
            for t, c in zip(texts, _contexts(contexts, len(texts)), strict=True)
        ]

    def prompt_ids(self, texts, tgt_lang, contexts=None) -> list[list[int]]:
        """Token ids of `build_prompts` (what either backend receives)."""
        # The chat template already holds BOS: the tokenizer must not add another (nor must vLLM,
        # which would tokenize text prompts with special tokens), so both get these ids.
        return [
            self.tokenizer(p, add_special_tokens=False)["input_ids"]
            for p in self.build_prompts(texts, tgt_lang, contexts)
        ]

    def generation_request(self, rows: int) -> GenerationRequest:
        """The preset's sampling, `max_new_tokens` per row, ended by the model's eos ids, no constraint."""
        return GenerationRequest(
            allowed=None,
            end_ids=self.end_ids,
            max_new_tokens=[self.max_new_tokens] * rows,
            sampling=self.preset.sampling,
            min_new_tokens=0,
            seed=self.seed,
        )

    def backend(self):
        """The `sts.generation` backend that generates the ids."""
        raise NotImplementedError

    def read(self, ids) -> MTResult:
        """A generated row -> its text; truncated when it has no end id (budget reached)."""
        body, ended = split_end(ids, self.end_ids)
        return result_from_text(self.tokenizer.decode(body, skip_special_tokens=True), truncated=not ended)

    def translate(self, texts, src_lang, tgt_lang, contexts=None) -> list[MTResult]:
        contexts = _contexts(contexts, len(texts))
        size = self.batch_size or max(len(texts), 1)
        results: list[MTResult] = []
        for start in range(0, len(texts), size):
            batch = slice(start, start + size)
            try:
                prompts = self.prompt_ids(texts[batch], tgt_lang, contexts[batch])
                rows = self.backend().generate(prompts, self.generation_request(len(prompts)))
                results += [self.read(ids) for ids in rows]
            except ImportError:  # vLLM missing is a setup error, not a bad batch
                raise
            except Exception:  # one bad batch (OOM, a tokenizer error) drops its rows only
                results += [MTResult(None, "mt_error")] * len(texts[batch])
        return results


class HFChatMT(_ChatLM):
    """A causal chat LM through transformers (`sts.generation.TransformersBackend`): batched, left-padded."""

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

        from sts.generation.transformers_backend import TransformersBackend

        self.name = f"hf:{model}"
        self._setup(model, AutoTokenizer.from_pretrained(model), preset, max_new_tokens, seed)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.model = (
            AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        )
        pad = self.tokenizer.pad_token_id
        self._backend = TransformersBackend(
            self.model, pad_token_id=self.tokenizer.eos_token_id if pad is None else pad
        )

    @property
    def end_ids(self) -> list[int]:
        """The ids `generate` stops on: the generation config's eos ids, else the tokenizer's."""
        return generation_end_ids(self.model.generation_config, self.tokenizer)

    def backend(self):
        return self._backend


class VllmMT(_ChatLM):
    """vLLM offline batched generation (`sts.generation.VllmBackend`) with the same chat prompts.

    The engine starts on the first `translate` (vllm is imported there); `engine_kwargs` go to `vllm.LLM`.
    """

    def __init__(
        self,
        model: str,
        *,
        preset: str | None = None,
        max_new_tokens: int | None = None,
        seed: int = 0,
        **engine_kwargs,
    ):
        from transformers import AutoTokenizer, GenerationConfig

        self.name = f"vllm:{model}"
        self._setup(model, AutoTokenizer.from_pretrained(model), preset, max_new_tokens, seed)
        self.engine_kwargs = engine_kwargs
        try:
            config = GenerationConfig.from_pretrained(model)
        except OSError:  # no generation_config.json: the tokenizer's eos
            config = None
        self.end_ids = generation_end_ids(config, self.tokenizer)
        self._backend = None

    def backend(self):
        if self._backend is None:
            from sts.generation.vllm_backend import VllmBackend

            self._backend = VllmBackend(self.model_name, seed=self.seed, **self.engine_kwargs)
        return self._backend


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
        """The JSON body of one request (greedy: temperature 0, OpenAI's convention); min_p and
        repetition_penalty are vLLM's extra sampling fields."""
        s = self.preset.sampling
        return {
            "model": self.model_name,
            "messages": build_messages(text, tgt_lang, self.preset, context),
            "temperature": s.temperature if s.do_sample else 0.0,
            "top_p": s.top_p if s.do_sample else 1.0,
            "min_p": s.min_p if s.do_sample else 0.0,
            "repetition_penalty": s.repetition_penalty if s.do_sample else 1.0,
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
    classes = {"hf": HFChatMT, "vllm": VllmMT, "http": HTTPChatMT}
    if kind not in classes:
        raise UsageError(f"unknown MT backend {kind!r}; choose from {sorted(classes) + ['reference']}")
    if not model:
        raise UsageError(f"MT backend {kind!r} needs a model (a HF id or local directory)")
    if kind in ("hf", "vllm"):
        from sts.model_files import resolve_model

        resolve_model(model, what="MT model")  # a missing local folder named as such
    return classes[kind](model, **kwargs)
