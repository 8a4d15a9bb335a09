"""Checks on synthesized rows: ASR round trip (CER for ja, WER for en) and speaker similarity.

    from corpus_builder.checks import default_checks
    checks = default_checks()     # those whose packages import: faster-whisper, resemblyzer
    scores = checks[0].score([CheckInput(src_wav, tgt_wav, "Good morning.", "en")])

Thin `Check`s over the base: `AsrRoundTrip` transcribes the target with `sts.asr` (Whisper, beam 5
by default, silence -> "") in the target language and scores it against the text it was asked to
say with `sts.metrics.asr_error` (normalized: "300円" matches 三百円, "$50" matches "fifty
dollars"); `SpeakerSimilarity` is `sts.speaker` (resemblyzer cosine) of source and target. Each
drops rows past its threshold (`passes`). A row a check cannot score (no score, None: no source
audio, no text, or less voice than `sts.speaker.MIN_VOICED_SECONDS` on either side) passes as
"unscored": its column is null and the corpus card counts it. Models load on first use, so building
checks is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from corpus_builder.interfaces import Check, CheckInput
from sts.asr import FasterWhisperASR
from sts.metrics import asr_error
from sts.optional import load_optional
from sts.speaker import SpeakerEncoder


class AsrRoundTrip(Check):
    """ASR(target audio) vs target text: CER (ja) / WER (en) into `tgt_asr_error`; drop above `max_asr_error`.

    Args:
        max_asr_error: rows scoring above this are dropped (Kokoro/Piper score ~0.02-0.04 here).
        model: a Whisper name/dir for every language; None picks `default_whisper_model` per language.
        device, compute_type: faster-whisper's (e.g. "cuda", "float16").
        beam_size: Whisper beam (1 = greedy, faster; 5 by default for the checks).
        cpu_threads: CTranslate2 threads on CPU (0 = its default).
    """

    name = "asr_round_trip"
    column = "tgt_asr_error"

    def __init__(
        self,
        max_asr_error: float = 0.3,
        *,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 5,
        cpu_threads: int = 0,
    ):
        self.max_asr_error = max_asr_error
        self.asr = FasterWhisperASR(
            model, device=device, compute_type=compute_type, beam_size=beam_size, cpu_threads=cpu_threads
        )

    def transcribe(self, audio: np.ndarray, lang: str) -> str:
        """`[N]` float32 16 kHz -> text, decoded in `lang` ("" for silence)."""
        return self.asr.transcribe([audio], lang)[0]

    def score(self, rows: Sequence[CheckInput]) -> list[float | None]:
        return [score for score, _ in self.score_with_evidence(rows)]

    def score_with_evidence(self, rows: Sequence[CheckInput]) -> list[tuple[float | None, dict]]:
        """(error, {"asr_text": the transcript it was measured on}) per row; (None, {}) unscored."""
        results: list[tuple[float | None, dict]] = []
        for row in rows:
            if row.tgt_audio is None or len(row.tgt_audio) == 0 or not row.tgt_text.strip():
                results.append((None, {}))
                continue
            heard = self.transcribe(row.tgt_audio, row.tgt_lang)
            results.append((asr_error(row.tgt_text, heard, row.tgt_lang), {"asr_text": heard}))
        return results

    def passes(self, score: float) -> bool:
        return score <= self.max_asr_error


class SpeakerSimilarity(Check):
    """`sts.speaker` cosine (resemblyzer GE2E) of source and target into `speaker_similarity`.

    Args:
        min_speaker_similarity: rows scoring below this are dropped. Same speaker typically scores
            > 0.75 with resemblyzer; calibrate on your data (cross-lingual cloning scores lower).
            Rows with less voice than `sts.speaker.MIN_VOICED_SECONDS` on a side are not scored
            (below it, voices of different engines score above 0.6; above it they mostly do not,
            but two voices of one engine still pass 41 of 90 times at 1.5 s: benchmarks/RESULTS.md).
            Without faster-whisper (silero VAD) no row is scored.
        device: torch device of the encoder.
    """

    name = "speaker_similarity"
    column = "speaker_similarity"

    def __init__(self, min_speaker_similarity: float = 0.6, *, device: str = "cpu"):
        self.min_speaker_similarity = min_speaker_similarity
        self.encoder = SpeakerEncoder(device)

    def score(self, rows: Sequence[CheckInput]) -> list[float | None]:
        """The cosine per row; None (unscored) when a side is missing or has too little voice."""
        return [self.encoder.similarity(row.src_audio, row.tgt_audio) for row in rows]

    def passes(self, score: float) -> bool:
        return score >= self.min_speaker_similarity


def default_checks(
    max_asr_error: float = 0.3, min_speaker_similarity: float = 0.6, device: str = "cpu"
) -> list[Check]:
    """The checks whose packages load (faster-whisper, resemblyzer); a missing one is not run, with
    one warning (`sts.optional`; the corpus card lists the checks that ran)."""
    compute_type = "int8" if device == "cpu" else "float16"
    asr = load_optional("ASR round-trip check (faster-whisper)",
                        lambda: AsrRoundTrip(max_asr_error, device=device, compute_type=compute_type),
                        install="faster-whisper (the offline extra)")  # fmt: skip
    speaker = load_optional("speaker similarity check (resemblyzer)",
                            lambda: SpeakerSimilarity(min_speaker_similarity, device=device),
                            install="resemblyzer (the offline extra)")  # fmt: skip
    return [check for check in (asr, speaker) if check is not None]
