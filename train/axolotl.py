"""Export a training run for axolotl: its YAML plus the pre-tokenized dataset, without importing axolotl.

    sts-train sft --config train/configs/sft_lfm2_350m.yaml --export-axolotl runs/axolotl-sft
    axolotl train runs/axolotl-sft/axolotl.yaml        # in axolotl's own environment, from any folder
    sts-train adopt-axolotl runs/sft/axolotl --from runs/axolotl-sft   # sts_vocab.json & co. into its output

axolotl pins its own transformers (0.19 pins 5.16.1), so it lives in another environment: this writes
files only. Per axolotl's "custom pre-tokenized dataset" convention the dataset has exactly the
columns `input_ids`, `attention_mask`, `labels` (one sample or document per row, labels -100 where no
loss, aligned with input_ids: the model shifts them), and the YAML gives no `type:` for it. cpt
documents longer than seq_len are cut into pieces.

What the YAML states rather than leaves to axolotl's defaults (each with a comment in the file):
- dtype: `bf16`/`fp16` explicitly from `--runtime.precision` (auto: bf16 when this machine has a CUDA GPU with
  bf16, else fp32). axolotl's `bf16: auto` turns fp16 on where bf16 is missing, e.g. on a CPU,
  where training then fails.
- paths: `base_model`, the datasets, `dataset_prepared_path` and `output_dir` are absolute, so
  `axolotl train` works from any folder (axolotl reads relative ones against the working folder).
- packing: axolotl's `sample_packing` keeps packed samples apart only with an attention backend that
  does (axolotl 0.19 `attn_decontaminates_packing`: flash_attention_2/3/4, flex_attention, xformers,
  sage, sdpa, eager); the export sets `attn_implementation` (`--runtime.attn-implementation`, default sdpa)
  and turns packing off, saying why, for any other backend. LFM2's short-conv layers run
  axolotl's PyTorch path (it refuses causal-conv1d for LFM2), which lets a packed sample's first two
  tokens see the previous sample's last two, as in `train.packing` without that kernel.
- `sts_vocab.json`, `sts_tasks.json`, `sts_decoding.json` (`sts.model_files.DECODING_FILES`): axolotl
  does not copy them into its output; the export writes them and `sts-train adopt-axolotl OUTPUT
  --from EXPORT` checks the output's tokenizer against the vocabulary and copies them,
  after which `sts-infer` and vLLM load the output like any checkpoint (a LoRA output: merge it with
  `sts-train merge-lora` first).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro
import yaml

from sts.decoding_info import write_decoding_info
from sts.errors import InputError
from sts.io import remove_stale_temps, temp_path, write_text_atomic
from sts.llasa_layout import MARKERS
from sts.model_files import copy_decoding_files
from sts.paths import absolute_if_local
from sts.tasks import IGNORE_INDEX, save_task_formats
from sts.vocab import VOCAB_FILE, SpeechVocab, VocabError
from train.config import TrainConfig
from train.data import list_shards
from train.packing import PackedStream
from train.token_cache import DocStore

log = logging.getLogger(__name__)

AXOLOTL_COLUMNS = ("input_ids", "attention_mask", "labels")
PACKING_SAFE_ATTENTION = frozenset(
    {"flash_attention_2", "flash_attention_3", "flash_attention_4", "flash_attention_torch",
     "flex_attention", "xformers", "sage", "sdpa", "eager"}
)  # fmt: skip
"""Backends axolotl 0.19 keeps packed samples apart with (`attn_decontaminates_packing` in its config schema)."""
DEFAULT_ATTENTION = "sdpa"
"""PyTorch's own attention: keeps packed samples apart in axolotl and runs on CPU and GPU alike."""


class AxolotlError(InputError, ValueError):
    """An axolotl output that cannot become an sts checkpoint; the message names the folder."""


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


