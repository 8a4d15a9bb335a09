"""A tiny random LFM2 causal LM and a small byte-level BPE tokenizer, built locally in seconds.

Both come from the real classes (`Lfm2Config`, `Lfm2ForCausalLM`, a `tokenizers` BPE wrapped as a
transformers fast tokenizer with an LFM2-style chat template), so every stage's test runs the
same code paths as the real `LiquidAI/LFM2-350M`, only smaller.
"""

from __future__ import annotations

from pathlib import Path

# The same ChatML-like layout as LFM2's own template: BOS once, then one block per message.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LFM2_350M_SHAPE = dict(
    hidden_size=1024,
    intermediate_size=6656,  # auto-adjusted by LFM2: int(2 * 6656 / 3) rounded up to 256 = 4608
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=8,
    layer_types=["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)],
    max_position_embeddings=32768,
    block_multiple_of=256,
    block_ffn_dim_multiplier=1.0,
    block_auto_adjust_ff_dim=True,
    tie_word_embeddings=True,
)
"""`LiquidAI/LFM2-350M`'s body as `Lfm2Config` keywords (docs/background.md: hidden 1024, 16 layers of which the
attention ones are 2, 5, 8, 10, 12, 14, 16 heads / 8 KV heads, tied embeddings; 32k context): the
random-weight shape the speed benchmarks measure. The vocabulary is the caller's."""

SPECIAL_TOKENS = ["<|pad|>", "<|startoftext|>", "<|im_end|>", "<|im_start|>"]
"""Ids 0..3, in LFM2's order (pad 0, bos 1, eos 2)."""

# Written for this project: everyday sentences so the BPE learns merges for both scripts.
TRAINING_TEXT = [
    "Good morning. How are you today?",
    "Where is the nearest train station?",
    "I would like two tickets to Kyoto, please.",
    "The weather is nice, so let's walk to the park.",
    "How much does this cost? It is three hundred yen.",
    "Thank you very much for your help yesterday.",
    "Please speak a little more slowly.",
    "My flight leaves at nine in the evening.",
    "おはようございます。今日はお元気ですか？",
    "一番近い駅はどこですか？",
    "京都までの切符を二枚ください。",
    "天気がいいので、公園まで歩きましょう。",
    "これはいくらですか？三百円です。",
    "昨日は手伝ってくれて本当にありがとう。",
    "もう少しゆっくり話してください。",
    "私の飛行機は夜の九時に出発します。",
    "Translate to English. Translate to Japanese. Transcribe the speech. Read the text aloud.",
]


def build_tiny_tokenizer(vocab_size: int = 384, texts: list[str] | None = None):
    """A byte-level BPE tokenizer trained on `texts` (default `TRAINING_TEXT`): ja and en, LFM2 specials.

    Byte-level, so every string (kanji included) tokenizes without unknowns. `vocab_size` is the
    BPE target; the real size can be smaller when the text runs out of merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((texts or TRAINING_TEXT) * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|startoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        extra_special_tokens={"im_start": "<|im_start|>"},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_lfm2_config(vocab_size: int, **overrides):
    """An `Lfm2Config` with both layer kinds (conv at 0 and 2, attention at 1 and 3), hidden 64."""
    from transformers import Lfm2Config

    fields = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=["conv", "full_attention", "conv", "full_attention"],
        max_position_embeddings=4096,
        block_multiple_of=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    fields.update(overrides)
    return Lfm2Config(**fields)


def save_tiny_lfm2(
    out_dir: str | Path,
    *,
    extra_vocab_rows: int = 16,
    seed: int = 0,
    texts: list[str] | None = None,
    tokenizer_vocab_size: int = 384,
    **config_overrides,
) -> Path:
    """Build and `save_pretrained` a tiny random LFM2 with its tokenizer; returns `out_dir`.

    `extra_vocab_rows` makes `config.vocab_size` larger than `len(tokenizer)` (as real checkpoints
    often pad their embeddings); a negative value makes it smaller, the other case to handle.
    `texts` / `tokenizer_vocab_size` train the BPE on other text; `config_overrides` change the
    `Lfm2Config` (e.g. `hidden_size=256` for the offline demo's small LM).
    """
    import torch
    from transformers import Lfm2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(tokenizer_vocab_size, texts)
    torch.manual_seed(seed)
    model = Lfm2ForCausalLM(tiny_lfm2_config(len(tokenizer) + extra_vocab_rows, **config_overrides))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
