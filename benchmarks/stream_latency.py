"""Time to first audio, real-time factor and SimulEval latency of `Translator.stream` vs `Translator.run`.

    python benchmarks/stream_latency.py                       # CPU: the demo's LM size + the demo codec
    python benchmarks/stream_latency.py --mode gpu            # GPU: LFM2-350M shape + full-size XCodec2
    python benchmarks/stream_latency.py --mode tiny           # logic check: tiny LM + tiny XCodec2

Random weights (latency does not depend on what is said), built the way the pipeline builds them:
`sts.testing.save_tiny_lfm2` + `tokenizer_ext.extend_tokenizer`, loaded by `Translator.from_checkpoint`.
  * demo: the offline demo's default LM (`recipes/demo.py` "default": hidden 192, 6 layers, conv and
    attention alternating) with 256 speech tokens, and a `MelKMeansCodec` of 256 codes fitted on
    synthetic speech (Griffin-Lim decoding, as the demo's codec).
  * gpu: an LFM2-350M-shaped body (hidden 1024, 16 layers) with 65,536 speech tokens, bf16, fast
    path (static cache + CUDA graphs), and a full-size random `Xcodec2Model`. Its text vocabulary
    is the test kit's BPE (~400 ids; the extension keeps the tokenizer's ids), so the vocabulary is
    ~66k, not the real 131k: 355M parameters instead of 422M, an LM head half as wide.
  * tiny: the test kit's LFM2 (hidden 64) and tiny XCodec2.

Every output is forced to `--new-tokens` speech codes (the end marker is masked, the budget capped
and the loop guard off), from a `--source-seconds` synthetic utterance, s2st, repetition-aware
sampling (the speech default). Per path, the median of `--repeats` timed runs after one warm-up:
  * run: `Translator.run([request])`; its first audio is the whole result, so time to first audio =
    total time.
  * stream: `Translator.stream(request)`; time to the first and the last "audio" event and to
    "done" (which decodes the whole output once more for the result's waveform, as `run` does).
    Playback started at the first audio never waits while last audio <= first audio + output
    seconds (chunks arrive at least as fast as they play).
Real-time factor = total seconds / output audio seconds (below 1: faster than real time).
SimulEval's StartOffset, EndOffset and ATD (`sts.latency`, ms), ideal and computation-aware: the
model reads the whole source first, so every chunk's delay is the source length; the
computation-aware timestamps add each audio event's wall-clock time (`run`: one chunk, the whole
output, at the end). Rows for `benchmarks/RESULTS.md` are printed; `--json` writes them.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt
from transformers import LogitsProcessor

from sts.cli import parse_cli
from sts.testing.lm import LFM2_350M_SHAPE

LFM2_350M_BODY = {k: v for k, v in LFM2_350M_SHAPE.items() if k != "tie_word_embeddings"}
"""LFM2-350M's body (`sts.testing.lm.LFM2_350M_SHAPE`) for `save_tiny_lfm2`, which ties embeddings itself."""


class NoEnd(LogitsProcessor):
    """Masks the speech end marker: every output runs to its budget."""

    def __init__(self, end_id: int):
        self.end_id = end_id

    def __call__(self, input_ids, scores):
        return scores.index_fill(1, torch.tensor([self.end_id], device=scores.device), float("-inf"))


def build(mode: str, workdir: Path, device: str):
    """A Translator over random weights for `mode` (see the module docstring)."""
    from infer.translate import Translator
    from sts.testing import save_tiny_lfm2, synthetic_utterance
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    if mode == "demo":
        from sts.codec.melkmeans import MelKMeansCodec

        speech = [synthetic_utterance(3.0, 100.0 + 15 * i, seed=i) for i in range(8)]
        codec_dir = MelKMeansCodec.fit(speech, codebook_size=256, seed=0).save(workdir / "codec")
        layers = 6
        body = dict(
            hidden_size=192, intermediate_size=384, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, layer_types=["conv" if i % 2 == 0 else "full_attention" for i in range(layers)],
        )  # fmt: skip
        base = save_tiny_lfm2(workdir / "base", extra_vocab_rows=0, **body)
        speech_tokens = 256
    elif mode == "gpu":
        from transformers import Xcodec2Config, Xcodec2Model

        codec_dir = workdir / "codec"
        Xcodec2Model(Xcodec2Config()).save_pretrained(codec_dir)
        base = save_tiny_lfm2(workdir / "base", extra_vocab_rows=0, **LFM2_350M_BODY)
        speech_tokens = 65536
    else:
        from sts.testing import save_tiny_xcodec2

        codec_dir = save_tiny_xcodec2(workdir / "codec")
        base = save_tiny_lfm2(workdir / "base")
        speech_tokens = 1024
    lm_dir = workdir / "lm"
    extend_tokenizer(ExtendConfig(str(base), lm_dir, num_speech_tokens=speech_tokens, codec=str(codec_dir)))
    gpu = device.startswith("cuda")
    return Translator.from_checkpoint(
        lm_dir, device=device, dtype="bfloat16" if gpu else "float32", fast=gpu, batch_size=1
    )


