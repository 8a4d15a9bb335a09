"""Inference speed of `sts-infer`'s transformers backend: naive `generate()` vs the fast path, side by side.

    python benchmarks/infer_throughput.py                      # GPU: LFM2-350M shape + 65,536 speech tokens
    python benchmarks/infer_throughput.py --tiny               # CPU: tiny models, checks the logic only
    python benchmarks/infer_throughput.py --batch-sizes 1 32 64 --new-tokens 500 --json out.json

Random weights (no download): an `Lfm2ForCausalLM` of LFM2-350M's shape (hidden 1024, 16 layers,
attention at 2,5,8,10,12,14) with its 65,536 text ids + 2 markers + 65,536 speech ids (vocab padded
to a multiple of 128), and a full-size random `Xcodec2Model`. Every generation goes through
`sts.generation.TransformersBackend` under the speech constraint (`AllowedTokensProcessor`), greedy,
with `min_new_tokens = max_new_tokens` so that every row really decodes `--new-tokens` tokens (random
weights would otherwise stop or loop anywhere; the loop guard is off for the same reason).

Rows:
  * `generate` per batch size, naive (dynamic cache, eager) and fast (static KV cache; on CUDA also
    `torch.compile(mode="reduce-overhead")` = CUDA graphs): new speech tokens per second and the
    multiple of real time (50 tokens = 1 s of speech). The fast path is warmed up (compiled) first.
  * `end to end`: one `--clip-seconds` clip: encode with the codec, build the s2st prompt
    (system/user text + the source codes, as `sts.tasks` lays it out), generate `--new-tokens`
    speech tokens at batch 1 on the fast path, decode to audio; seconds per stage.

Targets on one H100 (issue 5): end to end <= 1.5 s for a 10 s clip, >= 500 tok/s at batch 1,
>= 20,000 tok/s batched. Record the printed table in `benchmarks/RESULTS.md`.
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
from annotated_types import Ge, Gt

from sts.cli import parse_cli
from sts.config import WhenOff
from sts.devices import resolve_device, resolve_dtype
from sts.generation import GenerationRequest, Sampling, TransformersBackend, allowed_token_ids
from sts.testing.lm import LFM2_350M_SHAPE
from sts.vocab import SpeechVocab, round_up


def build_lm(tiny: bool, device: str, dtype: torch.dtype):
    """Random LM + its speech vocabulary layout: text ids, 2 markers, then the speech block."""
    from transformers import Lfm2Config, Lfm2ForCausalLM

    from sts.testing.lm import tiny_lfm2_config

    text_vocab, speech = (384, 1024) if tiny else (65536, 65536)
    vocab = SpeechVocab(
        speech_token_offset=text_vocab + 2,
        num_speech_tokens=speech,
        speech_start_id=text_vocab,
        speech_end_id=text_vocab + 1,
        text_vocab_size=text_vocab,
        vocab_size=round_up(text_vocab + 2 + speech, 128),
    )
    if tiny:  # the test kit's tiny LFM2 (hidden 64, both layer kinds)
        config = tiny_lfm2_config(vocab.vocab_size)
    else:
        config = Lfm2Config(
            vocab_size=vocab.vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2, **LFM2_350M_SHAPE
        )
    torch.manual_seed(0)
    model = Lfm2ForCausalLM(config).to(device=device, dtype=dtype).eval()
    return model, vocab


def build_codec(tiny: bool, device: str, workdir: Path):
    from transformers import Xcodec2Config, Xcodec2Model

    from sts.codec import XCodec2Codec
    from sts.testing.codec import save_tiny_xcodec2

    if tiny:
        path = save_tiny_xcodec2(workdir / "codec")
    else:
        path = workdir / "codec"
        Xcodec2Model(Xcodec2Config()).save_pretrained(path)
    return XCodec2Codec(path, device=device)


def s2st_prompt(vocab: SpeechVocab, src_codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`[L]` ids shaped like `TaskFormatter.prompt` for s2st: ~30 text ids, the source speech, a few
    text ids, then the speech start marker (the ids of the text do not matter to speed)."""
    text = lambda n: rng.integers(4, vocab.text_vocab_size, n)  # noqa: E731
    parts = [text(30), [vocab.speech_start_id], vocab.codes_to_ids(src_codes), [vocab.speech_end_id]]
    parts += [text(8), [vocab.speech_start_id]]
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_generate(backend, prompts, request, device: str, repeats: int) -> float:
    """Best wall time of `repeats` runs, after one warm-up run (compilation, CUDA graph capture)."""
    backend.generate(prompts, request)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = backend.generate(prompts, request)
        sync(device)
        best = min(best, time.perf_counter() - start)
    assert all(len(o) == request.max_new_tokens[0] for o in out), [len(o) for o in out]
    return best


