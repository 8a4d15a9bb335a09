"""Encode/decode throughput of `XCodec2Codec`, as multiples of real time, for batches of clips.

    python benchmarks/codec_throughput.py --tiny                          # CPU, tiny random codec
    python benchmarks/codec_throughput.py --random-init --device cuda     # full-size shapes, random weights
    python benchmarks/codec_throughput.py --model HKUSTAudio/xcodec2-hf --device cuda --dtype bfloat16

Clips are noise bursts of `--seconds` each (random weights make the content irrelevant to speed);
`--jitter` varies their lengths so that padded batching is exercised. Each row is the best of
`--repeats` timed runs after one warm-up; "x real time" is audio seconds per wall second.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Ge, Gt, Interval

from sts.cli import parse_cli
from sts.codec import XCodec2Codec
from sts.devices import BatchSize, resolve_device


def build_codec(args: Args, workdir: Path) -> XCodec2Codec:
    if args.tiny or args.random_init:
        from transformers import Xcodec2Config, Xcodec2Model

        from sts.testing.codec import save_tiny_xcodec2

        if args.tiny:
            model_dir = save_tiny_xcodec2(workdir / "tiny")
        else:
            model_dir = workdir / "random-init"
            Xcodec2Model(Xcodec2Config()).save_pretrained(model_dir)
    else:
        model_dir = args.model
    return XCodec2Codec(
        model_dir,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_pad_ratio=args.max_pad_ratio,
    )


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, lazy imports
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class Args:
    """XCodec2 encode/decode speed (see the module docstring)."""

    model: str = "HKUSTAudio/xcodec2-hf"
    """Hub id or local checkpoint folder (ignored with --tiny or --random-init)."""
    tiny: bool = False
    """The tiny random codec of sts.testing."""
    random_init: bool = False
    """The full-size config with random weights."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    dtype: str = "float32"
    """Codec dtype."""
    batch_size: BatchSize = 8
    """Clips per codec call."""
    max_pad_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.0
    """0: exact batches (the codec's default)."""
    clips: Annotated[int, Ge(1)] = 8
    """Clips per timed call."""
    seconds: Annotated[float, Gt(0)] = 10.0
    """Length of each clip."""
    jitter: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    """Clip lengths vary by up to this fraction."""
    repeats: Annotated[int, Ge(1)] = 3
    """Timed calls."""
    threads: Annotated[int, Ge(0)] = 0
    """Torch CPU threads (0: torch's default)."""
    json: Path | None = None
    """Also write the rows as JSON."""

    def __post_init__(self):
        self.device = resolve_device(self.device)


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/codec_throughput.py")
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    lengths = (args.seconds * 16000 * (1 - args.jitter * rng.random(args.clips))).astype(int)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    audio_seconds = sum(lengths) / 16000
    with tempfile.TemporaryDirectory() as workdir:
        codec = build_codec(args, Path(workdir))
        codes = codec.encode(waves)
        encode_s = best_time(lambda: codec.encode(waves), args.repeats)
        decode_s = best_time(lambda: codec.decode(codes), args.repeats)

    print(f"{codec!r} on {args.device}: {args.clips} clips, {audio_seconds:.1f} s of audio")
    print(f"{'stage':<8} {'batch':>5} {'wall s':>8} {'x real time':>12}")
    rows = []
    for stage, seconds in (("encode", encode_s), ("decode", decode_s)):
        print(f"{stage:<8} {args.batch_size:>5} {seconds:>8.3f} {audio_seconds / seconds:>12.1f}")
        rows.append(
            {"stage": stage, "batch": args.batch_size, "seconds": round(seconds, 4),
             "x_real_time": round(audio_seconds / seconds, 1)}
        )  # fmt: skip
    device = torch.cuda.get_device_name() if str(args.device).startswith("cuda") else "cpu"
    result = {"codec": repr(codec), "device": device, "clips": args.clips, "audio_seconds": audio_seconds,
              "max_pad_ratio": args.max_pad_ratio, "rows": rows}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
