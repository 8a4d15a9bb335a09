"""Extend a Hugging Face causal LM with speech tokens: tokenizer, embeddings and `sts_vocab.json`.

    sts-extend-tokenizer LiquidAI/LFM2-350M -o runs/lfm2-350m-speech --num-speech-tokens 65536
    sts-extend-tokenizer HKUSTAudio/Llasa-1B -o runs/llasa-1b-adopted      # already speaks: adopted

or from Python:

    from tokenizer_ext import ExtendConfig, extend_tokenizer
    vocab = extend_tokenizer(ExtendConfig("LiquidAI/LFM2-350M", Path("runs/lfm2-350m-speech")))

Adds `<|speech_start|>`, `<|speech_end|>` and `<|s_0|>`...`<|s_{n-1}|>` as one contiguous id block right
after the base tokenizer's last id (see `sts.vocab` for the layout). New embedding rows start at the
mean of the base model's rows, so their first logits are ordinary rather than huge or tiny; the
total is padded to a multiple of 128 for tensor-core friendly matmuls. Tied input/output
embeddings stay tied. The output folder loads with plain `AutoModelForCausalLM.from_pretrained`
and `AutoTokenizer.from_pretrained`, and holds `sts_vocab.json` and `extend_config.yaml`.

A model that already holds the codec's tokens in Llasa's layout is adopted instead (`--mode auto`,
the default, detects it; see `tokenizer_ext.adopt`): its block becomes the contract, the weights and
tokenizer are saved unchanged, and `extend_config.yaml` records `mode: adopt`. A model extended by
this command (it has `sts_vocab.json` or `<|speech_start|>`) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import tyro
from annotated_types import Ge, Gt

from sts.config import save_config
from sts.errors import InputError
from sts.io import staged_dir
from sts.llasa_layout import LlasaLayout, LlasaLayoutError, find_llasa_layout, has_llasa_tokens
from sts.model_files import check_model_files, resolve_model
from sts.vocab import (
    SPEECH_END_TOKEN,
    SPEECH_START_TOKEN,
    SPEECH_TOKEN_FORMAT,
    VOCAB_FILE,
    SpeechVocab,
    round_up,
)
from tokenizer_ext.adopt import adopt_speech_block
from tokenizer_ext.embeddings import grow_embeddings

# Written for this project: ordinary text whose tokenization must not change (see verify_extension).
CHECK_SENTENCES = (
    "The train to Osaka leaves from platform 3 at 10:45.",
    "Could you tell me where the museum is?",
    "駅の近くに新しいカフェができました。",
    "明日の会議は午後二時からです、よろしくお願いします。",
    "Mixed 日本語 and English, with numbers 123 and symbols <|not a token|>.",
)


class AlreadyExtendedError(InputError, ValueError):
    """The base model already has speech tokens that cannot be adopted (our own, or a name clash)."""


@dataclass
class ExtendConfig:
    """Add the speech tokens of a codec to a causal LM and save the result as a complete HF folder."""

    base_model: tyro.conf.Positional[str]
    """Hugging Face id or local directory of the causal LM to extend (e.g. LiquidAI/LFM2-350M)."""
    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))]
    """Output folder; must not exist unless --overwrite."""
    num_speech_tokens: Annotated[int, Ge(1)] = 65536
    """Speech tokens to add: the codec's codebook size (XCodec2: 65,536)."""
    pad_to_multiple_of: Annotated[int, Ge(1)] = 128
    """Pad the embedding matrix to a multiple of this many rows."""
    codec: str = "HKUSTAudio/xcodec2-hf"
    """Codec whose codes the speech tokens stand for (recorded in sts_vocab.json)."""
    frame_rate: Annotated[float, Gt(0)] = 50.0
    """Codes per second of that codec (recorded in sts_vocab.json)."""
    overwrite: bool = False
    """Replace out_dir if it exists."""
    mode: Literal["auto", "extend", "adopt"] = "auto"
    """extend: add a new speech block; adopt: use the base's own block in Llasa's layout (markers +
    `<|s_0|>`..`<|s_{n-1}|>`, see `sts.llasa_layout`); auto: adopt when the tokenizer has any Llasa token,
    else extend. extend_config.yaml records the mode that ran."""

    RENAMED_POSITIONALS: ClassVar[tuple[str, ...]] = ("out_dir",)
    """`sts-extend-tokenizer BASE OUT_DIR` (the old form) reads as `--out-dir OUT_DIR`."""


