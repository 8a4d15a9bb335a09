"""Stage 4: continual pre-training and multitask SFT (`sts-train cpt`, `sts-train sft`).

    sts-train sft --config train/configs/sft_lfm2_350m.yaml --model runs/lfm2-350m-speech --data.shards runs/encoded

or from Python:

    from train import TrainConfig, train
    last_checkpoint = train(TrainConfig(stage="sft", model="runs/lfm2-350m-speech", shards=["runs/encoded"]))

Modules: `config` (TrainConfig), `contract` (the corpus's codec against sts_vocab.json, checked first),
`data` (cpt/sft documents from corpus shards and text), `rows` (record batches -> documents), `token_cache`
(self-describing tokenized shards), `packing` (weighted mixture + packing, resumable by index),
`loss` (chunked/fused linear cross-entropy), `trainer` (the loop), `runtime` (one process, or many
through accelerate), `checkpoint`, `metrics`, `gen_eval` (generation metrics at each eval, on the
fixed `dev_subset`, scored by `gen_metrics`), `axolotl` (export), `cli`, `testing` (tiny shards and configs). Importing `train` is cheap: torch and transformers load when a function runs.
"""

import importlib

_EXPORTS = {"TrainConfig": "train.config", "train": "train.trainer", "export_axolotl": "train.axolotl"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
