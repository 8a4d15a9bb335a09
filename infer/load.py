"""Open a checkpoint for inference: check its files before any weights load, then load the `Translator`.

    check_checkpoint("runs/sft")                          # ModelNotFoundError / CorruptFileError / VocabError
    translator = load_translator(ModelArgs(model="runs/sft", device="auto"), greedy=False)

Used by `sts-infer`, `sts-eval`, `sts-eval-mt` (an `sts:` backend) and `sts serve`.
"""

from __future__ import annotations

from pathlib import Path

from infer.translate import Translator, replace_sampling
from sts.devices import ModelArgs
from sts.generation.request import Sampling
from sts.model_files import check_model_files, load_speech_contract, resolve_model
from sts.vocab import VOCAB_FILE, CodecMismatchError


def load_translator(
    args: ModelArgs,
    *,
    backend: str = "transformers",
    fast: bool | None = None,
    sampling: dict[str, Sampling] | None = None,
    greedy: bool = False,
    **kwargs,
):
    """`Translator.from_checkpoint` of `args` (model, codec, device, dtype, batch size; "auto"
    resolved by `sts.devices`), after `check_checkpoint`. `fast` None: on for cuda. `sampling`: per
    task, over `infer.decoding.DEFAULT_SAMPLING`; `greedy` makes every task greedy. `kwargs` go to
    `from_checkpoint` (`max_new_tokens`, `seed`, ...)."""

    check_checkpoint(args.model, codec=args.codec)
    device = args.torch_device()
    translator = Translator.from_checkpoint(
        args.model, codec=args.codec, device=device, dtype=args.torch_dtype(), backend=backend,
        fast=fast if fast is not None else device.startswith("cuda"), batch_size=args.batch_size,
        sampling=sampling, **kwargs,
    )  # fmt: skip
    if greedy:
        translator.sampling = {
            t: replace_sampling(s, do_sample=False) for t, s in translator.sampling.items()
        }
    return translator


def check_checkpoint(model: str, *, codec: str | None = None) -> None:
    """Before any weights load: a local `model` folder exists and is whole, and its sts_vocab.json
    matches its tokenizer and config (`sts.model_files.load_speech_contract`); the codec folder too.

    Raises `ModelNotFoundError`, `CorruptFileError` or `VocabError` (`CodecMismatchError`: a codec of
    another codebook size), each naming the file. A hub id is left to `from_pretrained`.
    """
    from sts.codec import recorded_codebook_size

    if not Path(resolve_model(model)).is_dir():
        return
    vocab, _ = load_speech_contract(model)
    codec_name = codec or vocab.codec
    resolve_model(codec_name, what="codec")
    check_model_files(codec_name)
    size = recorded_codebook_size(codec_name)
    if size is not None and size != vocab.num_speech_tokens:
        raise CodecMismatchError(
            f"codec mismatch: {codec_name} has {size} codes but {Path(model) / VOCAB_FILE} holds "
            f"{vocab.num_speech_tokens} speech tokens; pass the checkpoint's codec (--codec)"
        )
