"""The training configuration: one typed, nested config for `sts-train cpt`, `sts-train sft` and `sts-train dpo`.

    sts-train sft --config train/configs/sft_lfm2_350m.yaml --optim.lr 1e-4 --data.shards runs/encoded

Every field is a flag (`--optim.lr`) and a YAML key (`optim: {lr: ...}`), checked the same way
(`sts.config`); the run folder keeps the resolved config as `train_config.yaml`. Groups: `data`
(what is trained on), `cpt` / `sft` / `dpo` (what only that stage reads; another stage refuses them),
`optim`, `lora`, `eval` (held-out loss and generation metrics), `log` (metric lines and checkpoints)
and `runtime` (precision, kernels, launch). The why of the defaults is in docs/training.md. Files
and flags of the old flat layout (`lr`, `--gen-eval-samples`) are read under their new names with a
warning (`RENAMED_KEYS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import tyro
from annotated_types import Ge, Gt, Interval

from sts.config import ConfigError, Renamed, WhenOff, check_config
from sts.generation.request import Sampling
from sts.tasks import TASK_NAMES, S2STFormat

CONFIG_DIR = Path(__file__).parent / "configs"
"""The shipped YAML configs (installed with the package)."""

Stage = Literal["cpt", "sft", "dpo"]


def default_task_weights() -> dict[str, float]:
    return {"s2st": 1.0, "asr": 0.5, "tts": 0.5, "s2tt": 0.25, "t2tt": 0.25}


@dataclass
class DataArgs:
    """What is trained on (every stage)."""

    shards: list[str] = field(default_factory=list)
    """Encoded corpus shards (Parquet files or folders; dpo: only for the gen eval)."""
    seq_len: Annotated[int, Ge(8)] = 4096
    """Tokens per training sequence (dpo: the longest prompt + answer kept)."""
    packing: Annotated[
        bool, WhenOff("one document per sequence, padded to seq_len (cpt: cut at seq_len)")
    ] = True
    """Pack several documents into one sequence (attention stays within each)."""
    overlong: Literal["drop", "trim"] = "drop"
    """Samples longer than seq_len: drop them or keep their first seq_len tokens (counted)."""
    eval_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.02
    """Share of rows (by a hash of their id) held out for the eval loss."""
    tokenize_workers: Annotated[int, Ge(1)] = 1
    """Processes that tokenize corpus rows."""
    cache_dir: Path | None = None
    """Token cache folder; default out_dir/token_cache (reused by reruns)."""
    allow_codec_name_mismatch: bool = False
    """Train although a corpus card names another codec of the same rate and size."""
    allow_unrecorded_codec: bool = False
    """Train on shards without a corpus.json "encode" record (only the code range is checked)."""
    skip_invalid_codes: bool = False
    """Skip and count rows with an out-of-range speech code instead of stopping."""


@dataclass
class CptArgs:
    """Continual pre-training: speech-only sequences mixed with text (cpt only)."""

    text_files: list[str] = field(default_factory=list)
    """Local UTF-8 text files; one document per blank-line-separated block."""
    text_datasets: list[str] = field(default_factory=list)
    """Hugging Face text datasets as PATH:CONFIG:SPLIT, streamed."""
    text_column: str = "text"
    """Column of text_datasets that holds the text."""
    text_max_docs: Annotated[int, Ge(1)] = 10_000
    """At most this many documents per text dataset."""
    speech_weight: Annotated[float, Interval(ge=0, le=1)] = 0.7
    """Fraction of sampled documents that are speech-only."""


@dataclass
class SftArgs:
    """The multitask mixture (sft; dpo decodes and formats text pairs with it too)."""

    task_weights: dict[str, float] = field(default_factory=default_task_weights)
    """Sampling weight per task (both directions); 0 leaves a task out."""
    loss_mask: Literal["assistant", "full"] = "assistant"
    """Loss on the assistant turn only, or on the whole sequence."""
    s2st_format: S2STFormat = "text-first"
    """s2st answer: direct, text-first (transcript, translation, speech) or translation-first."""


@dataclass
class DpoArgs:
    """Preference optimization on pairs (dpo only)."""

    pairs: list[str] = field(default_factory=list)
    """Pair folders from `sts-train dpo-pairs`, or Parquet/JSONL text pairs."""
    beta: Annotated[float, Gt(0)] = 0.1
    """sigmoid: DPO's beta; ipo: IPO's tau."""
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """sigmoid = DPO (Rafailov et al. 2023); ipo = IPO (Azar et al. 2023)."""
    reference: Literal["model", "precomputed"] = "model"
    """Reference log-probs: a frozen copy of the model, or one pass before training."""


@dataclass
class OptimArgs:
    """Optimizer, schedule and batch."""

    batch_size: Annotated[int, Ge(1)] = 8
    """Sequences per device per micro-step (dpo: pairs)."""
    grad_accum: Annotated[int, Ge(1)] = 1
    """Micro-steps per optimizer step."""
    max_steps: Annotated[int, Ge(1)] = 10_000
    """Optimizer steps (the cosine schedule ends here)."""
    lr: Annotated[float, Gt(0)] = 2e-4
    """Peak learning rate."""
    min_lr_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.1
    """The cosine schedule decays to lr * min_lr_ratio."""
    warmup_steps: Annotated[int, Ge(0)] = 200
    """Linear warm-up steps."""
    weight_decay: Annotated[float, Ge(0)] = 0.01
    """AdamW weight decay (not on norms, biases, embeddings)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    max_grad_norm: Annotated[float, Ge(0)] = 1.0
    """Gradient clipping norm (0: off)."""
    max_bad_steps: Annotated[int, Ge(1)] = 10
    """Stop after this many NaN/inf steps in a row (each is skipped)."""


