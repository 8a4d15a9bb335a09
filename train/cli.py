"""`sts-train`: continual pre-training or multitask SFT of an LM extended with speech tokens.

    sts-train cpt --config train/configs/cpt_lfm2_350m.yaml --model runs/lfm2-350m-speech --shards runs/encoded
    sts-train sft --config train/configs/sft_lfm2_350m.yaml --model runs/cpt/checkpoint-0020000 --shards runs/encoded
    accelerate launch --config_file train/configs/accelerate/fsdp.yaml -m train.cli sft --config ...
    sts-train sft --config ... --export-axolotl runs/axolotl-sft      # write axolotl YAML + dataset, no training

Rerunning the same command resumes from the newest checkpoint in --out-dir. All options: `sts-train sft --help`.
A corpus whose recorded codec, frame rate or codebook differs from the model's sts_vocab.json, an
unencoded corpus, or an out-of-range code stops the command with one line naming the files (and the
shard, row id and value); `--allow-codec-name-mismatch`, `--allow-unrecorded-codec` and
`--skip-invalid-codes` are the explicit ways past them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from sts.config import parse_cli
from sts.vocab import VocabError
from train.config import TrainConfig
from train.contract import CorpusContractError
from train.rows import RowError

USAGE = "usage: sts-train {cpt,sft} [--config FILE.yaml] [--OPTION VALUE ...]   (sts-train sft --help)"


def main(args: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] not in ("cpt", "sft"):
        print(USAGE, file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        return 0 if args and args[0] in ("-h", "--help") else 2
    stage, rest = args[0], args[1:]
    cfg = parse_cli(TrainConfig, rest, prog=f"sts-train {stage}")
    cfg.stage = stage
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(cfg, stage)
    except (CorpusContractError, VocabError, RowError, FileNotFoundError) as err:
        print(f"sts-train {stage}: error: {err}", file=sys.stderr)  # one line; the data is at fault
        return 2


def _run(cfg: TrainConfig, stage: str) -> int:
    if cfg.export_axolotl is not None:
        from transformers import AutoTokenizer

        from sts.vocab import SpeechVocab
        from train.axolotl import export_axolotl
        from train.data import build_doc_stores

        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        stores = build_doc_stores(cfg, tokenizer, SpeechVocab.load(cfg.model))
        path = export_axolotl(cfg, *stores, cfg.export_axolotl)
        print(f"wrote {path}")
        return 0
    from train.trainer import TrainingDiverged, train

    try:
        last = train(cfg)
    except TrainingDiverged as err:
        print(f"sts-train {stage}: stopped: {err}", file=sys.stderr)
        return 1
    print(f"done: {last}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
