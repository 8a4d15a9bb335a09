"""`sts-infer`'s decoding defaults per task: sampling, loop guards and length budgets from the source.

The mechanisms (constraint, budgets, loop guard, repetition-aware sampling, backends) live in
`sts.generation`; this module holds only what inference decides with them:

    DEFAULT_SAMPLING["s2st"]                                        # RAS_SAMPLING: top-p 0.8, top-k 25, RAS
    max_new_tokens_for(LengthBudget(), "speech", source_seconds=4.0)  # 125 * 4 + 50 = 550 speech codes
    budget = LengthBudget(duration_ratio=read_decoding_info("runs/sft")["duration_ratio"])
    max_new_tokens_for(budget, "speech", source_seconds=4.0, direction="ja-en")   # p99 * 1.25 * 200 + 50

A budget caps an output relative to its input, so a looping sample stops long before a fixed
model-wide cap would stop it. Speech out of speech: the training corpus's measured target/source
duration ratio (its p99 for the direction, times `ratio_margin`, `sts_decoding.json` beside the
checkpoint) or, for a checkpoint without one, 2.5x the source frames; + 1 s either way. Text out of
speech: 25 tokens per second of source; speech out of text: 15 codes per character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sts.generation.allowed import Modality
from sts.generation.loops import SPEECH_GUARD, TEXT_GUARD, LoopGuard
from sts.generation.request import RAS_SAMPLING, Sampling
from sts.mt import PRESETS

DEFAULT_SAMPLING: dict[str, Sampling] = {
    # Speech out: repetition-aware sampling with CosyVoice 2's settings (top-p 0.8, top-k 25, window
    # 10, tau 0.1, temperature 1; VALL-E 2 introduced it), against the loops the first attempt fell into.
    "s2st": RAS_SAMPLING,
    "tts": RAS_SAMPLING,
    # LFM2-350M-ENJP-MT's card: temperature 0.5, min_p 0.1, repetition_penalty 1.05 (`sts.mt.PRESETS`).
    "s2tt": PRESETS["LiquidAI/LFM2-350M-ENJP-MT"].sampling,
    "t2tt": PRESETS["LiquidAI/LFM2-350M-ENJP-MT"].sampling,
    # Transcription has one right answer: greedy, as Whisper-style ASR evaluations do.
    "asr": Sampling(do_sample=False),
}

DEFAULT_GUARDS: dict[str, LoopGuard] = {"speech": SPEECH_GUARD, "text": TEXT_GUARD}
"""Loop guard by output modality (`sts.generation.loops`)."""


@dataclass(frozen=True)
class LengthBudget:
    """How long an output may get, relative to its source."""

    frames_per_source_second: float = 125.0
    """Speech output without a measured ratio: at most this many codes per second of source speech
    (2.5x at 50 codes/s)."""
    margin_tokens: int = 50
    """Added to every length bound (1 s of speech; a short text's tokens)."""
    chars_per_source_second: float = 25.0
    """Text output: at most this many tokens per second of source speech (a token is >= 1 char)."""
    frames_per_source_char: float = 15.0
    """Text -> speech: at most this many codes per source character (0.3 s per character at 50/s)."""
    tokens_per_source_char: float = 2.0
    """Text -> text: at most this many tokens per source character."""
    duration_ratio: dict[str, dict] | None = None
    """Measured target/source duration ratio per direction ("ja-en": {"p99": ...}), from the
    checkpoint's `sts_decoding.json` (`sts.decoding_info`); None: use `frames_per_source_second`."""
    ratio_percentile: str = "p99"
    """Which recorded percentile bounds a speech output (p99: 1 % of the training pairs are longer)."""
    ratio_margin: float = 1.25
    """Headroom on that percentile: a translation may run 25 % longer than the corpus's p99."""

    def speech_ratio(self, direction: str | None) -> float | None:
        """The measured ratio bound for `direction` ("ja-en"), margin included; None when not recorded."""
        measured = (self.duration_ratio or {}).get(direction or "", {}).get(self.ratio_percentile)
        return None if measured is None else float(measured) * self.ratio_margin


def max_new_tokens_for(
    budget: LengthBudget,
    output: Modality,
    *,
    source_seconds: float | None = None,
    source_chars: int | None = None,
    frame_rate: float = 50.0,
    direction: str | None = None,
) -> int:
    """The length budget of one output (its end id included), from its source's duration (speech in)
    or length in characters (text in). Speech out of speech uses the measured ratio of `direction`
    ("ja-en") when the budget has one. Raises ValueError when neither source size is given."""
    if source_seconds is not None:
        if output == "speech":
            ratio = budget.speech_ratio(direction)
            if ratio is not None:
                # (- 1e-9: 0.8 * 1.25 * 40 frames is 40, not the 40.000000000000004 floats make it)
                return math.ceil(ratio * source_seconds * frame_rate - 1e-9) + budget.margin_tokens
            return math.ceil(budget.frames_per_source_second * source_seconds) + budget.margin_tokens
        return math.ceil(budget.chars_per_source_second * source_seconds) + budget.margin_tokens
    if source_chars is None:
        raise ValueError("need source_seconds (speech input) or source_chars (text input)")
    if output == "speech":
        per_char = budget.frames_per_source_char * frame_rate / 50.0
    else:
        per_char = budget.tokens_per_source_char
    return math.ceil(per_char * source_chars) + budget.margin_tokens
