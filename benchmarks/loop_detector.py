"""How often each loop rule cuts natural speech (false positives) and the loops it is meant to catch.

    python benchmarks/loop_detector.py                 # Kokoro (ja) + Piper (en), the offline extra; ~1 min on 2 cores
    python benchmarks/loop_detector.py --tiny          # speech-like codes instead of TTS: checks the logic only
    python benchmarks/loop_detector.py --json out.json

Natural speech: `--sentences` pairs from `sts/data/sentences.tsv` (seeded pick) spoken by the
offline TTS, resampled to 16 kHz and joined into paragraphs of 2 or 4 sentences with 0.5-1.0 s of
silence between them, encoded with (i) the demo codec (`MelKMeansCodec` fitted on those sentences,
256 codes) and (ii) the tiny random XCodec2 (`sts.testing.save_tiny_xcodec2`; random weights: a
codec's codes, not realistic ones). Loops: `sts.testing.loops.synthetic_loops` built on each
paragraph's first 3 s (a sentence spoken twice, the same with 10 % of the second copy varied, a
10-code unit repeated with 10 % / 20 % of its codes varied, a random walk over 3 codes, exact 5-
and 20-code loops).

The table: per rule of `SPEECH_GUARD` (each alone, `rule_loops`) and for the guard as used
(`detect_loop`, and the early-stopping tail check every 16 tokens), the outputs it cuts among the
natural paragraphs and among each kind of loop. A natural cut is a false positive. Below it, how close
natural speech came to each rule's threshold (`rule_scores`). Record the printed tables in
`benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Ge

from sts.cli import parse_cli
from sts.generation.loops import LOOP_KINDS, SPEECH_GUARD, detect_loop, rule_loops, rule_scores, tail_is_loop
from sts.testing.loops import speech_like_codes, synthetic_loops

SENTENCES = Path(__file__).resolve().parents[1] / "sts" / "data" / "sentences.tsv"


def spoken_sentences(count: int, seed: int) -> list[np.ndarray]:
    """`count` ja and `count` en sentences from the offline TTS, 16 kHz float32, ja/en alternating."""
    import soxr

    from corpus_builder.tts.offline import KokoroTTS, PiperTTS

    rows = [line.split("\t") for line in SENTENCES.read_text(encoding="utf-8").splitlines()[1:]]
    rng = np.random.default_rng(seed)
    voices = (KokoroTTS(), PiperTTS())
    waves = []
    for i in rng.choice(len(rows), count, replace=False):
        for tts, text in zip(voices, (rows[i][2], rows[i][3]), strict=True):
            audio = np.asarray(tts.speak(text), dtype=np.float32)
            waves.append(soxr.resample(audio, tts.sample_rate, 16000).astype(np.float32))
    return waves


def paragraphs(waves: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Per language, paragraph i = sentences i, i+1 (i even) or i..i+3 (i odd), 0.5-1.0 s pauses between."""
    rng = np.random.default_rng(seed)
    out = []
    for group in (waves[0::2], waves[1::2]):
        for i in range(len(group)):
            parts = []
            for j in range(2 if i % 2 == 0 else 4):
                if parts:
                    parts.append(np.zeros(int(16000 * rng.uniform(0.5, 1.0)), np.float32))
                parts.append(group[(i + j) % len(group)])
            out.append(np.concatenate(parts))
    return out


