"""Deterministic stand-ins for tests and smoke runs: a tone TTS, a TTS that never stops, a toy check.

They live in the package (not in a test file) so that a subprocess build or a Ray worker can load
them by spec: `sts-build-corpus --tts python:corpus_builder.testing:ToneTTS`.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from corpus_builder.interfaces import Check, CheckInput, TTSBackend, TTSRequest, TTSResult


def tone_seconds(text: str) -> float:
    """How long `ToneTTS` speaks `text`: 0.1 s per character plus 0.5 s."""
    return 0.5 + 0.1 * len(text)


class ToneTTS(TTSBackend):
    """A sine tone whose length depends on the text (`tone_seconds`) and pitch on the language."""

    languages = ("ja", "en")

    def __init__(self, sample_rate: int = 24000, delay: float = 0.0, never_stops: str = ""):
        """`delay`: seconds to sleep per request (to slow a build down); texts containing
        `never_stops` (when non-empty) come back as a dropped "tts_no_end_marker" row."""
        self.name = f"tone:{sample_rate}"
        self.sample_rate = sample_rate
        self.delay = delay
        self.never_stops = never_stops

    def synthesize(self, requests: Sequence[TTSRequest]) -> list[TTSResult]:
        results = []
        for request in requests:
            time.sleep(self.delay)
            if self.never_stops and self.never_stops in request.text:
                results.append(TTSResult(None, self.sample_rate, "tts_no_end_marker"))
                continue
            n = int(round(tone_seconds(request.text) * self.sample_rate))
            pitch = 220.0 if request.lang == "ja" else 330.0
            t = np.arange(n, dtype=np.float32) / self.sample_rate
            results.append(
                TTSResult((0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), self.sample_rate)
            )
        return results


class LengthCheck(Check):
    """Scores a row by its target's seconds per character; rows above `max_seconds_per_char` fail."""

    name = "length"
    column = "tgt_asr_error"

    def __init__(self, max_seconds_per_char: float = 1.0):
        self.max_seconds_per_char = max_seconds_per_char

    def score(self, rows: Sequence[CheckInput]) -> list[float]:
        return [len(r.tgt_audio) / 16000 / max(1, len(r.tgt_text)) for r in rows]

    def passes(self, score: float) -> bool:
        return bool(np.isnan(score) or score <= self.max_seconds_per_char)


def tone_bytes(seconds: float, sample_rate: int = 24000, fmt: str = "MP3") -> bytes:
    """A 440 Hz tone encoded as an audio file (MP3 by default, as Emilia stores clips)."""

    import soundfile as sf

    t = np.arange(int(seconds * sample_rate), dtype=np.float32) / sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate, format=fmt)
    return buffer.getvalue()


def write_emilia_tar(path, examples: Sequence[dict]) -> None:
    """A WebDataset tar in Emilia's layout: `{id}.mp3` + `{id}.json` per example.

    Each example is Emilia's json (`id, text, language, speaker, duration, dnsmos`) plus "mp3": bytes.
    """

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for example in examples:
            meta = {k: v for k, v in example.items() if k != "mp3"}
            for suffix, data in (
                ("mp3", example["mp3"]),
                ("json", json.dumps(meta, ensure_ascii=False).encode()),
            ):
                info = tarfile.TarInfo(f"{example['id']}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