@dataclass
class LoraArgs:
    """LoRA adapters (peft); r = 0 trains all weights."""

    r: Annotated[int, Ge(0)] = 0
    """LoRA rank; 0: full training."""
    alpha: Annotated[int, Ge(1)] = 32
    """LoRA alpha."""
    targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "w1", "w2", "w3"]
    )
    """Module names LoRA adapts."""
    train_speech_rows: Annotated[
        bool, WhenOff("adapters only: speech and marker rows frozen (refused while they are untrained)")
    ] = True
    """Also train the speech and marker rows of the embedding and output layer (PEFT trainable
    tokens, `train.lora`); off is refused while those rows are untrained."""


@dataclass
class EvalArgs:
    """Held-out loss and generation metrics (train.gen_eval; docs/training.md: cost)."""

    every: Annotated[int, Ge(0)] = 500
    """Steps between evals (0: never)."""
    batches: Annotated[int, Ge(1)] = 20
    """Batches per task in one eval-loss pass."""
    generate: Annotated[bool, WhenOff("no decoding at evals: the eval loss only")] = True
    """Decode a fixed dev subset at each eval: loop/end rates, chrF++, ASR-chrF++."""
    samples: Annotated[int, Ge(1)] = 4
    """Prompts per task group in the dev subset."""
    tasks: list[str] | None = None
    """sft tasks decoded; None: every task with a positive weight."""
    max_new_tokens: Annotated[int, Ge(1)] = 1000
    """Cap on an output's budget (2x the reference + a margin below it)."""
    batch_size: Annotated[int, Ge(1)] = 32
    """Prompts per generate call."""
    sampling: Sampling = field(default_factory=lambda: Sampling(do_sample=False, top_p=0.95))
    """How the dev subset is decoded (greedy; sampling is seeded with `seed` at every eval)."""
    fast: Annotated[bool, WhenOff("decode with a dynamic KV cache, no CUDA graphs (slower)")] = True
    """Static KV cache + CUDA graphs for the decoding (static cache only on a CPU)."""
    asr: str = "auto"
    """ASR for ASR-chrF++: auto (offline Whisper first), none, or a Whisper name/path."""
    codec: str | None = None
    """Codec that turns codes into audio for the ASR; None: the one sts_vocab.json names."""
    guidance_scale: Annotated[float, Gt(0)] = 1.0
    """Classifier-free guidance of speech outputs (1: off)."""
    early_stop_loop_rate: Annotated[float | None, Interval(ge=0, lt=1)] = None
    """Stop when the speech loop rate is above this and rising; None: never."""
    early_stop_patience: Annotated[int, Ge(1)] = 3
    """Evals over which the loop rate must rise before an early stop."""


@dataclass
class LogArgs:
    """Metric lines and checkpoints."""

    every: Annotated[int, Ge(1)] = 10
    """Steps between metric lines."""
    logger: Literal["auto", "none", "tensorboard", "wandb"] = "auto"
    """Metric logger besides stdout and metrics.jsonl (auto: tensorboard when installed)."""
    save_every: Annotated[int, Ge(1)] = 1000
    """Steps between checkpoints (the last step is always saved)."""
    keep_last: Annotated[int, Ge(0)] = 3
    """Checkpoints kept (0: all)."""


