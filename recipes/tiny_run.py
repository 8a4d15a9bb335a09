"""The smallest real end-to-end run, on tiny random models: `sts tiny-run [-o OUT_DIR]`.

    sts tiny-run -o runs/tiny

Builds a tiny LFM2 and a tiny XCodec2 from their real config classes (no download), extends the LM
with the codec's speech tokens, encodes two synthetic "utterances" to codes, formats them as one
`s2st` ja->en sample, overfits the LM on it for a few dozen steps, generates the translation
greedily from the prompt, decodes the generated codes to a waveform and writes it, with a JSON
report. Every stage that exists runs for real; only the models are tiny and random, so the output
audio is noise-like by design. Takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import tyro
from annotated_types import Ge

from sts.audio import write_audio
from sts.tasks import Example, TaskFormatter
from sts.testing.audio import synthetic_utterance


def run_tiny_pipeline(out_dir: str | Path, *, steps: int = 60, seed: int = 0, log=print) -> dict:
    """Run every existing stage on tiny models into `out_dir`; returns (and writes) the report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sts.codec import XCodec2Codec
    from sts.testing import save_tiny_lfm2, save_tiny_xcodec2
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    started = time.perf_counter()
    report: dict = {}

    log("1/5 building tiny LFM2 and tiny XCodec2 from their config classes")
    codec_dir = save_tiny_xcodec2(out_dir / "models" / "tiny-xcodec2", seed=seed)
    base_dir = save_tiny_lfm2(out_dir / "models" / "tiny-lfm2", seed=seed)
    codec = XCodec2Codec(codec_dir)

    log(f"2/5 extending the LM with {codec.codebook_size:,} speech tokens")
    lm_dir = out_dir / "models" / "tiny-lfm2-speech"
    vocab = extend_tokenizer(
        ExtendConfig(
            str(base_dir), lm_dir, num_speech_tokens=codec.codebook_size, codec=str(codec_dir), overwrite=True
        )
    )
    report["vocab"] = {
        "offset": vocab.speech_token_offset,
        "speech_tokens": vocab.num_speech_tokens,
        "rows": vocab.vocab_size,
    }

    log("3/5 encoding a synthetic ja source and en target utterance")
    source, target = (
        synthetic_utterance(1.2, 140.0, seed=seed),
        synthetic_utterance(0.8, 200.0, seed=seed + 1),
    )
    write_audio(out_dir / "source.wav", source)
    src_codes, tgt_codes = codec.encode([source, target])
    report["codes"] = {"source": len(src_codes), "target": len(tgt_codes), "frame_rate": codec.frame_rate}

    log(f"4/5 overfitting the LM on one s2st sample for {steps} steps")
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    formatter = TaskFormatter(tokenizer, vocab)
    sample = formatter.build(Example("s2st", "ja", "en", src_codes=src_codes, tgt_codes=tgt_codes))
    input_ids = torch.from_numpy(sample["input_ids"])[None]
    labels = torch.from_numpy(sample["labels"])[None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
    report["loss"] = {"first": losses[0], "last": losses[-1]}

    log("5/5 generating the translation greedily and decoding it to audio")
    model.eval()
    prompt = torch.from_numpy(formatter.prompt(Example("s2st", "ja", "en", src_codes=src_codes)))[None]
    with torch.inference_mode():
        generated = model.generate(
            prompt, max_new_tokens=len(tgt_codes) + 4, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )[0, prompt.shape[1] :]
    parsed = formatter.parse(generated.numpy(), "s2st")
    n = min(len(parsed.codes), len(tgt_codes))
    report["generation"] = {
        "codes": len(parsed.codes),
        "finished": parsed.finished,
        "stray_ids": parsed.stray_ids,
        "target_codes_reproduced": f"{int((parsed.codes[:n] == tgt_codes[:n]).sum())}/{len(tgt_codes)}",
    }
    if len(parsed.codes):
        write_audio(out_dir / "translation.wav", codec.decode([parsed.codes])[0])
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


@dataclass
class TinyRunConfig:
    """Run every existing stage end to end on tiny random models (no download, CPU, < 1 min)."""

    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/tiny")
    """Where the tiny models, audio and report.json go."""
    steps: Annotated[int, Ge(1)] = 60
    """Optimizer steps of the overfitting check."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed for the random models and data."""

    RENAMED_POSITIONALS: ClassVar[tuple[str, ...]] = ("out_dir",)
    """`sts tiny-run OUT_DIR` (the old form) reads as `--out-dir OUT_DIR`."""
