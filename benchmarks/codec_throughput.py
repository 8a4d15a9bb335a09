"""Encode/decode throughput of `XCodec2Codec`, as multiples of real time, for batches of clips.

    python benchmarks/codec_throughput.py --tiny                          # CPU, tiny random codec
    python benchmarks/codec_throughput.py --random-init --device cuda     # full-size shapes, random weights
    python benchmarks/codec_throughput.py --model HKUSTAudio/xcodec2-hf --device cuda --dtype bfloat16

Clips are noise bursts of `--seconds` each (random weights make the content irrelevant to speed);
`--jitter` varies their lengths so that padded batching is exercised. Each row is the best of
`--repeats` timed runs after one warm-up; "x real time" is audio seconds per wall second.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sts.codec import XCodec2Codec


def build_codec(args: argparse.Namespace, workdir: Path) -> XCodec2Codec:
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default="HKUSTAudio/xcodec2-hf", help="hub id or local checkpoint dir")
    which.add_argument("--tiny", action="store_true", help="tiny random codec (sts.testing)")
    which.add_argument("--random-init", action="store_true", help="full-size config, random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-pad-ratio", type=float, default=0.0, help="0: exact batches (the codec's default)"
    )
    parser.add_argument("--clips", type=int, default=8, help="clips per timed call")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--jitter", type=float, default=0.0, help="clip lengths vary by up to this fraction")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
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
