"""Constrained decoding and the repetition-loop guard.

A speech-output task may emit only speech ids and the speech end marker; a text-output task only the
base model's text ids (`< text_vocab_size`, its special tokens other than end-of-turn excluded).
The same allowed set is given to transformers as a `LogitsProcessor` (a mask) and to vLLM as
`allowed_token_ids`:

    allowed = allowed_token_ids(vocab, tokenizer, "speech")          # [K] int64, sorted
    processor = AllowedTokensProcessor(allowed, end_ids=[vocab.speech_end_id], prompt_len=L, min_new_tokens=1)

The loop guard is what the first attempt lacked: its audio fell into repetition loops. Two bounds:
`max_new_tokens_for` caps the output relative to the input (speech: 2.5x the source frames + 1 s;
text: 25 characters per second of source speech), and `find_loop` finds the first n-gram repeated
`min_repeats` times in a row (spanning at least `min_span` tokens); the output is cut after the
loop's first copy and the result carries a warning. `LoopStoppingCriteria` stops a generation as
soon as its tail is a loop, so a looping sample does not burn the whole length budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import LogitsProcessor, StoppingCriteria

from sts.vocab import SpeechVocab

Modality = Literal["speech", "text"]


@dataclass(frozen=True)
class LoopGuard:
    """When a run of repeated n-grams counts as a loop, and how long an output may get."""

    max_ngram: int
    """Longest repeating unit looked for, in tokens."""
    min_repeats: int
    """A unit must repeat at least this many times in a row."""
    min_span: int
    """...and the repeated run must cover at least this many tokens (a 1-token unit needs this many)."""
    frames_per_source_second: float = 125.0
    """Speech output: at most this many codes per second of source speech (2.5x at 50 codes/s)."""
    margin_tokens: int = 50
    """Added to every length bound (1 s of speech; a short text's tokens)."""
    chars_per_source_second: float = 25.0
    """Text output: at most this many tokens per second of source speech (a token is >= 1 char)."""
    frames_per_source_char: float = 15.0
    """Text -> speech: at most this many codes per source character (0.3 s per character)."""

    def repeats_needed(self, n: int) -> int:
        return max(self.min_repeats, math.ceil(self.min_span / n))


SPEECH_GUARD = LoopGuard(max_ngram=25, min_repeats=4, min_span=100)
"""Speech codes: a pattern of up to 0.5 s repeated 4 times and covering >= 2 s."""
TEXT_GUARD = LoopGuard(max_ngram=10, min_repeats=4, min_span=12)
"""Text tokens: a phrase of up to 10 tokens repeated 4 times, >= 12 tokens in all."""


def default_guard(output: Modality) -> LoopGuard:
    return SPEECH_GUARD if output == "speech" else TEXT_GUARD


def max_new_tokens_for(
    guard: LoopGuard,
    output: Modality,
    *,
    source_seconds: float | None = None,
    source_chars: int | None = None,
    frame_rate: float = 50.0,
) -> int:
    """The length budget of one output, from its source's duration (speech in) or length (text in)."""
    if source_seconds is not None:
        rate = guard.frames_per_source_second if output == "speech" else guard.chars_per_source_second
        return math.ceil(rate * source_seconds) + guard.margin_tokens
    if source_chars is None:
        raise ValueError("need source_seconds (speech input) or source_chars (text input)")
    per_char = guard.frames_per_source_char * frame_rate / 50.0 if output == "speech" else 2.0
    return math.ceil(per_char * source_chars) + guard.margin_tokens


def allowed_token_ids(vocab: SpeechVocab, tokenizer, output: Modality) -> np.ndarray:
    """Ids a `output`-modality task may generate: `[K]` int64, sorted.

    speech: the speech block and the speech end marker (`tokenizer` unused, may be None). text: the
    base model's ids below `text_vocab_size` except its special tokens, plus end-of-turn (`eos_token_id`).
    """
    if output == "speech":
        ids = np.arange(vocab.speech_token_offset, vocab.speech_token_stop, dtype=np.int64)
        return np.sort(np.append(ids, vocab.speech_end_id))
    if output != "text":
        raise ValueError(f"output must be 'speech' or 'text', got {output!r}")
    # all_special_ids misses "extra" specials such as <|im_start|>: read the added tokens themselves.
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    special = {i for i in added | set(tokenizer.all_special_ids) if i < vocab.text_vocab_size}
    special -= {tokenizer.eos_token_id}
    keep = np.ones(vocab.text_vocab_size, dtype=bool)
    keep[sorted(special)] = False
    return np.flatnonzero(keep).astype(np.int64)


class AllowedTokensProcessor(LogitsProcessor):
    """Sets every score outside `allowed` to -inf; the end ids also for the first `min_new_tokens` steps.

    `prompt_len` is the (left-padded) prompt width, so `input_ids.shape[1] - prompt_len` tokens have
    been generated when the processor runs.
    """

    def __init__(self, allowed: np.ndarray, *, end_ids: list[int], prompt_len: int, min_new_tokens: int = 0):
        self.allowed = torch.as_tensor(np.asarray(allowed), dtype=torch.long)
        self.end_ids = torch.as_tensor(end_ids, dtype=torch.long)
        self.prompt_len = prompt_len
        self.min_new_tokens = min_new_tokens
        self._mask: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self._mask
        if (
            mask is None
            or mask.shape[0] != scores.shape[-1]
            or (mask.device, mask.dtype)
            != (
                scores.device,
                scores.dtype,
            )
        ):
            # Built once per device and dtype: no host-to-device copy inside the decoding loop.
            mask = torch.full((scores.shape[-1],), float("-inf"), device=scores.device, dtype=scores.dtype)
            mask[self.allowed[self.allowed < scores.shape[-1]].to(scores.device)] = 0.0
            self._mask, self.end_ids = mask, self.end_ids.to(scores.device)
        scores = scores + mask
        if input_ids.shape[1] - self.prompt_len < self.min_new_tokens:
            scores[:, self.end_ids] = float("-inf")
        return scores


def find_loop(ids: np.ndarray, guard: LoopGuard) -> tuple[int, int] | None:
    """The first loop in `ids` (`[T]` int): (start, unit length n), or None.

    A loop is `guard.repeats_needed(n)` back-to-back copies of one n-gram; among loops, the one that
    starts first (then the shortest unit) is returned. Cut there with `ids[: start + n]`.
    """
    ids = np.asarray(ids).ravel()
    best: tuple[int, int] | None = None
    for n in range(1, guard.max_ngram + 1):
        need = guard.repeats_needed(n)
        if len(ids) < n * need:
            continue
        # same[i]: ids[i] == ids[i + n]; a run of n*(need-1) Trues from i means `need` copies from i.
        same = (ids[n:] == ids[:-n]).astype(np.int8)
        run = n * (need - 1)
        window = np.convolve(same, np.ones(run, dtype=np.int64), mode="valid") if len(same) >= run else []
        hits = np.flatnonzero(np.asarray(window) == run)
        if len(hits) and (best is None or hits[0] < best[0]):
            best = (int(hits[0]), n)
    return best


def tail_is_loop(ids: np.ndarray, guard: LoopGuard) -> bool:
    """Whether the last tokens of `ids` (`[T]` int) already form a loop (cheaper than `find_loop`)."""
    ids = np.asarray(ids).ravel()
    for n in range(1, guard.max_ngram + 1):
        span = n * guard.repeats_needed(n)
        if len(ids) >= span and np.array_equal(ids[-span + n :], ids[-span:-n]):
            return True
    return False


class LoopStoppingCriteria(StoppingCriteria):
    """Stops each row whose generated tail is a loop; checked every `check_every` steps.

    Reading the ids back to the CPU syncs the GPU, hence the stride.
    """

    def __init__(self, guard: LoopGuard, *, prompt_len: int, check_every: int = 16):
        self.guard = guard
        self.prompt_len = prompt_len
        self.check_every = check_every
        self._done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        steps = input_ids.shape[1] - self.prompt_len
        if self._done is None or self._done.shape[0] != input_ids.shape[0]:
            self._done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if steps > 0 and steps % self.check_every == 0:
            generated = input_ids[:, self.prompt_len :].cpu().numpy()
            looping = [tail_is_loop(ids, self.guard) for ids in generated]
            self._done = self._done | torch.tensor(looping, device=input_ids.device)
        return self._done
