"""Llasa's vocabulary layout: a Llama-3 text vocabulary, 8 task markers, then the XCodec2 speech block.

    from sts.llasa_layout import find_llasa_layout
    layout = find_llasa_layout(tokenizer, num_speech_tokens=65536)   # LlasaLayoutError says what is wrong
    layout.speech_token_offset, layout.marker_ids["<|SPEECH_GENERATION_START|>"]

The layout of `HKUSTAudio/Llasa-1B`/`-3B` and `NandemoGHS/Anime-Llasa-3B`. Llasa's training script
(zhenye234/LLaSA_training, `train_tts.py`) adds the 8 markers and then `<|s_0|>`...`<|s_65535|>` to
Llama-3.2's tokenizer with a plain `add_tokens` (so they are added tokens, not special ones):

    [0, 128256)          Llama-3 text tokens, its specials and reserved tokens
    128256 .. 128263     the 8 `MARKERS`, in that order
    [128264, 193800)     <|s_0|> ... <|s_65535|>: code k is id 128264 + k

Llasa's text-to-speech turn wraps the text in `<|TEXT_UNDERSTANDING_START|>`/`..._END|>` and the
speech in `<|SPEECH_GENERATION_START|>`/`..._END|>`; the two other pairs are reserved. The corpus
builder's Llasa TTS and `sts-extend-tokenizer` (which adopts such a block instead of adding a second
one) both find the layout here. Reads the tokenizer's vocabulary only: no model, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sts.vocab import SPEECH_TOKEN_FORMAT, VocabError

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
"""Llasa's 8 markers, in the order its training script adds them."""
SPEECH_START = "<|SPEECH_GENERATION_START|>"
SPEECH_END = "<|SPEECH_GENERATION_END|>"

_SPEECH_TOKEN = re.compile(r"<\|s_(\d+)\|>")


class LlasaLayoutError(VocabError):
    """A tokenizer that is not in Llasa's layout, or almost (a marker missing, a wrong or broken block)."""


@dataclass(frozen=True)
class LlasaLayout:
    """Where Llasa's markers and speech block sit in a tokenizer."""

    marker_ids: dict[str, int]
    """Each of the 8 `MARKERS` -> its id, in `MARKERS` order."""
    speech_token_offset: int
    """Id of `<|s_0|>`; code k is id `speech_token_offset + k` (checked for every k)."""
    num_speech_tokens: int
    """Size of the speech block: the codec's codebook size."""

    @property
    def text_vocab_size(self) -> int:
        """First id of the markers and the speech block: ids below it are the base's text tokens."""
        return min(*self.marker_ids.values(), self.speech_token_offset)

    @property
    def speech_start_id(self) -> int:
        return self.marker_ids[SPEECH_START]

    @property
    def speech_end_id(self) -> int:
        return self.marker_ids[SPEECH_END]


def has_llasa_tokens(tokenizer) -> bool:
    """True when any Llasa marker or `<|s_0|>` is in `tokenizer`: a Llasa, or something close to one."""
    vocab = tokenizer.get_vocab()
    return any(token in vocab for token in (*MARKERS, SPEECH_TOKEN_FORMAT.format(0)))


def find_llasa_layout(tokenizer, num_speech_tokens: int) -> LlasaLayout:
    """The markers and the speech block of a Llasa tokenizer, the whole block verified once.

    Requires all 8 `MARKERS` and exactly `<|s_0|>`...`<|s_{n-1}|>` (n = `num_speech_tokens`, the codec's
    codebook size) at contiguous ids. Raises `LlasaLayoutError` naming what is missing, the size found
    or the first token out of place.
    """
    vocab = tokenizer.get_vocab()  # token -> id, added tokens included
    missing = [m for m in MARKERS if m not in vocab]
    speech = {int(m.group(1)): i for token, i in vocab.items() if (m := _SPEECH_TOKEN.fullmatch(token))}
    if 0 not in speech:
        missing.append(SPEECH_TOKEN_FORMAT.format(0))
    if missing:
        raise LlasaLayoutError(f"not a Llasa tokenizer: missing {missing}")
    n = num_speech_tokens
    if sorted(speech) != list(range(n)):
        gaps = sorted(set(range(max(speech) + 1)) - set(speech))  # holes inside the block
        raise LlasaLayoutError(
            f"its speech block holds {len(speech):,} tokens <|s_0|>..<|s_{max(speech)}|>"
            + (f" ({len(gaps):,} missing, first <|s_{gaps[0]}|>)" if gaps else "")
            + f", but the codec has {n:,} codes (--num-speech-tokens): it needs exactly <|s_0|>..<|s_{n - 1}|>"
        )
    offset = speech[0]
    misplaced = next((k for k in range(n) if speech[k] != offset + k), None)
    if misplaced is not None:
        raise LlasaLayoutError(
            f"its speech block is not contiguous: <|s_{misplaced}|> is id {speech[misplaced]}, "
            f"expected {offset + misplaced} (<|s_0|> is id {offset})"
        )
    return LlasaLayout({m: vocab[m] for m in MARKERS}, offset, n)
