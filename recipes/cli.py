"""`sts`: the umbrella command. `sts STAGE ...` runs a stage's own command line.

    sts --help
    sts extend-tokenizer LiquidAI/LFM2-350M -o runs/lfm2-350m-speech
    sts demo -o runs/demo
    sts tiny-run -o runs/tiny

Each stage is also installed as its own script (`sts-extend-tokenizer`, ...); both spellings run
the same function, parsed by `sts.cli` (the one command-line mechanism) under the one error policy
of `sts.errors.cli_main`: an expected failure is one line `PROG: error: FILE: problem` and exit
status 2; `--debug` (anywhere) or STS_TRACEBACK=1 shows the traceback. Only stages that work are
listed. `demo`, `tiny-run` and `serve` have no script of their own: their command lines are here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from recipes.demo import DemoConfig, run_demo
from recipes.serve import build_app, confine_writes, launch
from recipes.serve_service import ServeConfig, load_service
from recipes.tiny_run import TinyRunConfig, run_tiny_pipeline
from sts.cli import Subcommand, parse_cli, run_subcommand
from sts.errors import cli_main, print_quietly

STAGES = (
    Subcommand("build-corpus", "corpus_builder.cli:main",
               "source speech/text -> MT -> TTS -> checks -> resumable Parquet shards"),
    Subcommand("eval-mt", "infer.cli:eval_mt_main",
               "score MT backends on FLORES or any ja/en file pair (BLEU, chrF++, COMET)"),
    Subcommand("train", "train.cli:main",
               "continual pre-training (cpt), multitask SFT (sft), DPO pairs and DPO; exact resume"),
    Subcommand("infer", "infer.cli:main",
               "translate speech (s2st), transcribe (asr), speech->text (s2tt), read text aloud (tts)"),
    Subcommand("eval", "infer.cli:eval_main",
               "score a checkpoint on a test manifest: ASR-BLEU, chrF++, CER/WER, speaker similarity, RTF"),
    Subcommand("fit-codec", "sts.codec.cli:main",
               "fit the offline/demo codec (k-means over log-mel, Griffin-Lim) from audio; not XCodec2"),
    Subcommand("encode", "corpus_builder.cli:encode_main",
               "add src_codes/tgt_codes (XCodec2, 50 per second) to corpus shards"),
    Subcommand("extend-tokenizer", "tokenizer_ext.cli:main",
               "add the 65,536 speech tokens to a causal LM (tokenizer, embeddings, sts_vocab.json)"),
    Subcommand("demo", "recipes.cli:demo",
               "the whole pipeline offline on a CPU with real speech (offline TTS/ASR, demo codec) -> report.md"),
    Subcommand("serve", "recipes.cli:serve",
               "a web page over a checkpoint: speak, hear the translation as it is generated, see its texts"),
    Subcommand("tiny-run", "recipes.cli:tiny_run",
               "run every existing stage end to end on tiny random models (no download)"),
)  # fmt: skip
SCRIPTS = {
    "build-corpus": "sts-build-corpus", "eval-mt": "sts-eval-mt", "train": "sts-train", "infer": "sts-infer",
    "eval": "sts-eval", "fit-codec": "sts-fit-codec", "encode": "sts-encode", "extend-tokenizer": "sts-extend-tokenizer",
}  # fmt: skip
"""The stand-alone script of each stage that has one (pyproject.toml [project.scripts])."""

# The whole pipeline, for orientation; stages without a script are marked as not yet available.
PIPELINE = [
    ("1. corpus", "sts-build-corpus", "Emilia / local speech -> MT -> TTS -> checks -> Parquet shards"),
    ("1b. MT quality", "sts-eval-mt", "score the corpus builder's MT on FLORES-200 (BLEU, chrF++)"),
    ("2. speech codes", "sts-encode", "audio -> XCodec2 codes (50 per second)"),
    ("3. vocabulary", "sts-extend-tokenizer", "base LM + speech tokens"),
    ("4. training", "sts-train", "sts-train cpt / sft / dpo-pairs / dpo"),
    ("5. inference", "sts-infer", "in.wav --to en -o out.wav"),
    ("6. evaluation", "sts-eval", "ASR-BLEU, CER, speaker similarity"),
]


def usage() -> str:
    from sts import __version__

    width = max(len(s.name) for s in STAGES)
    lines = [f"usage: sts STAGE [ARGS...]   (sts {__version__})", "", "stages available in this version:"]
    lines += [f"  {s.name:<{width}}  {s.summary}" for s in STAGES]
    lines += ["", "`sts STAGE --help` shows a stage's options.", "", "pipeline:"]
    for step, command, what in PIPELINE:
        status = "" if command in SCRIPTS.values() else "  (not yet available)"
        lines.append(f"  {step:<16} {command:<22} {what}{status}")
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> int:
    return cli_main("sts", _main, args)


def _main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print_quietly(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from sts import __version__

        print(__version__)
        return 0
    if args[0] not in {s.name for s in STAGES}:
        print(f"sts: unknown stage {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_subcommand("sts", STAGES, args)


def demo(args: Sequence[str] | None = None) -> int:
    """`sts demo`: `recipes.demo.run_demo`."""

    def _run(rest: list[str]) -> int:
        run_demo(parse_cli(DemoConfig, rest, prog="sts demo"))
        return 0

    return cli_main("sts demo", _run, args)


def tiny_run(args: Sequence[str] | None = None) -> int:
    """`sts tiny-run`: `recipes.tiny_run.run_tiny_pipeline`, its report printed."""
    return cli_main("sts tiny-run", _tiny_run, args)


def _tiny_run(args: list[str]) -> int:
    import torch
    from rich.console import Console

    cfg = parse_cli(TinyRunConfig, args, prog="sts tiny-run")
    console = Console(stderr=True)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    report = run_tiny_pipeline(cfg.out_dir, steps=cfg.steps, seed=cfg.seed, log=console.log)
    print(json.dumps(report, indent=2))
    console.print(f"wrote {cfg.out_dir}/report.json, source.wav and translation.wav")
    return 0


def serve(args: Sequence[str] | None = None) -> int:
    """`sts serve`: `recipes.serve` (the page) over `recipes.serve_service` (the model)."""
    return cli_main("sts serve", _serve, args)


def _serve(args: list[str]) -> int:

    cfg = parse_cli(ServeConfig, args, prog="sts serve")
    try:
        confine_writes(cfg.out_dir)
        service = load_service(cfg)
        app = build_app(service)
    except ImportError as err:
        print(f"sts serve: error: {err}; install the web extra: pip install -e '.[serve]'", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as err:
        print(f"sts serve: error: {err}", file=sys.stderr)
        return 2
    launch(app, service)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
