"""What DNSMOS P.835 (`sts.dnsmos`, speechmos' ONNX models) costs per second of audio, on this CPU.

    python benchmarks/dnsmos_cost.py                  # clips of 2, 4, 9.5, 15 and 30 s, 1 ONNX thread
    python benchmarks/dnsmos_cost.py --threads 2 --json out.json
    python benchmarks/dnsmos_cost.py --tiny           # logic check: one 9.5 s clip, one repeat

DNSMOS rates 9.01 s windows hopped by 1 s; a clip shorter than a window is repeated until it fills
one (the package doubles it), so a clip of T >= 9.01 s is floor(T - 9.01) + 1 windows and a short
clip costs as much as the tiled length. Per clip length: the windows, the median wall seconds of
`Dnsmos.score` over `--repeats` runs after a warm-up, seconds per second of audio and per window.
Synthetic speech (`sts.testing.synthetic_utterance`): the cost does not depend on what is said.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from annotated_types import Ge

from sts.cli import parse_cli


def windows(seconds: float, window: float = 9.01) -> int:
    """DNSMOS windows of a clip, after speechmos' tiling of short clips (it doubles until >= a window)."""
    tiled = seconds
    while tiled < window:
        tiled *= 2
    return int(math.floor(tiled) - window) + 1


@dataclass
class Args:
    """What DNSMOS P.835 costs per second of audio (see the module docstring)."""

    seconds: list[float] = field(default_factory=lambda: [2.0, 4.0, 9.5, 15.0, 30.0])
    """Clip lengths timed."""
    threads: Annotated[int, Ge(1)] = 1
    """ONNX Runtime intra-op threads."""
    repeats: Annotated[int, Ge(1)] = 3
    """Timed runs per clip after a warm-up."""
    tiny: bool = False
    """One 9.5 s clip, one repeat (logic check)."""
    json: Path | None = None
    """Also write the rows here."""


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/dnsmos_cost.py")
    if args.tiny:
        args.seconds, args.repeats = [9.5], 1

    from sts.dnsmos import Dnsmos
    from sts.testing import synthetic_utterance

    scorer = Dnsmos(threads=args.threads)
    scorer.score(synthetic_utterance(9.5, 140.0, seed=0))  # warm-up: ONNX sessions, librosa's mel filters
    rows = []
    for seconds in args.seconds:
        wav = synthetic_utterance(seconds, 140.0, seed=1)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            score = scorer.score(wav)
            times.append(time.perf_counter() - start)
        wall = statistics.median(times)
        n = windows(seconds)
        rows.append(
            {
                "seconds": seconds,
                "windows": n,
                "wall_s": round(wall, 3),
                "s_per_audio_s": round(wall / seconds, 3),
                "s_per_window": round(wall / n, 3),
                "ovrl": round(score.ovrl, 3),
            }
        )
        print(
            f"{seconds:5.1f} s clip: {n:2d} windows, {wall:.3f} s -> {wall / seconds:.3f} s per second of audio, "
            f"{wall / n:.3f} s per window"
        )
    result = {"threads": args.threads, "repeats": args.repeats, "model": scorer.name, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
