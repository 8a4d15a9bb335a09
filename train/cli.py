"""`sts-train`: continual pre-training, multitask SFT, preference pairs and DPO of an LM extended with speech tokens.

    sts-train cpt --config train/configs/cpt_lfm2_350m.yaml --model runs/lfm2-350m-speech --data.shards runs/encoded
    sts-train sft --config train/configs/sft_lfm2_350m.yaml --model runs/cpt/checkpoint-0020000 --data.shards runs/encoded
    sts-train dpo-pairs --model runs/sft/checkpoint-0010000 --shards runs/encoded --out-dir runs/pairs   # scored pairs
    sts-train dpo --config train/configs/dpo_lfm2_350m.yaml --model runs/sft/checkpoint-0010000 --dpo.pairs runs/pairs
    accelerate launch --config_file train/configs/accelerate/fsdp.yaml -m train.cli sft --config ...
    sts-train sft --config ... --export-axolotl runs/axolotl-sft      # write axolotl YAML + dataset, no training
    sts-train merge-lora runs/sft-lora/checkpoint-0000400 --out-dir runs/sft-merged   # LoRA -> plain HF folder
    sts-train adopt-axolotl runs/axolotl-sft/out --from runs/axolotl-sft    # axolotl output -> sts checkpoint

Rerunning the same command resumes from the newest intact checkpoint in --out-dir (dpo-pairs: from
the first chunk not written). `sts-train COMMAND --help` lists a command's options (cpt, sft and dpo
show only the groups they read: `train.config`). A resume whose request changes the data or the
model (base model, shards, tasks, format, sequence length, LoRA shape, optimizer) is refused naming
each field; `--override` forces it and the run records that (`train.resume_check`). A corpus whose recorded codec, frame rate or
codebook differs from the model's sts_vocab.json, an unencoded corpus, or an out-of-range code
stops the command with one line naming the files (and the shard, row id and value);
`--data.allow-codec-name-mismatch`, `--data.allow-unrecorded-codec` and `--data.skip-invalid-codes`
are the explicit ways past them. So does every other expected failure (a bad flag or value, a model
folder that does not exist or is damaged, an sts_vocab.json that does not match its tokenizer, a
bad config, a full disk while saving a checkpoint): one line, exit 2 (`sts.errors.cli_main`;
`--debug` shows the traceback). A diverged run stops with exit 1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from sts.cli import Subcommand, parse_cli, run_subcommand
from sts.errors import UsageError, cli_main
from train.config import TrainConfig, hidden_groups
from train.pairs import PairConfig, build_pairs

COMMANDS = (
    Subcommand("cpt", "train.cli:cpt", "continual pre-training: speech-only sequences mixed with text"),
    Subcommand("sft", "train.cli:sft", "multitask SFT: s2st, asr, tts, s2tt, t2tt in both directions"),
    Subcommand(
        "dpo-pairs", "train.cli:dpo_pairs", "sample answers from a checkpoint, score them, write pairs"
    ),
    Subcommand("dpo", "train.cli:dpo", "preference optimization (DPO / IPO) on pairs"),
    Subcommand("merge-lora", "train.cli:merge_lora", "fold LoRA adapters into the base: a plain HF folder"),
    Subcommand("adopt-axolotl", "train.cli:adopt_axolotl", "an axolotl output folder -> an sts checkpoint"),
)
NAMES = tuple(c.name for c in COMMANDS)


def main(args: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    command = args[0] if args and args[0] in NAMES else ""
    return cli_main(
        f"sts-train {command}".strip(), lambda rest: run_subcommand("sts-train", COMMANDS, rest), args
    )


def cpt(args: list[str]) -> int:
    return _train("cpt", args)


def sft(args: list[str]) -> int:
    return _train("sft", args)


def dpo(args: list[str]) -> int:
    return _train("dpo", args)


def parse_train(stage: str, args: Sequence[str]) -> TrainConfig:
    """`sts-train STAGE ARGS` as a `TrainConfig` of that stage (whatever a config file's `stage`
    says): only the stage's groups are shown and taken, and a file that sets another stage's
    options is refused, naming the first."""
    about = next(c.summary for c in COMMANDS if c.name == stage)
    return parse_cli(TrainConfig, args, prog=f"sts-train {stage}", description=f"sts-train {stage}: {about}.",
                     default=TrainConfig(stage=stage), hide=hidden_groups(stage), fixed={"stage": stage})  # fmt: skip


def _train(stage: str, args: list[str]) -> int:
    cfg = parse_train(stage, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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


def dpo_pairs(args: list[str]) -> int:
    """Sample, score and pair."""

    cfg = parse_cli(PairConfig, args, prog="sts-train dpo-pairs")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    card = build_pairs(cfg)  # expected failures are InputErrors: one line, exit 2 (cli_main)
    print(
        f"wrote {card['pairs']} pairs from {card['answers']} answers to {card['prompts']} prompts: {cfg.out_dir}"
    )
    return 0


def merge_lora(args: list[str]) -> int:
    from train.merge import MergeConfig, merge_lora

    print(f"wrote {merge_lora(parse_cli(MergeConfig, args, prog='sts-train merge-lora'))}")
    return 0


def adopt_axolotl(args: list[str]) -> int:
    from train.axolotl import AdoptConfig, adopt_axolotl

    print(f"wrote {adopt_axolotl(parse_cli(AdoptConfig, args, prog='sts-train adopt-axolotl'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
