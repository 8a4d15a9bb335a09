"""Export a training run for axolotl: its YAML plus the pre-tokenized dataset, without importing axolotl.

    sts-train sft --config train/configs/sft_lfm2_350m.yaml --export-axolotl runs/axolotl-sft
    axolotl train runs/axolotl-sft/axolotl.yaml        # in axolotl's own environment

axolotl pins its own transformers (0.19 pins 5.16.1), so it lives in another environment: this writes
files only. Per axolotl's "custom pre-tokenized dataset" convention the dataset has exactly the
columns `input_ids`, `attention_mask`, `labels` (one sample or document per row, labels -100 where no
loss, aligned with input_ids: the model shifts them), and the YAML gives no `type:` for it. axolotl
packs rows itself (`sample_packing: true`). cpt documents longer than seq_len are cut into pieces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from sts.tasks import IGNORE_INDEX
from train.config import TrainConfig
from train.token_cache import DocStore

AXOLOTL_COLUMNS = ("input_ids", "attention_mask", "labels")


def store_rows(store: DocStore, seq_len: int, order=None):
    """Rows of the pre-tokenized dataset: `[L]` int32 input_ids, int8 attention_mask, int64 labels.

    order: document indices to write (default: each document once, in store order).
    """
    for d in range(store.num_docs) if order is None else order:
        ids, labels = store.doc(d)
        for start in range(0, len(ids), seq_len):
            piece_ids = ids[start : start + seq_len].astype(np.int32)
            piece_labels = labels[start : start + seq_len].astype(np.int64)
            if store.labels is None:
                piece_labels = piece_labels.copy()
                piece_labels[0] = IGNORE_INDEX
            yield {
                "input_ids": piece_ids.tolist(),
                "attention_mask": [1] * len(piece_ids),
                "labels": piece_labels.tolist(),
            }


def axolotl_yaml(cfg: TrainConfig, data_dir: Path, with_eval: bool = True) -> dict:
    """An axolotl config equivalent to `cfg` (what axolotl has an option for)."""
    out = {
        "base_model": cfg.model,
        "datasets": [{"path": str(data_dir / "train.parquet"), "ds_type": "parquet", "split": "train"}],
        "sequence_len": cfg.seq_len,
        "sample_packing": cfg.packing,
        "micro_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "max_steps": cfg.max_steps,
        "learning_rate": cfg.lr,
        "lr_scheduler": "cosine",
        "cosine_min_lr_ratio": cfg.min_lr_ratio,
        "warmup_steps": cfg.warmup_steps,
        "optimizer": "adamw_torch_fused",
        "adam_beta1": cfg.betas[0],
        "adam_beta2": cfg.betas[1],
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "bf16": "auto",
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "save_steps": cfg.save_every,
        "eval_steps": cfg.eval_every or None,
        "logging_steps": cfg.log_every,
        "seed": cfg.seed,
        "output_dir": str(Path(cfg.out_dir) / "axolotl-out"),
    }
    if with_eval:
        out["test_datasets"] = [
            {"path": str(data_dir / "eval.parquet"), "ds_type": "parquet", "split": "train"}
        ]
    if cfg.lora_r > 0:
        out.update(
            adapter="lora", lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_target_modules=cfg.lora_targets
        )
    return {k: v for k, v in out.items() if v is not None}


def export_axolotl(cfg: TrainConfig, train_store: DocStore, eval_store: DocStore, out_dir: Path) -> Path:
    """Write `out_dir/axolotl.yaml`, `out_dir/data/{train,eval}.parquet`; returns the YAML path.

    The train rows follow the config's mixture: one epoch of documents drawn with replacement by group
    weight, as the trainer draws them (axolotl has no per-source weights for pre-tokenized data); the
    eval rows are every held-out document once.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from train.packing import PackedStream
    from train.trainer import mixture_weights

    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("input_ids", pa.list_(pa.int32())),
            ("attention_mask", pa.list_(pa.int8())),
            ("labels", pa.list_(pa.int64())),
        ]
    )
    weights = mixture_weights(cfg, train_store.group_names)
    probs = PackedStream(train_store, weights, cfg.seq_len, cfg.seed).doc_probs
    order = np.random.default_rng(cfg.seed).choice(train_store.num_docs, size=train_store.num_docs, p=probs)
    for name, store, docs in (("train", train_store, order), ("eval", eval_store, None)):
        tmp = data_dir / f".{name}.parquet.tmp"
        with pq.ParquetWriter(tmp, schema) as writer:  # streamed: a large export never sits in memory
            rows = []
            for row in store_rows(store, cfg.seq_len, docs):
                rows.append(row)
                if len(rows) == 4096:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows = []
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        tmp.replace(data_dir / f"{name}.parquet")
    path = out_dir / "axolotl.yaml"
    path.write_text(
        yaml.safe_dump(axolotl_yaml(cfg, data_dir.resolve(), eval_store.num_docs > 0), sort_keys=False)
    )
    return path
