"""Round-trip intelligibility of the offline/demo codec, measured with offline Whisper (CPU, no hub).

    python benchmarks/offline_codec_roundtrip.py                          # 96 sentence pairs, K = 256 512 1024
    python benchmarks/offline_codec_roundtrip.py --pairs 24 --codebook-sizes 64 --json out.json   # quick

Sentences come from the bundled set (`sts/data/sentences.tsv`, shuffled with a fixed seed) and are
spoken by the offline TTS (Kokoro ja, Piper en: the `offline` extra). The codec is fitted on the
first 3/4 of the clips ("seen": the demo's situation, where the codec is fitted on the corpus it
encodes) and measured on those and on the held-out 1/4 ("unseen" sentences, same two voices).
Whisper base (ja, CER) and tiny.en (en, WER) transcribe the TTS audio itself (the ceiling) and its
codec round trip. Prints a table; `--json` writes the numbers.
"""

from __future__ import annotations

import csv
import json
import random
import time
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Annotated

import numpy as np
from annotated_types import Ge

from sts.cli import parse_cli


@dataclass
class Args:
    """The offline codec's round trip by codebook size (see the module docstring)."""

    pairs: Annotated[int, Ge(1)] = 96
    """Sentence pairs to synthesize (each gives one ja and one en clip)."""
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024])
    """Codebook sizes fitted and compared."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the sentence choice and the k-means."""
    json: str | None = None
    """Also write the table here."""


def load_pairs(n: int, seed: int) -> list[dict]:
    with files("sts.data").joinpath("sentences.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    random.Random(seed).shuffle(rows)
    return rows[:n]


def main(args: Args) -> dict:
    from corpus_builder.checks import AsrRoundTrip
    from corpus_builder.interfaces import CheckInput, TTSRequest
    from corpus_builder.pipeline import to_16k
    from corpus_builder.tts import load_tts
    from sts.codec.melkmeans import MelKMeansCodec

    pairs = load_pairs(args.pairs, args.seed)
    started = time.perf_counter()
    tts = load_tts("offline")
    clips = {}
    for lang in ("ja", "en"):
        results = tts.synthesize([TTSRequest(p[lang], lang) for p in pairs])
        clips[lang] = [to_16k(r.audio, r.sample_rate) for r in results]
    audio_seconds = sum(len(w) for ws in clips.values() for w in ws) / 16000
    print(
        f"# {len(pairs)} pairs, {audio_seconds:.0f} s of TTS audio in {time.perf_counter() - started:.0f} s"
    )
    asr = AsrRoundTrip(beam_size=1)
    split = len(pairs) * 3 // 4

    def error(waveforms, lang, part) -> float:
        rows = [CheckInput(None, w, p[lang], lang) for w, p in zip(waveforms[part], pairs[part], strict=True)]
        return float(np.mean(asr.score(rows)))

    parts = {"seen": slice(0, split), "unseen": slice(split, len(pairs))}
    table = {"tts (no codec)": {f"{lang} {name}": error(clips[lang], lang, part)
                                for lang in ("ja", "en") for name, part in parts.items()}}  # fmt: skip
    timings = {}
    for k in args.codebook_sizes:
        t0 = time.perf_counter()
        codec = MelKMeansCodec.fit(clips["ja"][:split] + clips["en"][:split], codebook_size=k, seed=args.seed)
        fit_s = time.perf_counter() - t0
        row = {}
        t0 = time.perf_counter()
        for lang in ("ja", "en"):
            round_trip = codec.decode(codec.encode(clips[lang]))
            for name, part in parts.items():
                row[f"{lang} {name}"] = error(round_trip, lang, part)
        timings[f"K={k}"] = {"fit_s": fit_s, "encode_decode_s": time.perf_counter() - t0}
        table[f"mel-kmeans K={k}"] = row
    print("| audio | ja CER seen | ja CER unseen | en WER seen | en WER unseen |")
    print("|---|---|---|---|---|")
    for name, row in table.items():
        cells = " | ".join(f"{row[c]:.3f}" for c in ("ja seen", "ja unseen", "en seen", "en unseen"))
        print(f"| {name} | {cells} |")
    for name, t in timings.items():
        print(f"# {name}: fit {t['fit_s']:.1f} s, encode+decode all clips {t['encode_decode_s']:.1f} s")
    result = {"pairs": len(pairs), "audio_seconds": audio_seconds, "errors": table, "timings": timings}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(parse_cli(Args, prog="benchmarks/offline_codec_roundtrip.py"))