@dataclass
class Args:
    """Generation speed: naive against fast path (see the module docstring)."""

    tiny: bool = False
    """Tiny models on the CPU (checks the logic)."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    dtype: str = "auto"
    """float32, bfloat16, or auto (bfloat16 on cuda, float32 on cpu)."""
    new_tokens: Annotated[int | None, Ge(1)] = None
    """Speech tokens per output (500 = 10 s)."""
    batch_sizes: list[int] | None = None
    """Default: 1 32 (tiny: 1 4)."""
    clip_seconds: Annotated[float, Gt(0)] = 10.0
    """Source clip length."""
    repeats: Annotated[int, Ge(1)] = 2
    """Timed repeats."""
    compile: Annotated[bool, WhenOff("the fast path without torch.compile")] = True
    """torch.compile on the fast path (cuda)."""
    skip_naive: bool = False
    """Time the fast path only."""
    json: Path | None = None
    """Also write the rows as JSON."""


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/infer_throughput.py")

    device = resolve_device(args.device)
    dtype = getattr(torch, resolve_dtype(args.dtype, device))
    new_tokens = args.new_tokens or (40 if args.tiny else 500)
    batch_sizes = args.batch_sizes or ([1, 4] if args.tiny else [1, 32])
    if not device.startswith("cuda"):
        torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)

    model, vocab = build_lm(args.tiny, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    info = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "lm_params": params,
        "vocab_size": vocab.vocab_size,
        "new_tokens": new_tokens,
    }
    print(" ".join(f"{k}={v}" for k, v in info.items()))

    allowed = allowed_token_ids(vocab, None, "speech")  # speech needs no tokenizer
    greedy = Sampling(do_sample=False)
    src_codes = rng.integers(0, vocab.num_speech_tokens, int(args.clip_seconds * vocab.frame_rate) + 1)
    naive = TransformersBackend(model, pad_token_id=0, fast=False)
    fast = TransformersBackend(
        model, pad_token_id=0, fast=True, compile=device.startswith("cuda") and args.compile
    )
    rows = []
    print(f"{'path':<10} {'batch':>5} {'seconds':>8} {'tok/s':>10} {'x real time':>12}")
    for batch in batch_sizes:
        prompts = [s2st_prompt(vocab, src_codes, rng) for _ in range(batch)]
        request = GenerationRequest(
            allowed, [vocab.speech_end_id], [new_tokens] * batch, sampling=greedy, min_new_tokens=new_tokens
        )
        for name, backend in (("naive", naive), ("fast", fast)):
            if name == "naive" and args.skip_naive:
                continue
            seconds = time_generate(backend, prompts, request, device, args.repeats)
            tok_s = batch * new_tokens / seconds
            rows.append(
                {"path": name, "batch": batch, "seconds": round(seconds, 3), "tokens_per_s": round(tok_s, 1)}
            )
            print(f"{name:<10} {batch:>5} {seconds:>8.3f} {tok_s:>10.1f} {tok_s / vocab.frame_rate:>11.2f}x")

    with tempfile.TemporaryDirectory() as tmp:
        codec = build_codec(args.tiny, device, Path(tmp))
        if codec.codebook_size != vocab.num_speech_tokens:
            raise SystemExit(f"codec has {codec.codebook_size} codes, LM block {vocab.num_speech_tokens}")
        wav = (0.1 * rng.standard_normal(int(args.clip_seconds * codec.sample_rate))).astype(np.float32)
        request = GenerationRequest(
            allowed, [vocab.speech_end_id], [new_tokens], sampling=greedy, min_new_tokens=new_tokens
        )
        stages = {}
        for _ in range(2):  # the first pass warms up the codec and the compiled LM
            sync(device)
            t0 = time.perf_counter()
            [codes] = codec.encode([wav])
            sync(device)
            t1 = time.perf_counter()
            [ids] = fast.generate([s2st_prompt(vocab, codes, rng)], request)
            sync(device)
            t2 = time.perf_counter()
            [out] = codec.decode([vocab.ids_to_codes(ids)])
            sync(device)
            t3 = time.perf_counter()
            stages = {"encode": t1 - t0, "generate": t2 - t1, "decode": t3 - t2, "total": t3 - t0}
        assert len(out) == new_tokens * codec.hop_length
    end_to_end = {k: round(v, 3) for k, v in stages.items()}
    print(
        f"end to end, one {args.clip_seconds:g} s clip -> {new_tokens} speech tokens (fast path, batch 1): "
        + ", ".join(f"{k} {v:.3f} s" for k, v in end_to_end.items())
    )
    result = {"info": info, "generate": rows, "end_to_end": end_to_end}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