@dataclass
class RuntimeArgs:
    """Precision, kernels and launch."""

    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (less memory, ~25 % slower)."""
    loss_impl: Literal["auto", "naive", "chunked", "liger"] = "auto"
    """Cross-entropy: auto = liger on GPU when installed, else chunked; naive = the model's own."""
    ce_chunk_tokens: Annotated[int, Ge(1)] = 4096
    """Tokens per chunk of the chunked cross-entropy."""
    compile: bool = False
    """torch.compile each decoder layer (GPU)."""
    attn_implementation: str | None = None
    """Passed to from_pretrained (flash_attention_2, sdpa); None: transformers' default."""
    distributed: Literal["auto", "accelerate", "none"] = "auto"
    """auto: accelerate when started with several processes; accelerate forces it."""


STAGE_GROUPS: dict[str, tuple[str, ...]] = {"cpt": ("cpt",), "sft": ("sft", "dpo"), "dpo": ("dpo",)}
"""The stage-specific groups and the stages that read them."""


def _gen_eval_temperature(value: float) -> dict:
    """The old `gen_eval_temperature` (0: greedy, > 0: top-p 0.95 at that temperature)."""
    return {"eval.sampling.do_sample": value > 0} | (
        {"eval.sampling.temperature": value} if value > 0 else {}
    )