def encoded(args) -> dict[str, tuple[list[np.ndarray], int]]:
    """Codec name -> (natural code sequences, codebook size)."""
    if args.tiny:
        seqs = [speech_like_codes(float(s), seed=i, pauses=2) for i, s in enumerate(np.linspace(4, 9, 12))]
        return {"speech-like codes (--tiny)": (seqs, 1024)}
    import torch

    from sts.codec.melkmeans import MelKMeansCodec
    from sts.codec.xcodec2 import XCodec2Codec
    from sts.testing import save_tiny_xcodec2

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    waves = spoken_sentences(args.sentences, args.seed)
    clips = paragraphs(waves, args.seed)
    seconds = sum(len(c) for c in clips) / 16000
    shortest, longest = (f(len(c) for c in clips) / 16000 for f in (min, max))
    print(
        f"{len(waves)} sentences, {len(clips)} paragraphs, {seconds:.0f} s of speech "
        f"({shortest:.1f}-{longest:.1f} s each), synthesized in {time.perf_counter() - started:.0f} s"
    )
    mel = MelKMeansCodec.fit(waves, codebook_size=256, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        xcodec = XCodec2Codec(save_tiny_xcodec2(Path(tmp) / "xcodec2"))
        xcodes = xcodec.encode(clips)
    return {"mel k-means, 256 codes": (mel.encode(clips), 256), "tiny XCodec2, 1,024 codes": (xcodes, 1024)}


def measure(seqs: list[np.ndarray], codebook: int, seed: int) -> dict:
    """Counts per rule (and the guard as used) on natural sequences and on each loop kind."""
    columns: dict[str, list[np.ndarray]] = {"natural": [np.asarray(s) for s in seqs]}
    cuts_in_place: dict[str, int] = {}
    for i, seq in enumerate(seqs):
        for case in synthetic_loops(seq[:150], codebook_size=codebook, seed=seed + i):
            columns.setdefault(case.name, []).append(case.ids)
            loop = detect_loop(case.ids, SPEECH_GUARD)
            near = loop is not None and loop.kind == case.kind and abs(loop.cut - case.cut) <= 20
            cuts_in_place[case.name] = cuts_in_place.get(case.name, 0) + near
    table: dict[str, dict[str, int]] = {}
    for name, items in columns.items():
        fired = [{loop.kind for loop in rule_loops(ids, SPEECH_GUARD)} for ids in items]
        for kind in LOOP_KINDS:
            table.setdefault(kind, {})[name] = sum(kind in f for f in fired)
        table.setdefault("guard (detect_loop)", {})[name] = sum(
            detect_loop(ids, SPEECH_GUARD) is not None for ids in items
        )
        table.setdefault("tail check, every 16", {})[name] = sum(
            any(tail_is_loop(ids[:t], SPEECH_GUARD) for t in range(16, len(ids) + 1, 16)) for ids in items
        )
        table.setdefault("total", {})[name] = len(items)
    table["cut where the repeats begin (+-20)"] = {"natural": 0, **cuts_in_place}
    return table


def closest(seqs: list[np.ndarray]) -> dict[str, float]:
    """Over natural sequences, each rule's score nearest its threshold (`rule_scores`)."""
    scores = [rule_scores(s, SPEECH_GUARD) for s in seqs]
    out = {}
    for kind in LOOP_KINDS:
        values = [x[kind] for x in scores if x[kind] is not None]
        if values:
            out[kind] = round(min(values) if kind == "low_diversity" else max(values), 3)
    return out


def print_closest(near: dict[str, float]) -> None:
    g = SPEECH_GUARD
    fires = {
        "exact": ">= 1 (x the span needed)",
        "approximate": f">= {g.approx_match} recurring",
        "long_repeat": f">= {g.repeat_match} recurring",
        "low_diversity": f"<= {g.stuck_max_distinct} distinct",
    }
    print(
        "closest natural speech came: " + "; ".join(f"{k} {v} (fires at {fires[k]})" for k, v in near.items())
    )


def print_table(codec: str, table: dict[str, dict[str, int]]) -> None:
    names = list(table["total"])
    width = max(len(r) for r in table)
    print(f"\n{codec}")
    print(" | ".join([f"{'rule':<{width}}", *names]))
    for rule, counts in table.items():
        print(" | ".join([f"{rule:<{width}}", *(f"{counts.get(n, ''):>{len(n)}}" for n in names)]))


@dataclass
class Args:
    """The loop guard on natural speech and on synthetic loops (see the module docstring)."""

    tiny: bool = False
    """Speech-like codes instead of TTS + codecs."""
    sentences: Annotated[int, Ge(1)] = 12
    """Sentence pairs (x2 languages)."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the synthetic loops."""
    threads: Annotated[int, Ge(1)] = 1
    """Torch threads."""
    json: Path | None = None
    """Also write the table here."""


def main(argv: list[str] | None = None) -> None:
    args = parse_cli(Args, argv, prog="benchmarks/loop_detector.py")
    results = {}
    for codec, (seqs, codebook) in encoded(args).items():
        started = time.perf_counter()
        results[codec] = measure(seqs, codebook, args.seed)
        print_table(codec, results[codec])
        results[codec]["closest natural"] = closest(seqs)
        print_closest(results[codec]["closest natural"])
        print(f"({time.perf_counter() - started:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
