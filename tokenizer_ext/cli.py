"""`sts-extend-tokenizer BASE_MODEL -o OUT_DIR [--mode auto|extend|adopt]`: flags -> `extend_tokenizer`.

Expected failures (an existing output, an already extended base, an almost-Llasa layout, a model
folder that does not exist or is damaged, a full disk) print one line naming the model and the problem
and exit with status 2 (`sts.errors.cli_main`; `--debug` shows the traceback).
"""

from __future__ import annotations

from collections.abc import Sequence

from sts.cli import parse_cli
from sts.errors import cli_main
from sts.vocab import SPEECH_START_TOKEN
from tokenizer_ext.extend import ExtendConfig, extend_tokenizer


def main(args: Sequence[str] | None = None) -> int:
    return cli_main("sts-extend-tokenizer", _main, args)


def _main(args: list[str]) -> int:
    from rich.console import Console

    cfg = parse_cli(ExtendConfig, args, prog="sts-extend-tokenizer")
    console = Console(stderr=True)
    with console.status(f"{cfg.base_model}: {cfg.mode} mode, {cfg.num_speech_tokens:,} speech tokens"):
        vocab = extend_tokenizer(cfg)
    adopted = vocab.speech_start_token != SPEECH_START_TOKEN  # extension always adds <|speech_start|>
    console.print(
        f"wrote {cfg.out_dir}: {'adopted' if adopted else 'added'} speech ids "
        f"[{vocab.speech_token_offset}, {vocab.speech_token_stop}), markers "
        f"{vocab.speech_start_token}={vocab.speech_start_id} / {vocab.speech_end_token}={vocab.speech_end_id}, "
        f"text vocab {vocab.text_vocab_size:,}, embedding rows {vocab.vocab_size:,}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
