"""The s2st format ablation on the demo's real-speech setting: direct vs text-first vs translation-first,
each decoded with plain sampling and with repetition-aware sampling, over several seeds.

    python benchmarks/s2st_ablation.py --out-dir runs/ablation                     # the default demo size, 3 seeds
    python benchmarks/s2st_ablation.py --out-dir runs/ablation --size small --seeds 0 1
    python benchmarks/s2st_ablation.py --out-dir /tmp/abl --tiny                  # logic check (tests)

The setting is `sts demo`'s (`recipes.demo`): sentence pairs from the bundled set spoken by the
offline TTS voices (Kokoro ja, Piper en), checked by offline Whisper, encoded with the demo codec
(k-means over log-mel, Griffin-Lim; not XCodec2), a small LFM2 trained from scratch. Every format gets
the same budget: the same model, optimizer steps, batch, sequence length, learning rate and task
weights; only the s2st answer's layout differs (`sts.tasks`: direct = speech only; text-first =
transcript, translation, speech; translation-first = translation, speech). The corpus and codec are
built once (`--out/data`, reused by a rerun); each format x seed trains its own LM.

Each checkpoint translates `--examples` training and held-out sentences both ways, twice: "plain"
(nucleus sampling, temperature 0.8, top-p 0.95) and "ras" (repetition-aware sampling, CosyVoice's
settings, the package's default for speech). Scored by `recipes.demo_eval` exactly as the demo scores:
ASR-chrF++ (SeamlessM4T protocol with offline Whisper base) on training and held-out sentences, the
codec ceiling, the loop rate and the end-marker rate. The table gives mean +- standard deviation over
seeds. What a CPU-scale run can show: which format lets a small model reproduce (memorize) its
training pairs in a fixed budget, and whether a decoding loops; what it cannot: translation of unseen
sentences, which needs orders of magnitude more data and a real codec.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import tyro
from annotated_types import Ge

from sts.cli import parse_cli
from sts.config import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMATS = ("direct", "text-first", "translation-first")
DECODINGS = ("plain", "ras")


def run_one(out: Path, data: dict, size: dict, fmt: str, seed: int, steps: int, examples: int, log) -> dict:
    """Train one format x seed and score both decodings; returns {decoding: metrics}."""
    import torch

    from recipes.demo import DemoConfig, build_lm, train_sft
    from recipes.demo_eval import evaluate_outputs, translate_examples

    run = out / f"{fmt}-seed{seed}"
    torch.manual_seed(seed)
    started = time.perf_counter()
    lm = build_lm(
        run, DemoConfig(run, seed=seed), size, data["codec_dir"], data["codec"].codebook_size, data["texts"]
    )
    checkpoint = train_sft(
        lm, run / "train", data["corpora"]["train"], size, steps=steps, s2st_format=fmt, seed=seed
    )
    train_seconds = time.perf_counter() - started
    scores = {}
    for decoding in DECODINGS:
        items, _ = translate_examples(
            run, checkpoint, data["codec_dir"], data["corpora"], examples, decoding=decoding, seed=seed,
            audio_dir=f"outputs-{decoding}",
        )  # fmt: skip
        ev = evaluate_outputs(run, items, data["codec"], data["corpora"]["test"], speaker=False)
        scores[decoding] = summarize(ev)
        log(f"{fmt} seed {seed} {decoding}: {json.dumps(scores[decoding])}")
    return {"train_seconds": round(train_seconds, 1), "scores": scores}


def summarize(evaluation: dict) -> dict:
    """Mean over directions per split: ASR-chrF++, its ceiling, loop and end-marker rates."""
    groups = evaluation.get("asr_bleu") or {}
    out = {}
    for split in ("train", "test"):
        chosen = [g for k, g in groups.items() if k.startswith(split)]
        if not chosen:
            continue
        out[split] = {
            "asr_chrf": float(np.mean([g["scores"]["chrF++"] for g in chosen])),
            "ceiling": float(np.mean([g["ceiling"]["chrF++"] for g in chosen])),
            "loop_rate": float(np.mean([g["loop_rate"] for g in chosen])),
            "end_marker_rate": float(np.mean([g["end_marker_rate"] for g in chosen])),
            "by_direction": {
                k.split(" ", 1)[1]: g["scores"]["chrF++"] for k, g in groups.items() if k.startswith(split)
            },
        }
    return out


def table(results: dict) -> list[str]:
    """Markdown rows: format x decoding, mean +- std over seeds."""

    def stat(values: list[float], digits: int = 1) -> str:
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if values else ""

    rows = [
        "| format | decoding | train ASR-chrF++ | held-out ASR-chrF++ | ceiling (train) | loop rate | end-marker rate | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fmt, by_seed in results.items():
        if fmt.startswith("_"):  # "_setting"
            continue
        for decoding in DECODINGS:
            runs = [r["scores"][decoding] for r in by_seed.values() if decoding in r["scores"]]
            if not runs:
                continue
            train = [r["train"]["asr_chrf"] for r in runs if "train" in r]
            test = [r["test"]["asr_chrf"] for r in runs if "test" in r]
            ceiling = [r["train"]["ceiling"] for r in runs if "train" in r]
            loops = [np.mean([r[s]["loop_rate"] for s in ("train", "test") if s in r]) for r in runs]
            ends = [np.mean([r[s]["end_marker_rate"] for s in ("train", "test") if s in r]) for r in runs]
            rows.append(
                f"| {fmt} | {decoding} | {stat(train)} | {stat(test)} | {stat(ceiling)} | {stat(loops, 2)} | "
                f"{stat(ends, 2)} | {len(runs)} |"
            )
    return rows


@dataclass
class Args:
    """The s2st answer formats at an equal budget (see the module docstring)."""

    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/ablation")
    """Work folder (data, one run per format and seed, ablation.json)."""
    size: Literal["tiny", "small", "default", "large"] = "default"
    """Demo size."""
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    """Formats compared (direct, text-first, translation-first)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds per format."""
    steps: Annotated[int | None, Ge(1)] = None
    """SFT steps (default: the size's)."""
    examples: Annotated[int, Ge(1)] = 8
    """Sentences per split translated both ways."""
    tiny: bool = False
    """Size tiny, 1 seed, 4 steps, 1 example (logic check)."""
    threads: Annotated[int | None, Ge(1)] = None
    """Torch threads (default: torch's; 1 on a shared machine)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out": "out_dir"}
    """`--out` was the work folder's flag."""

    def __post_init__(self):
        if set(self.formats) - set(FORMATS):
            raise ConfigError(f"must be among {list(FORMATS)}, got {self.formats}", key="formats")


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/s2st_ablation.py")
    if args.tiny:
        args.size, args.seeds, args.steps, args.examples = "tiny", args.seeds[:1], 4, 1

    import torch

    from recipes.demo import SIZES, DemoConfig, prepare_data
    from sts.io import write_json_atomic

    if args.threads:  # another busy process on the cores slows torch's default threading many times over
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    steps = args.steps or size["steps"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log = print
    train_pairs, corpora, codec_dir, codec = prepare_data(
        args.out_dir / "data", DemoConfig(args.out_dir / "data", size=args.size), size, log
    )
    data = {
        "corpora": corpora,
        "codec_dir": codec_dir,
        "codec": codec,
        "texts": [p["ja"] for p in train_pairs] + [p["en"] for p in train_pairs],
    }
    results_path = args.out_dir / "ablation.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if (
        results.get("_setting", {}).get("steps", steps) != steps
        or results.get("_setting", {}).get("size", args.size) != args.size
    ):
        results = {}  # another setting: start over
    setting = {"size": args.size, "steps": steps, "examples": args.examples, "tasks": size["tasks"], "lr": size["lr"],
               "hidden": size["hidden"], "layers": size["layers"], "codebook": size["codebook"]}  # fmt: skip
    for fmt in args.formats:
        for seed in args.seeds:
            if str(seed) in results.get(fmt, {}):
                continue  # done by an earlier run of this command
            results.setdefault(fmt, {})[str(seed)] = run_one(
                args.out_dir, data, size, fmt, seed, steps, args.examples, log
            )
            results["_setting"] = setting
            write_json_atomic(results_path, results)  # the resume point: never half written
    rows = table(results)
    command = "python benchmarks/s2st_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n{command}  ({time.strftime('%Y-%m-%d')}, setting {json.dumps(setting)})\n")
    print("\n".join(rows))
    return {"setting": setting, "results": results, "table": rows}


if __name__ == "__main__":
    main()
