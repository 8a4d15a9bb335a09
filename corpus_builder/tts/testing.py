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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from corpus_builder.tts.llasa import MARKERS, SPEECH_TOKEN_FORMAT


def build_tiny_llasa_tokenizer(num_speech_tokens: int = 1024):
    """The tiny bilingual BPE of `sts.testing` + the 8 markers + `<|s_0|>..<|s_{n-1}|>`, in Llasa's order."""
    from sts.testing.lm import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens([*MARKERS], special_tokens=True)
    tokenizer.add_tokens(
        [SPEECH_TOKEN_FORMAT.format(k) for k in range(num_speech_tokens)], special_tokens=True
    )
    return tokenizer


def save_tiny_llasa(
    out_dir: str | Path,
    *,
    num_speech_tokens: int = 1024,
    end_bias: float = 3.5,
    never_end: bool = False,
    loop_codes: Sequence[int] = (),
    seed: int = 0,
    **config_overrides,
) -> Path:
    """Build and `save_pretrained` a tiny random Llama-based Llasa with its tokenizer; returns `out_dir`.

    `config_overrides` change the `LlamaConfig` (e.g. `hidden_size=128` for head_dim 32, which
    vLLM-CPU needs).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tiny_llasa_tokenizer(num_speech_tokens)
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