@dataclass
class TrainConfig:
    """Continual pre-training (cpt), multitask SFT (sft) or preference optimization (dpo) of an LM
    extended with speech tokens."""

    model: str = "runs/lfm2-350m-speech"
    """Model folder from `sts-extend-tokenizer`, or a checkpoint."""
    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/train")
    """Run folder: checkpoints, metrics.jsonl, train_config.yaml, token_cache/."""
    stage: Stage = "sft"
    """cpt, sft or dpo (the `sts-train` sub-command sets it)."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the data order and the model-side RNG."""
    resume: Annotated[
        bool, WhenOff("start at step 0 from --model's weights, ignoring the checkpoints in out_dir")
    ] = True
    """Continue from the newest intact checkpoint in out_dir (it must hold the run asked for:
    `RESUME_RULES`, `train.resume_check`)."""
    override: bool = False
    """Resume although settings that alter the data or the model changed (recorded in the run)."""
    export_axolotl: Path | None = None
    """Write an axolotl YAML and the tokenized dataset here instead of training."""
    data: DataArgs = field(default_factory=DataArgs)
    cpt: CptArgs = field(default_factory=CptArgs)
    sft: SftArgs = field(default_factory=SftArgs)
    dpo: DpoArgs = field(default_factory=DpoArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    log: LogArgs = field(default_factory=LogArgs)
    runtime: RuntimeArgs = field(default_factory=RuntimeArgs)

    RENAMED_KEYS: ClassVar[dict[str, Renamed]] = {
        **{k: f"data.{k}" for k in ("shards", "seq_len", "packing", "overlong", "eval_fraction", "tokenize_workers",
                                     "cache_dir", "allow_codec_name_mismatch", "allow_unrecorded_codec",
                                     "skip_invalid_codes")},
        **{k: f"cpt.{k}" for k in ("text_files", "text_datasets", "text_column", "text_max_docs", "speech_weight")},
        **{k: f"sft.{k}" for k in ("task_weights", "loss_mask", "s2st_format")},
        "pairs": "dpo.pairs", "dpo_beta": "dpo.beta", "dpo_loss": "dpo.loss", "dpo_reference": "dpo.reference",
        **{k: f"optim.{k}" for k in ("batch_size", "grad_accum", "max_steps", "lr", "min_lr_ratio", "warmup_steps",
                                      "weight_decay", "betas", "max_grad_norm", "max_bad_steps")},
        "lora_r": "lora.r", "lora_alpha": "lora.alpha", "lora_targets": "lora.targets",
        "eval_every": "eval.every", "eval_batches": "eval.batches", "gen_eval": "eval.generate",
        **{f"gen_eval_{k}": f"eval.{k}" for k in ("samples", "tasks", "max_new_tokens", "batch_size", "fast", "asr",
                                                   "codec", "guidance_scale")},
        "gen_eval_temperature": _gen_eval_temperature,
        "early_stop_loop_rate": "eval.early_stop_loop_rate", "early_stop_patience": "eval.early_stop_patience",
        "log_every": "log.every", "logger": "log.logger", "save_every": "log.save_every", "keep_last": "log.keep_last",
        **{k: f"runtime.{k}" for k in ("precision", "gradient_checkpointing", "loss_impl", "ce_chunk_tokens",
                                        "compile", "attn_implementation", "distributed")},
    }  # fmt: skip
    """Old flat names (before the groups) -> their dotted names, for old files and flags."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.optim.betas = tuple(self.optim.betas)
        check_config(self)
        unknown = set(self.sft.task_weights) - set(TASK_NAMES)
        if unknown:
            raise ConfigError(
                f"names unknown task(s) {sorted(unknown)}; tasks are {TASK_NAMES}", key="sft.task_weights"
            )
        if any(w < 0 for w in self.sft.task_weights.values()):
            raise ConfigError(f"must be >= 0, got {self.sft.task_weights}", key="sft.task_weights")
        unknown = set(self.eval.tasks or []) - set(TASK_NAMES)
        if unknown:
            raise ConfigError(
                f"names unknown task(s) {sorted(unknown)}; tasks are {TASK_NAMES}", key="eval.tasks"
            )
        if self.eval.early_stop_loop_rate is not None and not self.eval.generate:
            raise ConfigError(
                "needs eval.generate (the loop rate comes from it)", key="eval.early_stop_loop_rate"
            )
        for group, stages in STAGE_GROUPS.items():
            if self.stage not in stages:
                changed = [f.name for f in fields(getattr(self, group)) if _differs(self, group, f.name)]
                if changed:
                    raise ConfigError(
                        f"applies to {' and '.join(stages)} only, not to stage {self.stage}",
                        key=f"{group}.{changed[0]}",
                    )

    @property
    def token_cache_dir(self) -> Path:
        return Path(self.data.cache_dir) if self.data.cache_dir else self.out_dir / "token_cache"


_DEFAULTS = {"cpt": CptArgs(), "sft": SftArgs(), "dpo": DpoArgs()}


def _differs(cfg: TrainConfig, group: str, name: str) -> bool:
    return getattr(getattr(cfg, group), name) != getattr(_DEFAULTS[group], name)


def hidden_groups(stage: str) -> tuple[str, ...]:
    """The groups (and `stage`) that `sts-train STAGE` neither shows nor takes."""
    return ("stage", *(g for g, stages in STAGE_GROUPS.items() if stage not in stages))


RESUME_RULES: dict[str, str] = {
    # what the run trains: refused on resume (`--override` forces it, and the run records that)
    "model": "refuse",  # the base the run started from (compared by content: a moved copy is the same)
    "stage": "refuse",
    "seed": "refuse",  # the data order
    "data": "refuse",  # shards (compared by the files they name: a moved corpus is the same), seq_len, ...
    "data.allow_codec_name_mismatch": "warn",
    "data.allow_unrecorded_codec": "warn",
    "data.tokenize_workers": "warn",
    "data.cache_dir": "warn",
    "cpt": "refuse",
    "sft": "refuse",
    "dpo": "refuse",
    "optim": "refuse",  # the optimizer and its schedule
    "optim.max_steps": "warn",  # the cosine schedule then ends at the new max_steps
    "optim.max_bad_steps": "warn",
    "lora": "refuse",
    # how long, how often, how fast, how it is watched: allowed with a warning that lists them
    "eval": "warn",
    "log": "warn",
    "runtime": "warn",
    # not part of the run
    "out_dir": "ignore",
    "resume": "ignore",
    "override": "ignore",
    "export_axolotl": "ignore",
}
"""What a resume does with each changed setting, by dotted key or by its group (the longest matching
dotted prefix decides: "optim" covers "optim.lr", "optim.max_steps" overrides it).
"refuse": it changes the data, the model or the optimization the checkpoints hold (model, data and
tasks, tokenization, sequence length, LoRA shape, the optimizer and its schedule): resuming would
continue one run under another's record, so it is refused naming each field unless `--override`.
"warn": safe between restarts (how long, logging, evaluation and save cadence, speed and memory
knobs): allowed with a warning listing them. "ignore": not a property of the run. A key with no rule
is refused (tests/test_resume_check.py checks that every field has one)."""


def shipped_configs() -> list[Path]:
    """Every YAML training config shipped with the package."""
    return sorted(CONFIG_DIR.glob("*.yaml"))
