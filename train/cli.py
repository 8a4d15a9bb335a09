"""`sts-train`: continual pre-training or multitask SFT of an LM extended with speech tokens.

    sts-train cpt --config train/configs/cpt_lfm2_350m.yaml --model runs/lfm2-350m-speech --shards runs/encoded
    sts-train sft --config train/configs/sft_lfm2_350m.yaml --model runs/cpt/checkpoint-0020000 --shards runs/encoded
    sts-train dpo-pairs --model runs/sft/checkpoint-0010000 --shards runs/encoded --out-dir runs/pairs   # scored pairs
    sts-train dpo --config train/configs/dpo_lfm2_350m.yaml --model runs/sft/checkpoint-0010000 --pairs runs/pairs
    accelerate launch --config_file train/configs/accelerate/fsdp.yaml -m train.cli sft --config ...
    sts-train sft --config ... --export-axolotl runs/axolotl-sft      # write axolotl YAML + dataset, no training
    sts-train merge-lora runs/sft-lora/checkpoint-0000400 runs/sft-merged   # LoRA -> plain HF folder
    sts-train adopt-axolotl runs/axolotl-sft/out --from runs/axolotl-sft    # axolotl output -> sts checkpoint

Rerunning the same command resumes from the newest intact checkpoint in --out-dir (dpo-pairs: from
the first chunk not written). A resume whose request changes the data or the model (base model,
shards, tasks, format, sequence length, LoRA shape, optimizer) is refused naming each field;
`--override` forces it and the run records that (`train.resume_check`). All options: `sts-train sft --help`, `sts-train dpo --help`,
`sts-train dpo-pairs --help`, `sts-train merge-lora --help`.
A corpus whose recorded codec, frame rate or codebook differs from the model's sts_vocab.json, an
unencoded corpus, or an out-of-range code stops the command with one line naming the files (and the
shard, row id and value); `--allow-codec-name-mismatch`, `--allow-unrecorded-codec` and
`--skip-invalid-codes` are the explicit ways past them. So does every other expected failure (a model
folder that does not exist or is damaged, an sts_vocab.json that does not match its tokenizer, a bad
config, a full disk while saving a checkpoint): one line, exit 2 (`sts.errors.cli_main`; `--debug`
shows the traceback). A diverged run stops with exit 1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from sts.config import parse_cli
from sts.errors import UsageError, cli_main
from train.config import TrainConfig

USAGE = (
    "usage: sts-train {cpt,sft,dpo} [--config FILE.yaml] [--OPTION VALUE ...]   (sts-train sft --help)\n"
    "       sts-train dpo-pairs --model CHECKPOINT --shards CORPUS --out-dir DIR [--OPTION VALUE ...]\n"
    "       sts-train merge-lora CHECKPOINT OUT_DIR [--base-model M]\n"
    "       sts-train adopt-axolotl OUTPUT_DIR --from EXPORT_DIR"
)
COMMANDS = ("cpt", "sft", "dpo", "dpo-pairs", "merge-lora", "adopt-axolotl")


def main(args: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    command = args[0] if args and args[0] in COMMANDS else ""
    return cli_main(f"sts-train {command}".strip(), _main, args)


def _main(args: list[str]) -> int:
    if not args or args[0] not in COMMANDS:
        print(USAGE, file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        return 0 if args and args[0] in ("-h", "--help") else 2
    stage, rest = args[0], args[1:]
    if stage in ("merge-lora", "adopt-axolotl"):
        return _convert(stage, rest)
    if stage == "dpo-pairs":
        return _pairs(rest)
    cfg = parse_cli(TrainConfig, rest, prog=f"sts-train {stage}")
    cfg.stage = stage
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return _run(cfg, stage)


def _run(cfg: TrainConfig, stage: str) -> int:
    if cfg.export_axolotl is not None and stage == "dpo":
        raise UsageError("--export-axolotl exports cpt/sft data, not preference pairs")
    if cfg.export_axolotl is not None:
        from sts.model_files import load_speech_contract
        from train.axolotl import export_axolotl
        from train.data import build_doc_stores

        vocab, tokenizer = load_speech_contract(cfg.model)
        stores = build_doc_stores(cfg, tokenizer, vocab)
        path = export_axolotl(cfg, *stores, cfg.export_axolotl)
        print(f"wrote {path}")
        return 0
    from train.dpo import train_dpo
    from train.trainer import TrainingDiverged, train

    try:
        last = train_dpo(cfg) if stage == "dpo" else train(cfg)
    except TrainingDiverged as err:
        print(f"sts-train {stage}: stopped: {err}", file=sys.stderr)
        return 1
    print(f"done: {last}")
    return 0


def _pairs(rest: list[str]) -> int:
    """dpo-pairs: sample, score and pair."""
    from train.pairs import PairConfig, build_pairs

    cfg = parse_cli(PairConfig, rest, prog="sts-train dpo-pairs")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    card = build_pairs(cfg)  # expected failures are InputErrors: one line, exit 2 (cli_main)
    print(
        f"wrote {card['pairs']} pairs from {card['answers']} answers to {card['prompts']} prompts: {cfg.out_dir}"
    )
    return 0


def _convert(command: str, rest: list[str]) -> int:
    """merge-lora / adopt-axolotl (their expected failures are `InputError`s: one line, exit 2)."""
    from train.axolotl import AdoptConfig, adopt_axolotl
    from train.merge import MergeConfig, merge_lora

    if command == "merge-lora":
        out = merge_lora(parse_cli(MergeConfig, rest, prog="sts-train merge-lora"))
    else:
        out = adopt_axolotl(parse_cli(AdoptConfig, rest, prog="sts-train adopt-axolotl"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
