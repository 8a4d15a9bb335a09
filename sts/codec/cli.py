"""`sts-fit-codec`: flags -> `sts.codec.fit.fit_codec`, with a one-line summary.

    sts-fit-codec corpus/demo -o runs/codec --codebook-size 512

Expected failures (a missing input, a clip that cannot be decoded, too little audio) are one line and
exit status 2 (`sts.errors.cli_main`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console

from sts.cli import parse_cli
from sts.codec.fit import FitCodecConfig, fit_codec
from sts.errors import cli_main


def main(args: Sequence[str] | None = None) -> int:
    return cli_main("sts-fit-codec", _main, args)


def _main(args: list[str]) -> int:
    cfg = parse_cli(FitCodecConfig, args, prog="sts-fit-codec")
    started = time.perf_counter()
    codec, clips, seconds = fit_codec(cfg)
    Console(stderr=True).print(
        f"{cfg.out_dir}: {codec.codebook_size} codes fitted on {clips} clips, {seconds:.1f} s of audio "
        f"in {time.perf_counter() - started:.1f} s (offline/demo codec, not XCodec2)",
        markup=False,
        soft_wrap=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
