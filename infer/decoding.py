"""`sts-infer`'s decoding defaults per task: sampling, loop guards and length budgets from the source.

The mechanisms (constraint, budgets, loop guard, backends) live in `sts.generation`; this module
holds only what inference decides with them:

    DEFAULT_SAMPLING["s2st"]                                        # Sampling(temperature=0.8, top_p=0.95)
    max_new_tokens_for(LengthBudget(), "speech", source_seconds=4.0)  # 125 * 4 + 50 = 550 speech codes

A budget caps an output relative to its input (speech out: 2.5x the source frames + 1 s; text out
of speech: 25 tokens per second of source; speech out of text: 15 codes per character), so a
looping sample stops long before a fixed model-wide cap would stop it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sts.generation.allowed import Modality
from sts.generation.loops import SPEECH_GUARD, TEXT_GUARD, LoopGuard
from sts.generation.request import Sampling

DEFAULT_SAMPLING: dict[str, Sampling] = {
    # Llasa's TTS settings (temperature 0.8) with top_p 0.95, which its card calls more stable.
    "s2st": Sampling(temperature=0.8, top_p=0.95),
    "tts": Sampling(temperature=0.8, top_p=0.95),
    # LFM2-350M-ENJP-MT's card: temperature 0.5, min_p 0.1, repetition_penalty 1.05.
    "s2tt": Sampling(temperature=0.5, min_p=0.1, repetition_penalty=1.05),
    "t2tt": Sampling(temperature=0.5, min_p=0.1, repetition_penalty=1.05),
    # Transcription has one right answer: greedy, as Whisper-style ASR evaluations do.
    "asr": Sampling(do_sample=False),
}

DEFAULT_GUARDS: dict[str, LoopGuard] = {"speech": SPEECH_GUARD, "text": TEXT_GUARD}
"""Loop guard by output modality (`sts.generation.loops`)."""


@dataclass(frozen=True)
class LengthBudget:
    """How long an output may get, relative to its source."""

    frames_per_source_second: float = 125.0
    """Speech output: at most this many codes per second of source speech (2.5x at 50 codes/s)."""
    margin_tokens: int = 50
    """Added to every length bound (1 s of speech; a short text's tokens)."""
    chars_per_source_second: float = 25.0
    """Text output: at most this many tokens per second of source speech (a token is >= 1 char)."""
    frames_per_source_char: float = 15.0
    """Text -> speech: at most this many codes per source character (0.3 s per character at 50/s)."""
    tokens_per_source_char: float = 2.0
    """Text -> text: at most this many tokens per source character."""


def max_new_tokens_for(
    budget: LengthBudget,
    output: Modality,
    *,
    source_seconds: float | None = None,
    source_chars: int | None = None,
    frame_rate: float = 50.0,
) -> int:
    """The length budget of one output (its end id included), from its source's duration (speech in)
    or length in characters (text in). Raises ValueError when neither is given."""
    if source_seconds is not None:
        rate = budget.frames_per_source_second if output == "speech" else budget.chars_per_source_second
        return math.ceil(rate * source_seconds) + budget.margin_tokens
    if source_chars is None:
        raise ValueError("need source_seconds (speech input) or source_chars (text input)")
    if output == "speech":
        per_char = budget.frames_per_source_char * frame_rate / 50.0
    else:
        per_char = budget.tokens_per_source_char
    return math.ceil(per_char * source_chars) + budget.margin_tokens
