"""LoRA on a speech-extended LM: adapters on the layers, and the new token rows trained as well.

    sts-train sft --config train/configs/sft_lfm2_350m.yaml --lora.r 16              # rows trained (default)
    sts-train sft ... --lora.r 16 --lora.no-train-speech-rows   # adapters only: needs trained speech rows

    from train.lora import add_lora, untrained_speech_rows
    lm = add_lora(lm, cfg.lora, SpeechVocab.load(cfg.model), model_name=cfg.model)   # a peft PeftModel

Why: `sts-extend-tokenizer` starts every speech row (and both markers) at one mean vector, and LoRA
adapts the layers' matrices only. The embedding and the output layer stay frozen, so right after
extension all 65,536 speech tokens look alike going in and score alike coming out: on the tiny
model, 1 speech row of 1,024 was distinct after LoRA training and the speech logits had no spread at
all (docs/training.md). So the new rows are trained with PEFT's trainable tokens
(`LoraConfig(trainable_token_indices=...)`): a trainable copy of exactly those rows of the input
embedding (peft's `trainable_tokens_delta`) and, where the output layer is tied to it (LFM2), the
same copy used by the output layer, so the two stay one matrix; an untied output layer gets its own
copy of the same rows. The adapter
file then carries `rows x hidden` float32 values (the speech block and the markers: for
LFM2-350M, 65,538 x 1,024 = 268 MB), and AdamW keeps two more of that size while training.
`sts-train merge-lora` writes those rows into the embedding matrix (`merge_and_unload`), and with
tied embeddings the merged head is that matrix.

Turning it off (`--lora.no-train-speech-rows`) is refused on a checkpoint whose speech rows are all
the same vector (`untrained_speech_rows`): train them first (full training, `--lora.r 0`) or keep
it on.
"""

from __future__ import annotations

from pathlib import Path

from sts.config import ConfigError
from sts.vocab import SpeechVocab
from train.config import LoraArgs


def new_token_ids(vocab: SpeechVocab) -> list[int]:
    """The ids whose rows `sts-extend-tokenizer` added and training must teach: the speech block
    `[speech_token_offset, speech_token_stop)` and the two markers, ascending (padding rows that no
    token uses are left out)."""
    ids = set(range(vocab.speech_token_offset, vocab.speech_token_stop))
    ids.update((vocab.speech_start_id, vocab.speech_end_id))
    return sorted(ids)


def untrained_speech_rows(lm, vocab: SpeechVocab) -> bool:
    """Whether every speech row of `lm`'s input embedding (and of an untied output layer) is the same
    vector, exactly, as `sts-extend-tokenizer` leaves them (`tokenizer_ext.embeddings`): no training
    has told the speech tokens apart. Exact equality: no tolerance is needed, since training that
    tells any two rows apart leaves them unequal in any dtype."""
    import torch

    matrices = [lm.get_input_embeddings().weight]
    output = lm.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    with torch.no_grad():
        for weight in matrices:
            rows = weight[vocab.speech_token_offset : vocab.speech_token_stop]
            if bool((rows != rows[:1]).any()):
                return False
    return True


def stored_speech_rows_untrained(model: str | Path, vocab: SpeechVocab) -> bool | None:
    """`untrained_speech_rows` read from a local model folder's safetensors without loading the model:
    only the speech rows of its `*embed_tokens.weight` tensor (and of an `lm_head.weight` stored
    beside it: an untied head). None when it cannot tell (a hub id, no such tensor)."""
    from safetensors import safe_open

    folder = Path(model).expanduser()
    rows = slice(vocab.speech_token_offset, vocab.speech_token_stop)
    found = None
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()  # a safe_open handle is not iterable
            for name in names:
                if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                    speech = f.get_slice(name)[rows]
                    if bool((speech != speech[:1]).any()):
                        return False
                    found = True
    return found


def check_speech_rows(cfg, vocab: SpeechVocab) -> None:
    """Where a LoRA run starts, before any data is read: refuse frozen speech rows that are untrained
    (`refusal`), from the weights on disk; `add_lora` checks the loaded model again. `cfg`: a
    `TrainConfig`. Does nothing for full training or with `lora.train_speech_rows` on."""
    frozen = cfg.lora.r > 0 and not cfg.lora.train_speech_rows
    if frozen and stored_speech_rows_untrained(cfg.model, vocab):
        raise refusal(vocab, cfg.model)


def refusal(vocab: SpeechVocab, model_name: str | Path) -> ConfigError:
    """The error for LoRA with frozen, untrained speech rows: what is wrong and what to do."""
    return ConfigError(
        f"is off, but the {vocab.num_speech_tokens} speech rows of {model_name or 'the model'} are all "
        "one vector (untrained, as sts-extend-tokenizer leaves them), and LoRA alone never changes "
        "them: the model could not tell speech tokens apart. Leave --lora.train-speech-rows on, or "
        "train the rows first (--lora.r 0)",
        key="lora.train_speech_rows",
    )


def token_targets(lm, ids: list[int]) -> list[int] | dict[str, list[int]]:
    """`trainable_token_indices` for `lm`: the ids alone when the output layer is tied to the input
    embedding (peft then wraps the input embedding and ties the output layer to the same delta), else
    the same ids for each of the two modules by name."""
    embedding, output = lm.get_input_embeddings(), lm.get_output_embeddings()
    if output is None or output.weight.data_ptr() == embedding.weight.data_ptr():
        return ids
    names = {id(module): name for name, module in lm.named_modules()}
    return {names[id(embedding)]: ids, names[id(output)]: ids}


def add_lora(lm, args: LoraArgs, vocab: SpeechVocab, *, model_name: str | Path = ""):
    """`lm` with LoRA adapters (`args.r`, `args.alpha` on `args.targets`) and, with
    `args.train_speech_rows`, the `new_token_ids` rows of its embedding and output layer trainable
    (module doc). Returns the peft model.

    Raises `ConfigError` (key `lora.train_speech_rows`) when the rows are left frozen but are still
    untrained, naming `model_name` and what to do.
    """
    from peft import LoraConfig, get_peft_model

    if not args.train_speech_rows and untrained_speech_rows(lm, vocab):
        raise refusal(vocab, model_name)
    tokens = token_targets(lm, new_token_ids(vocab)) if args.train_speech_rows else None
    config = LoraConfig(
        r=args.r, lora_alpha=args.alpha, target_modules=args.targets, trainable_token_indices=tokens
    )
    return get_peft_model(lm, config)