def force_length(translator, new_tokens: int) -> None:
    """Every speech output exactly `new_tokens` codes: no end marker, budget capped, no loop cut."""
    from sts.generation.loops import LoopGuard

    translator.max_new_tokens = new_tokens
    translator.extra_logits_processors = [NoEnd(translator.vocab.speech_end_id)]
    never = LoopGuard(max_ngram=1, min_repeats=10**9, min_span=10**9)
    translator.guards = {**translator.guards, "speech": never}


def time_run(translator, request, device: str) -> dict:
    sync(device)
    t0 = time.perf_counter()
    [result] = translator.run([request])
    sync(device)
    total = time.perf_counter() - t0
    seconds = len(result.waveform) / 16000
    return {
        "first_audio": total,
        "last_audio": total,
        "total": total,
        "output_seconds": seconds,
        **simuleval(request, [(total, seconds)]),
    }


def time_stream(translator, request, device: str) -> dict:
    sync(device)
    first = last = None
    chunks = []
    for event in translator.stream(request):
        if event.kind == "audio":
            first = event.seconds if first is None else first
            last = event.seconds
            chunks.append((event.seconds, len(event.audio) / 16000))
        elif event.kind == "done":
            total, result = event.seconds, event.result
    seconds = len(result.waveform) / 16000
    return {
        "first_audio": first,
        "last_audio": last,
        "total": total,
        "output_seconds": seconds,
        **simuleval(request, chunks),
    }


def simuleval(request, chunks: list[tuple[float, float]]) -> dict:
    """SimulEval's StartOffset, EndOffset, ATD (ms) of one output: `chunks` are (wall s, audio s)."""
    from sts.latency import SpeechOutputTrace, latency_scores

    scores = latency_scores(SpeechOutputTrace.from_events(len(request.wav) / 16000, chunks))
    return {f"{metric}_{form}": value for form, values in scores.items() for metric, value in values.items()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Args:
    """Time to first audio and real-time factor, streaming or not (see the module docstring)."""

    mode: Literal["demo", "gpu", "tiny"] = "demo"
    """demo: the demo-sized model on the CPU; gpu: full size on cuda; tiny: logic check."""
    device: str | None = None
    """Default: cuda for --mode gpu, else cpu."""
    new_tokens: Annotated[int, Ge(1)] = 250
    """Speech codes per output (250 = 5 s)."""
    source_seconds: Annotated[float, Gt(0)] = 4.0
    """Source clip length."""
    repeats: Annotated[int, Ge(1)] = 3
    """Timed repeats."""
    threads: Annotated[int | None, Ge(1)] = None
    """Torch CPU threads (default 1 on a CPU: docs/background.md)."""
    json: Path | None = None
    """Also write the rows here."""


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/stream_latency.py")

    from infer.translate import Request
    from sts.testing import synthetic_utterance

    device = args.device or ("cuda" if args.mode == "gpu" else "cpu")
    if args.threads or not device.startswith("cuda"):  # a busy 2-core machine slows torch's threading 50x
        torch.set_num_threads(args.threads or 1)
    with tempfile.TemporaryDirectory() as tmp:
        translator = build(args.mode, Path(tmp), device)
    force_length(translator, args.new_tokens)
    request = Request("s2st", "ja", "en", wav=synthetic_utterance(args.source_seconds, 140.0, seed=1))
    info = {
        "mode": args.mode,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "lm_params": sum(p.numel() for p in translator.backend.model.parameters()),
        "codec": type(translator.codec).__name__,
        "stream_settings": dataclasses.asdict(translator.codec.stream_defaults),
        "new_tokens": args.new_tokens,
        "source_seconds": args.source_seconds,
    }
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    rows = []
    for path, timer in (("run", time_run), ("stream", time_stream)):
        timer(translator, request, device)  # warm-up: lazy imports, Griffin-Lim tables, CUDA graphs
        runs = [timer(translator, request, device) for _ in range(args.repeats)]
        row = {"path": path, **{k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}}
        row["rtf"] = round(row["total"] / row["output_seconds"], 3)
        rows.append(row)
        print(
            f"{path:<7} first audio {row['first_audio']:.3f} s, last audio {row['last_audio']:.3f} s, done "
            f"{row['total']:.3f} s for {row['output_seconds']:.2f} s of audio: real-time factor {row['rtf']:.3f}"
        )
        print(
            f"{'':<7} SimulEval ms, ideal / computation-aware: StartOffset {row['StartOffset_ideal']:.0f} / "
            f"{row['StartOffset_computation_aware']:.0f}, EndOffset {row['EndOffset_ideal']:.0f} / "
            f"{row['EndOffset_computation_aware']:.0f}, ATD {row['ATD_ideal']:.0f} / {row['ATD_computation_aware']:.0f}"
        )
    result = {"info": info, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
