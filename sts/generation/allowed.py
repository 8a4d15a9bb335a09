"""Which ids an output may contain: the constraint every backend applies the same way.

A speech output may hold only the speech block and its end marker; a text output only the base
model's text ids (`< text_vocab_size`, its special tokens other than end-of-turn excluded). The set
goes to transformers as `AllowedTokensProcessor` (a logits mask) and to vLLM as
`allowed_token_ids`; `None` means unconstrained (text MT with a plain chat model):

    allowed = allowed_token_ids(vocab, tokenizer, "speech")               # [K] int64, sorted
    allowed = speech_block_ids(offset, 65536, end_id=speech_end_id)       # any layout (e.g. Llasa's)

Pure numpy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sts.vocab import SpeechVocab

Modality = Literal["speech", "text"]


def speech_block_ids(offset: int, count: int, *, end_id: int) -> np.ndarray:
    """The ids `offset .. offset + count - 1` of a speech block and `end_id`: `[count + 1]` int64, sorted."""
    ids = np.arange(offset, offset + count, dtype=np.int64)
    return np.sort(np.append(ids, np.int64(end_id)))


def allowed_token_ids(vocab: SpeechVocab, tokenizer, output: Modality) -> np.ndarray:
    """Ids an `output`-modality task of an sts checkpoint may generate: `[K]` int64, sorted.

    speech: the speech block and the speech end marker (`tokenizer` unused, may be None). text: the
    base model's ids below `text_vocab_size` except its special tokens, plus end-of-turn
    (`tokenizer.eos_token_id`). Raises ValueError for another `output`.
    """
    if output == "speech":
        return speech_block_ids(
            vocab.speech_token_offset, vocab.num_speech_tokens, end_id=vocab.speech_end_id
        )
    if output != "text":
        raise ValueError(f"output must be 'speech' or 'text', got {output!r}")
    # all_special_ids misses "extra" specials such as <|im_start|>: read the added tokens themselves.
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    special = {i for i in added | set(tokenizer.all_special_ids) if i < vocab.text_vocab_size}
    special -= {tokenizer.eos_token_id}
    keep = np.ones(vocab.text_vocab_size, dtype=bool)
    keep[sorted(special)] = False
    return np.flatnonzero(keep).astype(np.int64)
