"""Stage 4: continual pre-training and multitask SFT (`sts-train cpt`, `sts-train sft`).

    sts-train sft --config train/configs/sft_lfm2_350m.yaml --model runs/lfm2-350m-speech --data.shards runs/encoded

or from Python:

    from sts.config import make_config
    from train import TrainConfig, train
    last_checkpoint = train(make_config(TrainConfig, model="runs/lfm2-350m-speech", data__shards=["runs/encoded"]))

Modules: `config` (TrainConfig), `contract` (the corpus's codec against sts_vocab.json, checked first),
`data` (cpt/sft documents from corpus shards and text), `rows` (record batches -> documents), `token_cache`
(self-describing tokenized shards), `packing` (weighted mixture + packing, resumable by index),
`loss` (chunked/fused linear cross-entropy), `trainer` (the loop), `runtime` (one process, or many
through accelerate), `checkpoint`, `logger` (metric lines, metrics.jsonl, tensorboard/wandb), `gen_eval` (generation metrics at each eval, on the
fixed `dev_subset`, scored by `gen_metrics`), `axolotl` (export), `cli`, `testing` (tiny shards and configs). Importing `train` is cheap: torch and transformers load when a function runs.
"""

from sts.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__, {"TrainConfig": "train.config", "train": "train.trainer", "export_axolotl": "train.axolotl"}
)