def extend_tokenizer(cfg: ExtendConfig) -> SpeechVocab:
    """Extend (or adopt) `cfg.base_model` and write it to `cfg.out_dir`; returns the vocabulary contract.

    The folder is written under a temporary name and renamed at the end, so an interrupted run
    leaves no half-written model under `out_dir`. Raises FileExistsError, AlreadyExtendedError,
    `sts.errors.ModelNotFoundError` / `CorruptFileError` (no such base folder, damaged weights or
    config.json), or LlasaLayoutError for a layout that is almost Llasa's (what is wrong is named),
    before any weights are loaded; `sts.errors.DiskFullError` naming `out_dir` when the disk fills.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(cfg.out_dir)
    if out_dir.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    resolve_model(cfg.base_model)
    if (Path(cfg.base_model) / VOCAB_FILE).exists():
        raise AlreadyExtendedError(f"{cfg.base_model}: already extended or adopted (it has {VOCAB_FILE})")
    check_model_files(cfg.base_model)

    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    if SPEECH_START_TOKEN in tokenizer.get_vocab():
        raise AlreadyExtendedError(
            f"{cfg.base_model}: already extended (its tokenizer has {SPEECH_START_TOKEN})"
        )
    layout = layout_to_adopt(tokenizer, cfg)
    model = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype="auto")

    if layout is not None:
        vocab = adopt_speech_block(
            model, tokenizer, layout, base_model=cfg.base_model, codec=cfg.codec,
            frame_rate=cfg.frame_rate, pad_to_multiple_of=cfg.pad_to_multiple_of,
        )  # fmt: skip
    else:
        base_tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
        vocab = add_speech_tokens(tokenizer, cfg)
        vocab = replace(vocab, vocab_size=resize_embeddings(model, vocab, cfg.pad_to_multiple_of))
        verify_extension(base_tokenizer, tokenizer, vocab)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with staged_dir(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        vocab.save(staging)
        save_config(
            replace(cfg, mode="extend" if layout is None else "adopt"), staging / "extend_config.yaml"
        )
    return vocab


def layout_to_adopt(tokenizer, cfg: ExtendConfig) -> LlasaLayout | None:
    """The Llasa layout `cfg.mode` says to adopt, or None to extend; reads the tokenizer only.

    auto: adopt when any Llasa marker or `<|s_0|>` is present (then Llasa's whole layout must be
    there), else extend. adopt: the layout must be there. extend: refuses a tokenizer that already
    has `<|s_0|>`. Raises LlasaLayoutError (what is wrong with an almost-Llasa layout) or
    AlreadyExtendedError, both naming `cfg.base_model`.
    """
    if cfg.mode not in ("auto", "extend", "adopt"):
        raise ValueError(f"mode must be auto, extend or adopt, got {cfg.mode!r}")
    first_speech = SPEECH_TOKEN_FORMAT.format(0)
    has_block = first_speech in tokenizer.get_vocab()
    if cfg.mode == "extend":
        if has_block:
            raise AlreadyExtendedError(
                f"{cfg.base_model}: its tokenizer already has {first_speech}; "
                "adopt its speech block (--mode adopt) instead of adding a second one"
            )
        return None
    if cfg.mode == "auto" and not has_llasa_tokens(tokenizer):
        return None
    try:
        return find_llasa_layout(tokenizer, cfg.num_speech_tokens)
    except LlasaLayoutError as err:
        hint = (
            ""
            if has_block or cfg.mode == "adopt"
            else f"; --mode extend adds a new block with {first_speech}"
        )
        raise LlasaLayoutError(f"{cfg.base_model}: cannot adopt its speech tokens: {err}{hint}") from err


def add_speech_tokens(tokenizer, cfg: ExtendConfig) -> SpeechVocab:
    """Add the markers and the speech block to `tokenizer` in place; `vocab_size` is provisional."""
    from tokenizers import AddedToken

    text_vocab_size = len(tokenizer)
    markers = [SPEECH_START_TOKEN, SPEECH_END_TOKEN]
    speech = [SPEECH_TOKEN_FORMAT.format(k) for k in range(cfg.num_speech_tokens)]
    # special=True: atomic, never split or normalized, and skipped when decoding text.
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in markers + speech], special_tokens=True
    )
    ids = tokenizer.convert_tokens_to_ids(markers + speech)
    expected = list(range(text_vocab_size, text_vocab_size + len(ids)))
    if ids != expected:
        raise RuntimeError(
            f"{cfg.base_model}: the tokenizer did not give the new tokens one contiguous id block"
        )
    return SpeechVocab(
        speech_token_offset=text_vocab_size + len(markers),
        num_speech_tokens=cfg.num_speech_tokens,
        speech_start_id=ids[0],
        speech_end_id=ids[1],
        text_vocab_size=text_vocab_size,
        vocab_size=round_up(len(tokenizer), cfg.pad_to_multiple_of),
        codec=cfg.codec,
        frame_rate=cfg.frame_rate,
        base_model=cfg.base_model,
    )


def resize_embeddings(model, vocab: SpeechVocab, pad_to_multiple_of: int) -> int:
    """Resize to hold every new id, rows from `text_vocab_size` on set to the old rows' mean.

    The base may have more embedding rows than tokenizer entries (padding rows) or fewer; either
    way, every row a new token or the padding uses starts at the mean of the rows the base
    tokenizer can reach. Returns the new number of rows.
    """
    old_rows = model.get_input_embeddings().weight.shape[0]
    new_rows = round_up(max(vocab.speech_token_stop, old_rows), pad_to_multiple_of)
    trained_rows = min(vocab.text_vocab_size, old_rows)
    return grow_embeddings(model, new_rows, keep_rows=vocab.text_vocab_size, mean_rows=trained_rows)


def verify_extension(base_tokenizer, tokenizer, vocab: SpeechVocab, sentences=CHECK_SENTENCES) -> None:
    """Raise if ordinary text tokenizes differently or any `<|s_k|>` is not id `offset + k`."""
    for text in sentences:
        before = base_tokenizer(text, add_special_tokens=False).input_ids
        after = tokenizer(text, add_special_tokens=False).input_ids
        if before != after:
            raise RuntimeError(f"extension changed the tokenization of {text!r}: {before} -> {after}")
    speech = [vocab.speech_token(k) for k in range(vocab.num_speech_tokens)]
    ids = tokenizer.convert_tokens_to_ids(speech)
    if ids != list(range(vocab.speech_token_offset, vocab.speech_token_stop)):
        raise RuntimeError("speech token strings do not map to offset + k")
    for token, marker_id in (
        (vocab.speech_start_token, vocab.speech_start_id),
        (vocab.speech_end_token, vocab.speech_end_id),
    ):
        if tokenizer.convert_tokens_to_ids(token) != marker_id:
            raise RuntimeError(f"{token} does not map to id {marker_id}")
