"""`sts-extend-tokenizer BASE_MODEL OUT_DIR`: flags -> `extend_tokenizer`."""

from __future__ import annotations

from collections.abc import Sequence

from sts.config import parse_cli
from tokenizer_ext.extend import ExtendConfig, extend_tokenizer


def main(args: Sequence[str] | None = None) -> int:
    from rich.console import Console

    cfg = parse_cli(ExtendConfig, args, prog="sts-extend-tokenizer")
    console = Console(stderr=True)
    with console.status(f"extending {cfg.base_model} with {cfg.num_speech_tokens:,} speech tokens"):
        vocab = extend_tokenizer(cfg)
    console.print(
        f"wrote {cfg.out_dir}: speech ids [{vocab.speech_token_offset}, {vocab.speech_token_stop}), "
        f"markers {vocab.speech_start_id}/{vocab.speech_end_id}, vocab {vocab.text_vocab_size:,} -> {vocab.vocab_size:,}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