def export_dtype(cfg: TrainConfig) -> str:
    """ "bf16" or "fp32": `cfg.runtime.precision`, with auto meaning bf16 on a CUDA GPU that has it (this machine)."""
    if cfg.runtime.precision != "auto":
        return cfg.runtime.precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def axolotl_yaml(cfg: TrainConfig, export_dir: Path, with_eval: bool = True) -> tuple[dict, list[str]]:
    """An axolotl config equivalent to `cfg` (what axolotl has an option for), and comment lines for it."""
    export_dir = Path(export_dir).resolve()
    data_dir = export_dir / "data"
    dtype = export_dtype(cfg)
    attention = cfg.runtime.attn_implementation or DEFAULT_ATTENTION
    packing = cfg.data.packing and attention in PACKING_SAFE_ATTENTION
    comments = [
        f"Written by `sts-train {cfg.stage} --export-axolotl`; run `axolotl train {export_dir / 'axolotl.yaml'}`",
        "in axolotl's own environment (from any folder: every path is absolute), then",
        f"`sts-train adopt-axolotl {Path(cfg.out_dir).resolve() / 'axolotl'} --from {export_dir}`.",
        f"dtype: {dtype} (from --runtime.precision {cfg.runtime.precision}); bf16/fp16 are explicit because axolotl's",
        "`bf16: auto` turns fp16 on where bf16 is missing (a CPU), and training then fails.",
    ]
    if packing:
        comments += [
            f"sample_packing with attn_implementation {attention}: axolotl keeps packed samples apart",
            "(block-diagonal attention); LFM2's short-conv still sees 2 tokens of the previous sample.",
        ]
    elif cfg.data.packing:
        comments += [
            f"sample_packing is off: attn_implementation {attention} would let packed samples attend to",
            "each other (axolotl keeps them apart only with flash/flex/xformers/sage/sdpa/eager).",
        ]
    out = {
        "base_model": absolute_if_local(cfg.model),
        "datasets": [{"path": str(data_dir / "train.parquet"), "ds_type": "parquet", "split": "train"}],
        "dataset_prepared_path": str(export_dir / "prepared"),
        "sequence_len": cfg.data.seq_len,
        "sample_packing": packing,
        "attn_implementation": attention,
        "micro_batch_size": cfg.optim.batch_size,
        "gradient_accumulation_steps": cfg.optim.grad_accum,
        "max_steps": cfg.optim.max_steps,
        "learning_rate": cfg.optim.lr,
        "lr_scheduler": "cosine",
        "cosine_min_lr_ratio": cfg.optim.min_lr_ratio,
        "warmup_steps": cfg.optim.warmup_steps,
        "optimizer": "adamw_torch_fused" if dtype == "bf16" else "adamw_torch",
        "adam_beta1": cfg.optim.betas[0],
        "adam_beta2": cfg.optim.betas[1],
        "weight_decay": cfg.optim.weight_decay,
        "max_grad_norm": cfg.optim.max_grad_norm,
        "bf16": dtype == "bf16",
        "fp16": False,
        "tf32": False,
        "gradient_checkpointing": cfg.runtime.gradient_checkpointing,
        "save_steps": cfg.log.save_every,
        "eval_steps": cfg.eval.every or None,
        "logging_steps": cfg.log.every,
        "seed": cfg.seed,
        "output_dir": str(Path(cfg.out_dir).resolve() / "axolotl"),
    }
    if with_eval:
        out["test_datasets"] = [
            {"path": str(data_dir / "eval.parquet"), "ds_type": "parquet", "split": "train"}
        ]
    if cfg.lora.r > 0:
        out.update(
            adapter="lora", lora_r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_target_modules=cfg.lora.targets
        )
    return {k: v for k, v in out.items() if v is not None}, comments


