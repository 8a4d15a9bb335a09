"""The training configuration: one typed dataclass for `sts-train cpt`, `sts-train sft` and `sts-train dpo`.

Every field becomes a flag (`--lr 3e-4`) and a YAML key; `--config train/configs/sft_lfm2_350m.yaml`
loads a shipped file first. The run folder keeps the resolved config as `train_config.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sts.config import ConfigError
from sts.tasks import TASK_NAMES, S2STFormat

CONFIG_DIR = Path(__file__).parent / "configs"
"""The shipped YAML configs (installed with the package)."""


def default_task_weights() -> dict[str, float]:
    return {"s2st": 1.0, "asr": 0.5, "tts": 0.5, "s2tt": 0.25, "t2tt": 0.25}


@dataclass
class TrainConfig:
    """Continual pre-training (cpt), multitask SFT (sft) or preference optimization (dpo) of an LM
    extended with speech tokens."""

    model: str = "runs/lfm2-350m-speech"
    """Model dir written by `sts-extend-tokenizer` (or a previous checkpoint): weights, tokenizer, sts_vocab.json."""
    out_dir: Path = Path("runs/train")
    """Run folder: checkpoint-NNNNNNN/ dirs, metrics.jsonl, train_config.yaml, token_cache/."""
    stage: Literal["cpt", "sft", "dpo"] = "sft"
    """Which data recipe: speech+text LM pre-training (cpt), the multitask chat mixture (sft), or
    preference pairs (dpo, `train.dpo`); the `sts-train cpt|sft|dpo` sub-command sets it."""

    # --- data -------------------------------------------------------------------------------------
    shards: list[str] = field(default_factory=list)
    """Encoded corpus shards (Parquet files or folders of them) with src_codes/tgt_codes columns. Before
    anything is tokenized, the `corpus.json` beside each shard must record (under "encode", written by
    `sts-encode`) the codec, frame rate and codebook size that `sts_vocab.json` of `model` names."""
    allow_codec_name_mismatch: bool = False
    """Train although a corpus card names another codec than sts_vocab.json, when frame rate and
    codebook size agree (a hub id and a local copy of the same checkpoint, say)."""
    allow_unrecorded_codec: bool = False
    """Train on shards whose folder has no corpus.json "encode" record (codes of unknown origin: only
    their range is checked)."""
    skip_invalid_codes: bool = False
    """Skip rows holding a speech code outside [0, num_speech_tokens) and count them (`skipped_invalid_codes`
    in the summary, the token-cache header and metrics.jsonl) instead of stopping at the first with its
    shard, row id and value."""
    text_files: list[str] = field(default_factory=list)
    """cpt: local UTF-8 text files; one document per blank-line-separated paragraph block."""
    text_datasets: list[str] = field(default_factory=list)
    """cpt: Hugging Face text datasets as `PATH:CONFIG:SPLIT` (e.g. `wikimedia/wikipedia:20231101.ja:train`), streamed."""
    text_column: str = "text"
    """Column of `text_datasets` that holds the document text."""
    text_max_docs: int = 10_000
    """cpt: at most this many documents per text dataset (streaming stops there)."""
    speech_weight: float = 0.7
    """cpt: fraction of sampled documents that are speech-only sequences (the rest is text)."""
    task_weights: dict[str, float] = field(default_factory=default_task_weights)
    """sft: sampling weight per task (s2st, s2tt, t2tt, asr, tts); 0 leaves a task out. Both directions are used."""
    loss_mask: Literal["assistant", "full"] = "assistant"
    """sft: loss on the assistant turn only, or on the whole sequence."""
    s2st_format: S2STFormat = "text-first"
    """sft: what the s2st answer writes before the target speech: `direct` (nothing), `text-first`
    (source transcript, translation: chain of modality) or `translation-first` (`sts.tasks`); written
    beside every checkpoint (`sts_tasks.json`) so that inference decodes the same format. Default
    text-first: at an equal budget it reproduced the demo's training speech at the codec ceiling
    where direct reached about half of it (benchmarks/s2st_ablation.py, benchmarks/RESULTS.md)."""
    overlong: Literal["drop", "trim"] = "drop"
    """Samples longer than seq_len: drop them, or keep their first seq_len tokens (both are counted)."""
    seq_len: int = 4096
    """Tokens per training sequence (dpo: the longest prompt + answer kept; longer pairs are dropped)."""
    packing: bool = True
    """Pack several documents/samples into one sequence (position ids restart per document, so attention
    layers do not look across documents; a document ends with the end token). False: one per sequence, padded."""
    tokenize_workers: int = 1
    """Processes that tokenize corpus rows (an sft sample takes ~1 ms: use many for a large corpus)."""
    cache_dir: Path | None = None
    """Token cache (self-describing .safetensors shards); default out_dir/token_cache. Reused by reruns."""
    eval_fraction: float = 0.02
    """Share of corpus rows (chosen by a hash of their id) held out for the per-task eval loss."""
    eval_every: int = 500
    """Steps between eval-loss passes (0: never)."""
    eval_batches: int = 20
    """Batches per task in one eval pass."""

    # --- generation metrics at each eval (train.gen_eval) -------------------------------------------
    gen_eval: bool = True
    """At every eval (`eval_every`), decode a fixed dev subset under the inference constraints and log
    loop rate, end-marker rate, length ratio, stray-id rate, chrF++ (text out) and ASR-chrF++ (speech
    out) per task group (`train.gen_eval`; cpt: speech continuation). On because it stays under ~10 %
    of training time at the shipped configs. ESTIMATE from DESIGN.md's H100 speeds (GPU measurement
    PENDING, benchmarks/RESULTS.md): sft_lfm2_350m trains 16 x 4096 = 65,536 tokens a step at
    86-109k tok/s = 0.60-0.76 s, so 500 steps between evals = 300-380 s. The default subset is
    4 prompts x 10 groups = 16 speech-out (one generate call) + 24 text-out (one call); a call lasts
    as many steps as its longest budget: <= 1,000 (speech) + ~220 (text) = ~1,220 steps in the worst
    case (nothing ends or loops). Fast path (static cache + CUDA graphs: 414 tok/s at batch 1 =
    2.4 ms a step; assumed <= 2x that at batch 32): 3-6 s, plus ASR of 16 clips on the GPU (2-5 s)
    = 5-11 s = 1.3-3.7 % (and a one-off graph capture per batch shape, the subset being fixed).
    Eager generate() (13 tok/s at batch 1, 414 at batch 32: ~77 ms a step whatever the batch):
    ~94 s = 25-31 %, too much, hence `gen_eval_fast`. cpt_lfm2_350m (eval every 1000 steps =
    600-760 s): 8 continuations, <= 1,000 steps, 3-5 s = < 1 %."""
    gen_eval_samples: int = 4
    """Prompts per task group in the dev subset (`s2st:ja-en`, `asr:en`, ...; cpt: `continue:speech_ja`),
    from the eval split (`eval_fraction`) when it has rows, else from the first corpus rows."""
    gen_eval_tasks: list[str] | None = None
    """sft tasks decoded (both directions each); None: every task with a positive `task_weights` entry."""
    gen_eval_max_new_tokens: int = 1000
    """Cap on an output's budget (20 s of speech). A budget is 2x the reference length + 1 s of speech
    or 16 text tokens, up to this cap; prompts whose reference + margin exceed it are not used."""
    gen_eval_batch_size: int = 32
    """Prompts per generate call (prompts of one output modality share calls, shortest first)."""
    gen_eval_temperature: float = 0.0
    """0: greedy. > 0: sampling at this temperature (top-p 0.95), seeded with `seed` at every eval, so
    two evals differ only by the model."""
    gen_eval_fast: bool = True
    """transformers' static KV cache + CUDA graphs for the decoding (`TransformersBackend(fast=True)`;
    414 vs 13 tok/s at batch 1 on an H100, DESIGN.md); on a CPU the static cache only. The subset is
    fixed, so the graphs captured at the first eval serve every later one. False: eager generate()."""
    gen_eval_asr: str = "auto"
    """ASR for ASR-chrF++ of speech outputs: auto (faster-whisper, offline Whisper weights first, else
    transformers' Whisper), none (no ASR-chrF++), or a Whisper model name/path."""
    gen_eval_codec: str | None = None
    """Codec that turns generated codes into audio for the ASR; None: the one `sts_vocab.json` names."""
    early_stop_loop_rate: float | None = None
    """Stop the run (final checkpoint, reason logged) when the speech-output loop rate of the gen eval
    is above this and has risen at each of the last `early_stop_patience` evals; None: never."""
    early_stop_patience: int = 3
    """Consecutive evals over which the speech loop rate must rise before an early stop."""

    gen_eval_guidance_scale: float = 1.0
    """Classifier-free guidance of speech outputs in the gen eval (`sts.generation.guidance`): > 1 pushes
    each step away from the unconditional prompt (the source speech left out; text input: the bare
    speech start); 1 is plain decoding. Not with the s2st chain formats."""

    # --- preference optimization (dpo: train.dpo) ---------------------------------------------------
    pairs: list[str] = field(default_factory=list)
    """dpo: preference pairs: folders or Parquet files written by `sts-train dpo-pairs` (token ids), or
    text pairs given by the user (Parquet / JSON lines with prompt, chosen, rejected; with src_lang and
    tgt_lang columns they become t2tt samples as SFT formats them). See `train.pair_data`. `shards`
    (optional in dpo) only feed the gen eval's dev subset; `eval_fraction` holds pairs out by id."""
    dpo_beta: float = 0.1
    """dpo: sigmoid loss: DPO's beta, how tightly the policy stays near the reference (0.1: the DPO
    paper's and TRL's default); ipo: IPO's tau, the per-token log-ratio margin aimed at being 1/(2 tau)."""
    dpo_loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """dpo: sigmoid = DPO (Rafailov et al. 2023, -log sigmoid(beta * margin of summed log-ratios));
    ipo = IPO (Azar et al. 2023) on log-ratios averaged per answer token, as TRL computes it."""
    dpo_reference: Literal["model", "precomputed"] = "model"
    """dpo: where the reference log-probs come from: a frozen copy of `model` beside the policy (with
    LoRA: the policy with its adapters switched off, no copy), or `precomputed`: one pass over every
    pair with the initial weights before the first step, kept in out_dir/reference_logps.npz (no
    second model: about half the weight memory of `model` without LoRA)."""

    # --- optimisation -----------------------------------------------------------------------------
    batch_size: int = 8
    """Sequences per device per micro-step (dpo: pairs, i.e. twice as many sequences)."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    max_steps: int = 10_000
    """Optimizer steps in the run (the cosine schedule ends here)."""
    lr: float = 2e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine schedule decays to lr * min_lr_ratio."""
    warmup_steps: int = 200
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to norms, biases and embeddings)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: off)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """bf16 autocast on GPU, fp32 on CPU under auto."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (less memory, ~25 % slower)."""
    loss_impl: Literal["auto", "naive", "chunked", "liger"] = "auto"
    """Cross-entropy: auto = liger's fused linear CE on GPU when installed, else chunked (never builds
    the [B, L, V] fp32 logits); naive = the model's own loss (reference)."""
    ce_chunk_tokens: int = 4096
    """Tokens per chunk of the chunked cross-entropy."""
    compile: bool = False
    """torch.compile each decoder layer (fusion; GPU; the first steps are slow while it compiles)."""
    attn_implementation: str | None = None
    """Passed to from_pretrained (e.g. flash_attention_2, sdpa); None: transformers' default."""
    lora_r: int = 0
    """LoRA rank (needs peft); 0 trains all weights."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "w1", "w2", "w3"]
    )
    """Module names LoRA adapts."""

    # --- bookkeeping ------------------------------------------------------------------------------
    seed: int = 0
    """Seed of the data order and the model-side RNG."""
    log_every: int = 10
    """Steps between metric lines."""
    save_every: int = 1000
    """Steps between checkpoints (the last step is always saved)."""
    keep_last: int = 3
    """Checkpoints kept (older ones are deleted; 0 keeps all)."""
    resume: bool = True
    """Continue from the newest intact checkpoint in out_dir, if any. The request must then ask for the
    run the checkpoint holds: a changed setting that alters the data or the model is refused, naming
    each (`RESUME_RULES`, `train.resume_check`)."""
    override: bool = False
    """Resume although the request changes settings that alter the data or the model (`RESUME_RULES`);
    the change is logged and recorded in the checkpoints (`trainer_state.json` "forced", metrics.jsonl)."""
    max_bad_steps: int = 10
    """Stop after this many consecutive steps with a NaN/inf loss or gradient (each one is skipped)."""
    logger: Literal["auto", "none", "tensorboard", "wandb"] = "auto"
    """Metric logger besides stdout: auto = tensorboard when installed."""
    distributed: Literal["auto", "accelerate", "none"] = "auto"
    """auto: accelerate (FSDP/DeepSpeed/DDP as its launch config says) when started with more than one
    process (`accelerate launch`, torchrun), else a plain single-process loop; accelerate forces it."""
    export_axolotl: Path | None = None
    """Write an axolotl YAML and the pre-tokenized dataset to this folder instead of training."""

    def __post_init__(self) -> None:
        unknown = set(self.task_weights) - set(TASK_NAMES)
        if unknown:
            raise ConfigError(f"unknown task(s) in task_weights: {sorted(unknown)}; tasks are {TASK_NAMES}")
        if self.seq_len < 8 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("seq_len must be >= 8 and batch_size, grad_accum >= 1")
        if self.max_steps < 1 or self.log_every < 1 or self.save_every < 1 or self.max_bad_steps < 1:
            raise ConfigError("max_steps, log_every, save_every and max_bad_steps must be >= 1")
        if not 0.0 <= self.speech_weight <= 1.0:
            raise ConfigError(f"speech_weight must be in [0, 1], got {self.speech_weight}")
        unknown = set(self.gen_eval_tasks or []) - set(TASK_NAMES)
        if unknown:
            raise ConfigError(f"unknown task(s) in gen_eval_tasks: {sorted(unknown)}; tasks are {TASK_NAMES}")
        if min(self.gen_eval_samples, self.gen_eval_max_new_tokens, self.gen_eval_batch_size) < 1:
            raise ConfigError(
                "gen_eval_samples, gen_eval_max_new_tokens and gen_eval_batch_size must be >= 1"
            )
        if self.early_stop_loop_rate is not None:
            if not self.gen_eval:
                raise ConfigError("early_stop_loop_rate needs gen_eval (the loop rate comes from it)")
            if not 0.0 <= self.early_stop_loop_rate < 1.0 or self.early_stop_patience < 1:
                raise ConfigError("early_stop_loop_rate must be in [0, 1) and early_stop_patience >= 1")
        if self.dpo_beta <= 0:
            raise ConfigError(f"dpo_beta must be > 0, got {self.dpo_beta}")
        if self.gen_eval_guidance_scale <= 0:
            raise ConfigError(f"gen_eval_guidance_scale must be > 0, got {self.gen_eval_guidance_scale}")
        self.out_dir = Path(self.out_dir)
        self.betas = tuple(self.betas)

    @property
    def token_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else self.out_dir / "token_cache"


RESUME_RULES: dict[str, str] = {
    # what the run trains: refused on resume (`--override` forces it, and the run records that)
    "model": "refuse",  # the base the run started from (compared by content: a moved copy is the same)
    "stage": "refuse",
    "shards": "refuse",  # compared by the files they name (name and size): a moved corpus is the same
    "skip_invalid_codes": "refuse",
    "text_files": "refuse",
    "text_datasets": "refuse",
    "text_column": "refuse",
    "text_max_docs": "refuse",
    "speech_weight": "refuse",
    "task_weights": "refuse",
    "loss_mask": "refuse",
    "s2st_format": "refuse",
    "overlong": "refuse",
    "seq_len": "refuse",
    "packing": "refuse",
    "eval_fraction": "refuse",  # which rows are trained on
    "seed": "refuse",  # the data order
    "pairs": "refuse",
    "dpo_beta": "refuse",
    "dpo_loss": "refuse",
    "dpo_reference": "refuse",
    "batch_size": "refuse",
    "grad_accum": "refuse",
    "lr": "refuse",
    "min_lr_ratio": "refuse",
    "warmup_steps": "refuse",
    "weight_decay": "refuse",
    "betas": "refuse",
    "max_grad_norm": "refuse",
    "lora_r": "refuse",
    "lora_alpha": "refuse",
    "lora_targets": "refuse",
    # how long, how often, how fast, how it is watched: allowed with a warning that lists them
    "max_steps": "warn",  # the cosine schedule then ends at the new max_steps
    "allow_codec_name_mismatch": "warn",
    "allow_unrecorded_codec": "warn",
    "tokenize_workers": "warn",
    "cache_dir": "warn",
    "eval_every": "warn",
    "eval_batches": "warn",
    "gen_eval": "warn",
    "gen_eval_samples": "warn",
    "gen_eval_tasks": "warn",
    "gen_eval_max_new_tokens": "warn",
    "gen_eval_batch_size": "warn",
    "gen_eval_temperature": "warn",
    "gen_eval_fast": "warn",
    "gen_eval_asr": "warn",
    "gen_eval_codec": "warn",
    "gen_eval_guidance_scale": "warn",
    "early_stop_loop_rate": "warn",
    "early_stop_patience": "warn",
    "precision": "warn",
    "gradient_checkpointing": "warn",
    "loss_impl": "warn",
    "ce_chunk_tokens": "warn",
    "compile": "warn",
    "attn_implementation": "warn",
    "log_every": "warn",
    "save_every": "warn",
    "keep_last": "warn",
    "max_bad_steps": "warn",
    "logger": "warn",
    "distributed": "warn",
    # not part of the run
    "out_dir": "ignore",
    "resume": "ignore",
    "override": "ignore",
    "export_axolotl": "ignore",
}
"""What a resume does with each changed setting, by dotted key or by its group (the longest matching
dotted prefix decides: "task_weights" covers "task_weights.asr").
"refuse": it changes the data, the model or the optimization the checkpoints hold (model, data and
tasks, tokenization, sequence length, LoRA shape, the optimizer and its schedule): resuming would
continue one run under another's record, so it is refused naming each field unless `--override`.
"warn": safe between restarts (how long, logging, evaluation and save cadence, speed and memory
knobs): allowed with a warning listing them. "ignore": not a property of the run. A key with no rule
is refused (tests/test_resume_check.py checks that every field has one)."""


def shipped_configs() -> list[Path]:
    """Every YAML training config shipped with the package."""
    return sorted(CONFIG_DIR.glob("*.yaml"))
