"""`sts-infer`, `sts-eval` and `sts-eval-mt`: flags -> the library functions of `infer`.

    sts-infer in.wav --to en -o out.wav --model runs/sft                 # infer.run: every mode and its files
    sts-eval test.jsonl --model runs/sft -o reports/sft --tasks s2st s2tt asr tts    # infer.checkpoint_eval
    sts-eval-mt --backends hf:LiquidAI/LFM2-350M-ENJP-MT                 # infer.mt_eval

Each parses its flags (`sts.cli.parse_cli`: a bad value is one line naming the flag, exit 2, before
any model loads) and runs under `sts.errors.cli_main` (an expected failure is one line, exit 2;
`--debug` shows the traceback).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from infer import checkpoint_eval, run
from infer.mt_eval import MTEvalConfig, evaluate
from sts.cli import parse_cli
from sts.errors import cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """`sts-infer`."""
    return cli_main(
        "sts-infer", lambda args: run.run(parse_cli(run.InferConfig, args, prog="sts-infer")), argv
    )


def eval_main(argv: Sequence[str] | None = None) -> int:
    """`sts-eval`."""

    def _run(args: list[str]) -> int:
        checkpoint_eval.run(parse_cli(checkpoint_eval.EvalConfig, args, prog="sts-eval"))
        return 0

    return cli_main("sts-eval", _run, argv)


def eval_mt_main(argv: Sequence[str] | None = None) -> int:
    """`sts-eval-mt`: prints each backend's scores and signatures, then where the report is."""
    return cli_main("sts-eval-mt", _eval_mt, argv)


def _eval_mt(args: list[str]) -> int:
    from rich.console import Console

    cfg = parse_cli(MTEvalConfig, args, prog="sts-eval-mt")
    console = Console(stderr=True)
    report = evaluate(cfg, argv=["sts-eval-mt", *args])
    for spec, entry in report["backends"].items():
        for direction in report["directions"]:
            scores = ", ".join(f"{s['name']} {s['score']:.2f}" for s in entry[direction]["scores"])
            console.print(f"{spec} {direction}: {scores}", markup=False)
            for s in entry[direction]["scores"]:
                console.print(f"    {s['name']}: {s['signature']}", style="dim", markup=False)
            failed = entry[direction].get("failed_lines", [])
            if failed:
                shown = ", ".join(str(f["line"]) for f in failed[:10]) + (", ..." if len(failed) > 10 else "")
                console.print(
                    f"    {len(failed)} line(s) not translated, scored as empty: line {shown}", markup=False
                )
    console.print(f"report: {Path(cfg.out_dir) / 'report.md'}", markup=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