def export_axolotl(cfg: TrainConfig, train_store: DocStore, eval_store: DocStore, out_dir: Path) -> Path:
    """Write `out_dir/axolotl.yaml`, `out_dir/data/{train,eval}.parquet` and the files that say how
    the trained model is decoded (`sts.model_files.DECODING_FILES`: the model's `sts_vocab.json`, the
    data's `sts_decoding.json`, sft's `sts_tasks.json`), as a `sts-train` checkpoint would hold them;
    returns the YAML path.

    The train rows follow the config's mixture: one epoch of documents drawn with replacement by group
    weight, as the trainer draws them (axolotl has no per-source weights for pre-tokenized data); the
    eval rows are every held-out document once.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

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
    probs = PackedStream(train_store, weights, cfg.data.seq_len, cfg.seed).doc_probs
    order = np.random.default_rng(cfg.seed).choice(train_store.num_docs, size=train_store.num_docs, p=probs)
    for name, store, docs in (("train", train_store, order), ("eval", eval_store, None)):
        tmp = temp_path(data_dir / f"{name}.parquet")
        remove_stale_temps(data_dir, f"{name}.parquet")
        with pq.ParquetWriter(tmp, schema) as writer:  # streamed: a large export never sits in memory
            rows = []
            for row in store_rows(store, cfg.data.seq_len, docs):
                rows.append(row)
                if len(rows) == 4096:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows = []
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        tmp.replace(data_dir / f"{name}.parquet")
    # axolotl's output lacks the files that say how it is decoded: adopt-axolotl takes them from here
    SpeechVocab.load(cfg.model).save(out_dir)
    write_decoding_info(out_dir, list_shards(cfg.data.shards))
    if cfg.stage == "sft":
        save_task_formats(out_dir, cfg.sft.s2st_format)
    config, comments = axolotl_yaml(cfg, out_dir, eval_store.num_docs > 0)
    frozen = frozen_speech_rows_warning(cfg)
    if frozen:
        log.warning("warning: %s", frozen)
        comments += ["WARNING: " + frozen]
    header = "".join(f"# {line}\n" for line in comments)
    return write_text_atomic(out_dir / "axolotl.yaml", header + yaml.safe_dump(config, sort_keys=False))


def frozen_speech_rows_warning(cfg: TrainConfig) -> str | None:
    """What to tell an export with LoRA from a model whose speech rows are untrained (None otherwise).

    axolotl's LoRA leaves the embedding and the output layer frozen (`sts-train`'s own LoRA trains the
    speech rows, `train.lora`), so from a fresh `sts-extend-tokenizer` model its output could never
    tell speech tokens apart."""
    from train.lora import stored_speech_rows_untrained

    if cfg.lora.r <= 0 or not stored_speech_rows_untrained(cfg.model, SpeechVocab.load(cfg.model)):
        return None
    return (
        f"LoRA in axolotl keeps the embedding and output layer frozen, and the speech rows of {cfg.model} "
        "are untrained (all one vector), so the trained model could not tell speech tokens apart; export "
        "with --lora.r 0 (full training), or train LoRA with sts-train, which trains those rows"
    )


@dataclass
class AdoptConfig:
    """Make an axolotl output folder an sts checkpoint: check its tokenizer, add sts_vocab.json & co."""

    checkpoint: tyro.conf.Positional[Path]
    """axolotl's `output_dir` (or one of its checkpoint-N folders): a model or LoRA adapter folder."""
    export_dir: Annotated[Path, tyro.conf.arg(name="from")]
    """The folder `--export-axolotl` wrote (holds sts_vocab.json and axolotl.yaml)."""


def adopt_axolotl(cfg: AdoptConfig) -> Path:
    """Check `cfg.checkpoint`'s tokenizer and weights against the export's `sts_vocab.json`, then copy
    the export's `DECODING_FILES` (`sts.model_files.copy_decoding_files`) and axolotl.yaml (as
    `axolotl_config.yaml`) there; returns the output folder.

    Raises `AxolotlError` when the folder holds no model or tokenizer, or they disagree with the
    vocabulary (other speech token ids, fewer embedding rows than speech ids).
    """
    from transformers import AutoTokenizer

    out, export = Path(cfg.checkpoint), Path(cfg.export_dir)
    if not export.is_dir():
        raise AxolotlError(f"{export}: no such folder (the folder --export-axolotl wrote)")
    vocab = SpeechVocab.load(export / VOCAB_FILE)
    if not (out / "config.json").is_file() and not (out / "adapter_config.json").is_file():
        what = "no such folder" if not out.is_dir() else "no model here"
        raise AxolotlError(
            f"{out}: {what} (no config.json or adapter_config.json); is it axolotl's output_dir?"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(out)
    except (OSError, ValueError) as err:
        raise AxolotlError(f"{out}: cannot load its tokenizer ({err})") from err
    try:  # the whole contract (`SpeechVocab.check_tokenizer`), as training and inference check it
        markers = MARKERS if vocab.speech_start_token in MARKERS else ()
        vocab.check_tokenizer(tokenizer, vocab_file=export / VOCAB_FILE, layout_markers=markers)
    except VocabError as err:
        problem = str(err).removeprefix(f"{export / VOCAB_FILE}: ")
        raise AxolotlError(f"{out}: its tokenizer disagrees with {export / VOCAB_FILE}: {problem}") from err
    if (out / "config.json").is_file():
        config = json.loads((out / "config.json").read_text())
        rows = (config.get("text_config") or config).get("vocab_size")
        if rows is not None and rows < vocab.speech_token_stop:
            raise AxolotlError(
                f"{out}: {rows} embedding rows cannot hold speech ids up to {vocab.speech_token_stop}"
            )
    copy_decoding_files(export, out)  # sts_vocab.json, and sts_tasks.json / sts_decoding.json when exported
    if (export / "axolotl.yaml").is_file():
        shutil.copyfile(export / "axolotl.yaml", out / "axolotl_config.yaml")
    return out
