"""Speech synthesized per GPU-hour by the corpus builder's TTS stage, on a Llasa-1B-shaped model.

    python benchmarks/tts_throughput.py                       # one GPU: naive vs fast paths, Llasa-1B shape
    python benchmarks/tts_throughput.py --batch-sizes 1 128 256 --new-tokens 500 --json out.json
    python benchmarks/tts_throughput.py --tiny --device cpu   # CPU logic check on a tiny model (numbers meaningless)

RANDOM WEIGHTS: the model is a `LlamaForCausalLM` with Llasa-1B's shape (Llama-3.2-1B: hidden 2048,
16 layers, 32 heads / 8 KV heads, intermediate 8192, tied embeddings; vocab 128,256 + 8 markers +
65,536 speech tokens) initialised at random, so the audio is noise; only the speed is real. Every
row is forced to generate exactly `--new-tokens` tokens (no end marker), through the backend of
`corpus_builder.tts.llasa.LlasaTTS` (`sts.generation.TransformersBackend`: the speech-only logits
mask, per-row budgets) and its sampling (temperature 0.8, top_p 1); the loop guard is off (random
weights loop anywhere). The codec stage decodes the same number of codes with a
random full-size XCodec2 (`Xcodec2Config()` defaults), batched as `XCodec2Codec.decode` does.

Paths, per batch size:
  eager     `generate()` with the dynamic KV cache (what a plain loop over utterances does at batch 1)
  static    `cache_implementation="static"`, compile disabled (the backend's fast path, `compile=False`)
  compiled  static cache + `compile_config=CompileConfig(mode="reduce-overhead")`: torch.compile with
            CUDA graphs (transformers compiles only on cuda/xpu; on CPU this row equals `static`)
The static paths round the prompt width up to a multiple of 64 and the new tokens to 256 (so that
batches share compiled shapes); rows still stop at `--new-tokens`.

50 speech tokens = 1 s of audio, so "x real time" = tokens/s / 50 and, on one GPU, hours of speech
per GPU-hour = x real time. The TTS stage's figure combines LM and codec time.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated, ClassVar

from annotated_types import Ge

from sts.config import WhenOff

TOKENS_PER_SECOND = 50.0
LLAMA_TEXT_VOCAB = 128256
NUM_MARKERS = 8


@dataclass
class Args:
    """Llasa-shaped TTS generation and XCodec2 decoding speed (see the module docstring)."""

    tiny: bool = False
    """Tiny random model and tiny XCodec2 (CPU logic check)."""
    device: str = "cuda"
    """Where it runs (a machine without cuda falls back to cpu)."""
    dtype: str = "bfloat16"
    """LM dtype (the codec runs in float32, as `XCodec2Codec` does by default)."""
    batch_sizes: tuple[int, ...] = (1, 64, 256)
    """Rows per `generate()` call; every path runs at each."""
    modes: tuple[str, ...] = ("eager", "static", "compiled")
    """Generation paths timed."""
    new_tokens: Annotated[int, Ge(1)] = 500
    """Speech tokens generated per row (500 = 10 s of audio)."""
    prompt_tokens: Annotated[int, Ge(1)] = 48
    """Text prompt length per row (a Llasa prompt for one sentence is ~30-60 tokens)."""
    repeats: Annotated[int, Ge(1)] = 1
    """Timed runs per setting after one warm-up run (best is reported)."""
    time_codec: Annotated[bool, WhenOff("time the LM alone (no XCodec2 decoding)")] = True
    """Also time XCodec2 decoding of the generated codes."""
    codec_batch_size: Annotated[int, Ge(1)] = 8
    """Clips per XCodec2 decode call."""
    json: str | None = None
    """Write the results here as JSON too."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the random weights and prompts."""
    notes: list[str] = field(default_factory=list)
    """Free-text notes stored with the results."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"codec": "time_codec"}
    """`--codec/--no-codec` was the flag of `time_codec`."""


def build_lm(args: Args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.tiny:
        num_speech, text_vocab = 1024, 512
        shape = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    else:
        num_speech, text_vocab = 65536, LLAMA_TEXT_VOCAB
        shape = dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
        )
    config = LlamaConfig(
        vocab_size=text_vocab + NUM_MARKERS + num_speech,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=None,
        pad_token_id=0,
        **shape,
    )
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()
    model.generation_config.eos_token_id = None
    speech_offset = text_vocab + NUM_MARKERS
    end_id = text_vocab + 5  # <|SPEECH_GENERATION_END|>, 6th marker
    allowed = [*range(speech_offset, speech_offset + num_speech), end_id]
    return model, allowed, speech_offset, num_speech


def time_generate(model, allowed, args: Args, batch: int, mode: str) -> dict:
    import numpy as np
    import torch

    from sts.generation import GenerationRequest, Sampling, TransformersBackend

    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    prompts = list(torch.randint(10, 500, (batch, args.prompt_tokens), generator=gen).numpy())
    # LlasaTTS's request (speech block + end marker, temperature 0.8, top_p 1) with every row held to
    # exactly `new_tokens` (the end marker is masked until then; random weights would loop: no guard).
    request = GenerationRequest(
        np.asarray(allowed),
        [allowed[-1]],
        [args.new_tokens] * batch,
        sampling=Sampling(temperature=0.8, top_p=1.0),
        min_new_tokens=args.new_tokens,
        seed=args.seed,
    )
    backend = TransformersBackend(
        model, pad_token_id=0, fast=mode in ("static", "compiled"), compile=mode == "compiled"
    )

    def run():
        _sync(args.device)
        start = time.perf_counter()
        out = backend.generate(prompts, request)
        _sync(args.device)
        return time.perf_counter() - start, out

    warmup, out = run()
    assert [len(o) for o in out] == [args.new_tokens] * batch, [len(o) for o in out]
    new = np.stack(out)
    in_block = (new >= allowed[0]) & (new <= allowed[-2])
    assert bool((in_block | (new == allowed[-1])).all()), "a non-speech token was generated"
    best = min(run()[0] for _ in range(args.repeats))
    tokens = batch * args.new_tokens
    return dict(
        mode=mode,
        batch=batch,
        seconds=best,
        warmup_seconds=warmup,
        tokens_per_s=tokens / best,
        x_real_time=tokens / best / TOKENS_PER_SECOND,
    )


def time_codec(args: Args, num_speech: int, batch: int) -> dict:
    import torch
    from transformers import Xcodec2Config, Xcodec2Model

    if args.tiny:
        from sts.testing.codec import tiny_xcodec2_config

        config = tiny_xcodec2_config()
    else:
        config = Xcodec2Config()
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        codec = Xcodec2Model(config).eval()
    codes = torch.randint(
        0, min(num_speech, int(torch.tensor(config.quantization_levels).prod())), (batch, 1, args.new_tokens)
    )
    codes = codes.to(args.device)
    with torch.inference_mode():
        codec.decode(audio_codes=codes[: args.codec_batch_size])  # warm-up
        _sync(args.device)
        start = time.perf_counter()
        for i in range(0, batch, args.codec_batch_size):
            codec.decode(audio_codes=codes[i : i + args.codec_batch_size])
        _sync(args.device)
    seconds = time.perf_counter() - start
    audio_seconds = batch * args.new_tokens / TOKENS_PER_SECOND
    return dict(
        codec_batch=args.codec_batch_size, clips=batch, seconds=seconds, x_real_time=audio_seconds / seconds
    )


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(args: Args) -> dict:
    import torch
    import transformers

    if args.tiny:
        args.new_tokens = min(args.new_tokens, 24)
        args.prompt_tokens = min(args.prompt_tokens, 16)
        args.batch_sizes = tuple(sorted({min(b, 4) for b in args.batch_sizes}))
        if args.device == "cuda" and not torch.cuda.is_available():
            args.device = "cpu"
        if args.device == "cpu":
            args.dtype = "float32"
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    shape = "TINY (logic check only)" if args.tiny else "Llasa-1B shape"
    print(f"# TTS throughput: {shape}, RANDOM WEIGHTS (speed only, audio is noise)")
    print(
        f"# device {device_name}, torch {torch.__version__}, transformers {transformers.__version__}, {args.dtype}"
    )
    model, allowed, _, num_speech = build_lm(args)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"# LM params {params / 1e6:.1f} M, vocab {model.config.vocab_size}, prompt {args.prompt_tokens}, new {args.new_tokens}"
    )
    rows = []
    for batch in args.batch_sizes:
        for mode in args.modes:
            try:
                row = time_generate(model, allowed, args, batch, mode)
            except Exception as e:  # e.g. OOM at the largest batch: report it, go on
                row = dict(mode=mode, batch=batch, error=f"{type(e).__name__}: {str(e)[:200]}")
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
            rows.append(row)
            _print_row(row)
    codec = time_codec(args, num_speech, max(args.batch_sizes)) if args.time_codec else None
    if codec:
        print(
            f"codec decode: {codec['clips']} clips x {args.new_tokens} codes, batch {codec['codec_batch']}: "
            f"{codec['x_real_time']:.0f}x real time"
        )
    ok = [r for r in rows if "error" not in r]
    naive = next((r for r in ok if r["mode"] == "eager" and r["batch"] == min(args.batch_sizes)), None)
    fast = max(ok, key=lambda r: r["tokens_per_s"]) if ok else None
    summary = {}
    if fast:
        for label, row in (("naive", naive), ("fast", fast)):
            if row is None:
                continue
            lm_x = row["x_real_time"]
            stage_x = 1 / (1 / lm_x + 1 / codec["x_real_time"]) if codec else lm_x
            summary[label] = dict(row, stage_x_real_time=stage_x, speech_hours_per_gpu_hour=stage_x)
            print(
                f"{label:>5}: {row['mode']} batch {row['batch']}: LM {row['tokens_per_s']:.0f} tok/s = {lm_x:.1f}x real time; "
                f"TTS stage (LM + codec) {stage_x:.1f}x = {stage_x:.1f} h of speech per GPU-hour"
            )
    result = dict(
        args=asdict(args), device=device_name, params=params, rows=rows, codec=codec, summary=summary
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['mode']:>9} batch {row['batch']:>4}: FAILED {row['error']}")
        return
    print(
        f"{row['mode']:>9} batch {row['batch']:>4}: {row['tokens_per_s']:9.1f} tok/s  {row['x_real_time']:8.2f}x real time  "
        f"({row['seconds']:.2f} s timed, warm-up {row['warmup_seconds']:.1f} s)"
    )


if __name__ == "__main__":
    from sts.cli import parse_cli  # benchmarks/gpu_check.py calls main(Args(...)) directly

    main(parse_cli(Args, prog="benchmarks/tts_throughput.py"))
