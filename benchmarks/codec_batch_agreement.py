"""How much batching moves XCodec2 codes: batched encoding against one clip at a time, per `max_pad_ratio`.

    python benchmarks/codec_batch_agreement.py --tiny                          # tiny random codec, CPU
    python benchmarks/codec_batch_agreement.py --model HKUSTAudio/xcodec2-hf --device cuda

For each length range, `--clips` clips (a buzzing tone switched on and off, plus noise) per seed are
encoded by `XCodec2Codec.encode` in batches of `--batch-size` and each on its own, for every
`--ratios` value of `max_pad_ratio`. Printed per ratio and range: the share of codes equal to the
one-by-one codes, the share outside each clip's last `--tail` frames, and the mismatch rate by
position from the end (last frame first). `max_pad_ratio=0` (the default) must give 100 %.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge

from sts.cli import parse_cli
from sts.devices import BatchSize, resolve_device


def speechlike(num_samples: int, seed: int) -> np.ndarray:
    """A buzzing tone gated on and off, plus noise: enough structure for varied codes. `[N]` float32."""
    rng = np.random.default_rng([seed, num_samples])
    t = np.arange(num_samples) / 16000
    gate = np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6)) > 0
    wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 250) * t) + 0.05 * rng.standard_normal(num_samples)
    return (wave * gate).astype(np.float32)


def agreement(codec, waves: list[np.ndarray], tail: int, positions: int = 16) -> dict:
    """Batched vs one-by-one codes of `waves` with `codec`'s batching settings."""
    batched = codec.encode(waves)
    same = total = tail_same = tail_total = 0
    by_end = np.zeros(positions)
    for wave, codes in zip(waves, batched, strict=True):
        alone = codec.encode([wave])[0]
        equal = codes == alone
        same, total = same + int(equal.sum()), total + len(equal)
        tail_same, tail_total = tail_same + int(equal[:-tail].sum()), tail_total + max(0, len(equal) - tail)
        by_end += ~equal[::-1][:positions]
    return {
        "clips": len(waves),
        "codes": total,
        "equal": same / total,
        f"equal_outside_last_{tail}": tail_same / max(tail_total, 1),
        "mismatch_by_position_from_end": (by_end / len(waves)).round(3).tolist(),
    }


@dataclass
class Args:
    """How much batching moves XCodec2 codes (see the module docstring)."""

    model: str = "HKUSTAudio/xcodec2-hf"
    """Hub id or local checkpoint folder (ignored with --tiny)."""
    tiny: bool = False
    """The tiny random codec of sts.testing."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    batch_size: BatchSize = 4
    """Clips per batched encode."""
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.1, 1.0])
    """max_pad_ratio values to compare."""
    ranges: list[str] = field(default_factory=lambda: ["1-4:3", "5-10:1"])
    """Clip length ranges as SECONDS-SECONDS:SEEDS."""
    clips: Annotated[int, Ge(1)] = 16
    """Clips per range and seed."""
    tail: Annotated[int, Ge(0)] = 13
    """Frames at the end of a clip reported apart."""
    json: Path | None = None
    """Also write the rows here."""

    def __post_init__(self):
        self.device = resolve_device(self.device)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_cli(Args, argv, prog="benchmarks/codec_batch_agreement.py")
    torch.set_num_threads(1)
    from sts.codec import XCodec2Codec

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        model = args.model
        if args.tiny:
            from sts.testing.codec import save_tiny_xcodec2

            model = save_tiny_xcodec2(Path(workdir) / "tiny")
        for spec in args.ranges:
            span, seeds = spec.split(":")
            low, high = (float(x) for x in span.split("-"))
            waves = []
            for seed in range(int(seeds)):
                lengths = np.random.default_rng(seed).uniform(low, high, args.clips) * 16000
                waves += [speechlike(int(n), seed) for n in lengths]
            for ratio in args.ratios:
                codec = XCodec2Codec(
                    model, device=args.device, batch_size=args.batch_size, max_pad_ratio=ratio
                )
                row = {"range_s": span, "max_pad_ratio": ratio, **agreement(codec, waves, args.tail)}
                rows.append(row)
                print(
                    f"{span:>6} s  max_pad_ratio {ratio:<4}  equal {100 * row['equal']:7.3f} %  outside last "
                    f"{args.tail}: {100 * row[f'equal_outside_last_{args.tail}']:7.3f} %  mismatch from the end "
                    f"{[round(100 * x) for x in row['mismatch_by_position_from_end']]} %",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
