"""Text, then speech: decoding an answer that writes texts before its speech (s2st text-first).

    allowed = chain_text_ids(vocab, tokenizer)            # text ids + the speech start marker, no end-of-turn
    rows = generate_chain(backend, prompts, text_request, speech_request)
    rows[0].text_ids, rows[0].speech_ids, rows[0].switched   # [T] int64, [S] int64 (end marker last), bool

The constraint switches with the row's state, in two phases that both backends run as plain
constrained requests (transformers: a logits mask; vLLM: `allowed_token_ids`, stop ids):

1. text phase: only the base model's text ids and the speech start marker, which ends the phase
   (no end-of-turn: the answer must go on to its speech). Text sampling applies (e.g. greedy).
2. speech phase, for the rows that wrote the speech start marker: the prompt plus everything the
   row wrote is the new prompt, and only speech ids and the speech end marker may follow. Speech
   sampling applies (e.g. repetition-aware sampling), with the speech budget of each row.

So no text id can enter the speech span and no speech id the text span, whatever the model
prefers; a row that never writes the marker (budget or loop guard in the text phase) has no speech.
The second phase re-reads the prompt (a prefill; vLLM's prefix cache makes it nearly free).
A streaming caller runs the same two phases one prompt at a time: `text_phase`, then the speech
phase on `speech_phase_prompt` through `sts.generation.row_stream.stream_row`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from sts.generation.allowed import allowed_token_ids
from sts.generation.request import GenerationRequest, split_end
from sts.vocab import SpeechVocab


def chain_text_ids(vocab: SpeechVocab, tokenizer) -> np.ndarray:
    """Ids the text phase may write: text ids (end-of-turn excluded) and the speech start marker, `[K]` int64."""
    text = allowed_token_ids(vocab, tokenizer, "text")
    text = text[text != tokenizer.eos_token_id]
    return np.sort(np.append(text, np.int64(vocab.speech_start_id)))


@dataclass
class ChainRow:
    """One row of a text-then-speech answer."""

    text_ids: np.ndarray
    """`[T]` int64 ids the text phase wrote, the speech start marker excluded."""
    speech_ids: np.ndarray
    """`[S]` int64 ids the speech phase wrote, its end marker last when it reached it; empty when the
    row never switched."""
    switched: bool
    """The text phase ended with the speech start marker (the speech phase ran)."""

    def ids(self, switch_id: int) -> np.ndarray:
        """The whole answer as the model wrote it: text, the speech start marker, speech. `[T + 1 + S]`."""
        if not self.switched:
            return self.text_ids
        return np.concatenate([self.text_ids, [switch_id], self.speech_ids]).astype(np.int64)


def generate_chain(
    backend,
    prompts: Sequence[np.ndarray],
    text: GenerationRequest,
    speech: GenerationRequest,
    *,
    guide: Callable[[GenerationRequest, list[np.ndarray]], GenerationRequest] | None = None,
) -> list[ChainRow]:
    """Both phases for every prompt. `text.end_ids` must be `[speech start marker]`; `speech` holds
    every row's speech budget (`max_new_tokens`, `[B]`), used for the rows that switch. `guide`, when
    given, turns the speech request of the switching rows into a guided one over their speech-phase
    prompts (classifier-free guidance, `sts.generation.guidance`).

    Raises ValueError when the phases' constraints overlap (a text id allowed in speech or the reverse).
    A request without `allowed` leaves the constraint to its own logits processors.
    """
    switch_id = check_chain_requests(text, speech, len(prompts))
    rows = text_phase(backend, prompts, text)
    going = [i for i, row in enumerate(rows) if row.switched]
    if going:
        second_prompts = [speech_phase_prompt(prompts[i], rows[i], switch_id) for i in going]
        second = replace(speech, max_new_tokens=[speech.max_new_tokens[i] for i in going])
        if guide is not None:
            second = guide(second, second_prompts)
        for i, ids in zip(going, backend.generate(second_prompts, second), strict=True):
            rows[i].speech_ids = np.asarray(ids, dtype=np.int64)
    return rows


def check_chain_requests(text: GenerationRequest, speech: GenerationRequest, rows: int) -> int:
    """The speech start marker that switches the phases, after checking that the two requests fit
    together for `rows` prompts (ValueError otherwise, see `generate_chain`)."""
    if len(text.end_ids) != 1:
        raise ValueError("the text phase ends on exactly one id: the speech start marker")
    if text.allowed is not None and speech.allowed is not None:  # else the caller's processors constrain
        overlap = np.intersect1d(text.allowed, speech.allowed)
        if len(overlap):
            raise ValueError(f"the text and speech phases share allowed ids {overlap[:5].tolist()}")
    if len(speech.max_new_tokens) != rows:
        raise ValueError(f"{rows} prompts but {len(speech.max_new_tokens)} speech budgets")
    return text.end_ids[0]


def text_phase(backend, prompts: Sequence[np.ndarray], text: GenerationRequest) -> list[ChainRow]:
    """Phase 1 for every prompt: the rows' texts and whether each wrote the speech start marker
    (their `speech_ids` still empty)."""
    rows = []
    for ids in backend.generate(list(prompts), text):
        body, switched = split_end(ids, text.end_ids)
        rows.append(ChainRow(body, np.zeros(0, np.int64), switched))
    return rows


def speech_phase_prompt(prompt: np.ndarray, row: ChainRow, switch_id: int) -> np.ndarray:
    """Phase 2's prompt for a row that switched: the prompt, its text, the speech start marker. `[L + T + 1]`."""
    return np.concatenate([np.asarray(prompt, dtype=np.int64), row.text_ids, [switch_id]]).astype(np.int64)
