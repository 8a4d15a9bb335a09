"""`sts`: the umbrella command. `sts STAGE ...` runs a stage's own command line.

    sts --help
    sts extend-tokenizer LiquidAI/LFM2-350M runs/lfm2-350m-speech
    sts tiny-run runs/tiny

Each stage is also installed as its own script (`sts-extend-tokenizer`, ...); both spellings run
the same `main`, under the one error policy of `sts.errors.cli_main`: an expected failure is one
line `PROG: error: FILE: problem` and exit status 2; `--debug` (anywhere) or STS_TRACEBACK=1 shows
the traceback. Only stages that work are listed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module with main(args), one-line description, stand-alone script or None)
STAGES: dict[str, tuple[str, str, str | None]] = {
    "build-corpus": (
        "corpus_builder.cli",
        "source speech/text -> MT -> TTS -> checks -> resumable Parquet shards",
        "sts-build-corpus",
    ),
    "eval-mt": (
        "infer.mt_eval",
        "score MT backends on FLORES or any ja/en file pair (BLEU, chrF++, COMET)",
        "sts-eval-mt",
    ),
    "train": (
        "train.cli",
        "continual pre-training (cpt) and multitask SFT (sft) of the extended LM; exact resume",
        "sts-train",
    ),
    "infer": (
        "infer.cli",
        "translate speech (s2st), transcribe (asr), speech->text (s2tt), read text aloud (tts)",
        "sts-infer",
    ),
    "eval": (
        "infer.eval",
        "score a checkpoint on a test manifest: ASR-BLEU, chrF++, CER/WER, speaker similarity, RTF",
        "sts-eval",
    ),
    "fit-codec": (
        "sts.fit_codec",
        "fit the offline/demo codec (k-means over log-mel, Griffin-Lim) from audio; not XCodec2",
        "sts-fit-codec",
    ),
    "encode": (
        "corpus_builder.encode",
        "add src_codes/tgt_codes (XCodec2, 50 per second) to corpus shards",
        "sts-encode",
    ),
    "extend-tokenizer": (
        "tokenizer_ext.cli",
        "add the 65,536 speech tokens to a causal LM (tokenizer, embeddings, sts_vocab.json)",
        "sts-extend-tokenizer",
    ),
    "demo": (
        "recipes.demo",
        "the whole pipeline offline on a CPU with real speech (offline TTS/ASR, demo codec) -> report.md",
        None,
    ),
    "serve": (
        "recipes.serve",
        "a web page over a checkpoint: speak, hear the translation as it is generated, see its texts",
        None,
    ),
    "tiny-run": (
        "recipes.tiny_run",
        "run every existing stage end to end on tiny random models (no download)",
        None,
    ),
}

# The whole pipeline, for orientation; stages not in STAGES are marked as not yet available.
PIPELINE = [
    ("1. corpus", "sts-build-corpus", "Emilia / local speech -> MT -> TTS -> checks -> Parquet shards"),
    ("1b. MT quality", "sts-eval-mt", "score the corpus builder's MT on FLORES-200 (BLEU, chrF++)"),
    ("2. speech codes", "sts-encode", "audio -> XCodec2 codes (50 per second)"),
    ("3. vocabulary", "sts-extend-tokenizer", "base LM + speech tokens"),
    ("4. training", "sts-train", "sts-train cpt / sts-train sft: continual pre-training, multitask SFT"),
    ("5. inference", "sts-infer", "in.wav --to en -o out.wav"),
    ("6. evaluation", "sts-eval", "ASR-BLEU, CER, speaker similarity"),
]


def usage() -> str:
    from sts import __version__

    width = max(map(len, STAGES))
    lines = [f"usage: sts STAGE [ARGS...]   (sts {__version__})", "", "stages available in this version:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, description, _) in STAGES.items()]
    lines += ["", "`sts STAGE --help` shows a stage's options.", "", "pipeline:"]
    scripts = {script for _, _, script in STAGES.values()}
    for step, command, what in PIPELINE:
        status = "" if command in scripts else "  (not yet available)"
        lines.append(f"  {step:<16} {command:<22} {what}{status}")
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> int:
    from sts.errors import cli_main

    return cli_main("sts", _main, args)


def _main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from sts import __version__

        print(__version__)
        return 0
    if args[0] not in STAGES:
        print(f"sts: unknown stage {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[args[0]][0])
    return module.main(args[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
