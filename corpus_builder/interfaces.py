"""The seams of the corpus builder: what a TTS backend and a check look like (MT: `sts.mt`).

The pipeline (`corpus_builder.pipeline`) only talks to these; each backend lives in its own
module and imports its heavy packages inside its constructor. A backend never raises for one bad
row: it returns a result with a `drop_reason`, and the pipeline counts drops by reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class TTSRequest:
    text: str
    """What to say."""
    lang: str
    """Language of `text` ("ja" | "en")."""
    prompt_audio: np.ndarray | None = None
    """`[N]` float32 16 kHz clip whose voice to keep (voice-preserving mode), or None."""
    prompt_text: str | None = None
    """Transcript of `prompt_audio`."""


@dataclass
class TTSResult:
    audio: np.ndarray | None
    """`[N]` float32 waveform at `sample_rate`; None when dropped."""
    sample_rate: int
    drop_reason: str | None = None
    """Why there is no audio, e.g. "tts_no_end_marker", "tts_empty", "tts_error"."""


class TTSBackend(ABC):
    """Synthesizes batches of sentences."""

    name: str
    """Recorded in the `tts_backend` column and the corpus card, e.g. "llasa:HKUSTAudio/Llasa-1B"."""
    languages: tuple[str, ...]
    """Languages this backend can speak."""

    @abstractmethod
    def synthesize(self, requests: Sequence[TTSRequest]) -> list[TTSResult]:
        """One result per request, in order."""


@dataclass
class CheckInput:
    src_audio: np.ndarray | None
    """`[N]` float32 16 kHz source clip (None for text-only sources)."""
    tgt_audio: np.ndarray
    """`[N]` float32 16 kHz synthesized target."""
    tgt_text: str
    tgt_lang: str


class Check(ABC):
    """Scores synthesized rows; the pipeline stores the score in `column` and drops rows past `threshold`."""

    name: str
    column: str
    """Shard column the score goes into ("tgt_asr_error" or "speaker_similarity")."""

    @abstractmethod
    def score(self, rows: Sequence[CheckInput]) -> list[float | None]:
        """One score per row; None where it cannot be scored (no source audio, too little voice)."""

    @abstractmethod
    def passes(self, score: float) -> bool:
        """Whether a row with this score is kept. Never asked of an unscored row: the pipeline keeps
        those as "unscored" (stored null, counted in the corpus card), since unchecked is not bad."""

    def score_with_evidence(self, rows: Sequence[CheckInput]) -> list[tuple[float | None, dict]]:
        """`score` with what each score rests on, e.g. `{"asr_text": "what Whisper heard"}`; a dropped
        row's evidence goes into the corpus's drop log. Default: no evidence beyond the score."""
        return [(score, {}) for score in self.score(rows)]
