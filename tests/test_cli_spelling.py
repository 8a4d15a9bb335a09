"""One spelling per concept across every command: the output folder, the model, the codec, the device,
the dtype, the batch size and the seed are the same flag wherever a command has them; old spellings
still work, with a warning; and every flag `--help` prints is one the parser takes."""

from __future__ import annotations

import importlib
import logging
import re
import subprocess
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from sts.cli import cli_view, parse_cli
from sts.cli_help import flag_arities
from sts.config import field_hints
from sts.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]

# prog -> (config class "module:Class", the arguments it needs besides the ones tested)
COMMANDS: dict[str, tuple[str, list[str]]] = {
    "sts-extend-tokenizer": ("tokenizer_ext.extend:ExtendConfig", ["base", "-o", "out"]),
    "sts-build-corpus": ("corpus_builder.build:BuildConfig", ["--out-dir", "corpus"]),
    "sts-encode": ("corpus_builder.encode:EncodeConfig", ["corpus"]),
    "sts-eval-mt": ("infer.mt_eval:MTEvalConfig", ["--backends", "hf:m"]),
    "sts-fit-codec": ("sts.codec.fit:FitCodecConfig", ["clips"]),
    "sts-train": ("train.config:TrainConfig", []),
    "sts-train dpo-pairs": ("train.pairs:PairConfig", []),
    "sts-train merge-lora": ("train.merge:MergeConfig", ["checkpoint", "-o", "merged"]),
    "sts-train adopt-axolotl": ("train.axolotl:AdoptConfig", ["out", "--from", "export"]),
    "sts-infer": ("infer.run:InferConfig", []),
    "sts-eval": ("infer.checkpoint_eval:EvalConfig", ["test.jsonl"]),
    "sts demo": ("recipes.demo:DemoConfig", []),
    "sts serve": ("recipes.serve_service:ServeConfig", []),
    "sts tiny-run": ("recipes.tiny_run:TinyRunConfig", []),
    **{
        f"benchmarks/{path.name}": (
            f"benchmark:{path.stem}",
            ["--out-dir", "x"] if "ablation" in path.stem else [],
        )
        for path in sorted((ROOT / "benchmarks").glob("*.py"))
    },
}

CONCEPTS: dict[str, tuple[list[str], str, object]] = {
    "out_dir": (["--out-dir", "-o"], "some/folder", Path("some/folder")),
    "model": (["--model"], "some/model", "some/model"),
    "codec": (["--codec"], "some/codec", "some/codec"),
    "device": (["--device"], "cpu", "cpu"),
    "dtype": (["--dtype"], "float32", "float32"),
    "batch_size": (["--batch-size"], "3", 3),
    "seed": (["--seed"], "7", 7),
}
"""Field name -> (its flags, a value, what the value parses to)."""

OTHER_SPELLINGS = {
    "output_dir",
    "out",
    "run_dir",
    "sts_codec",
    "output",
    "codec_dir",
    "model_dir",
    "random_seed",
}
"""Field names that would spell a concept of CONCEPTS another way. `sts-infer --output/-o` is the one
exception: its output is a file for one input and a folder for a batch."""


def config_class(prog: str) -> type:
    module, _, name = COMMANDS[prog][0].partition(":")
    if module == "benchmark":  # a script of benchmarks/ (not an installed package): its Args
        return load_benchmark(name).Args
    return getattr(importlib.import_module(module), name)


def _parse(prog: str, args: list[str]):
    cls, needed = config_class(prog), COMMANDS[prog][1]
    if cls.__name__ == "TrainConfig":
        from train.cli import parse_train

        return parse_train("sft", [*needed, *args])
    return parse_cli(cls, [*needed, *args], prog=prog)


def test_the_registry_covers_every_command():
    """Every config class given to `parse_cli` in the package and the benchmarks is tested here."""
    listed = {COMMANDS[p][0].rpartition(":")[2] for p in COMMANDS} | {"Args"}
    found = set()
    for folder in ("sts", "corpus_builder", "tokenizer_ext", "train", "infer", "recipes", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(re.findall(r"parse_cli\(\s*([A-Z]\w+)", path.read_text(encoding="utf-8")))
    assert found - {"TrainConfig"} <= listed and found, found - listed
    scripts = [p for p in (ROOT / "benchmarks").glob("*.py")]
    assert all("parse_cli" in p.read_text(encoding="utf-8") for p in scripts), (
        "a benchmark parses its own way"
    )
    assert not any("argparse" in p.read_text(encoding="utf-8") for p in scripts)


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_a_shared_concept_has_the_same_flag_everywhere(prog):
    cls = config_class(prog)
    names = set(field_hints(cls))
    assert not (names & OTHER_SPELLINGS) or (prog == "sts-infer" and names & OTHER_SPELLINGS == {"output"}), (
        names
    )
    for name in sorted(names & set(CONCEPTS)):
        flags, value, parsed = CONCEPTS[name]
        for flag in flags:
            cfg = _parse(prog, [flag, value])
            assert getattr(cfg, name) == parsed, (prog, flag)


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_every_flag_help_shows_is_one_the_parser_takes(prog):
    cls = config_class(prog)
    hide = ()
    if cls.__name__ == "TrainConfig":
        from train.config import hidden_groups

        hide = hidden_groups("sft")
    for flag, arity in flag_arities(cli_view(cls, frozenset(hide))).items():
        values = [] if arity == 0 else ["1"] * (arity or 1)
        try:
            _parse(prog, [flag, *values])
        except (UsageError, ValueError) as err:  # a value of the wrong type or range is fine here
            assert "unrecognized" not in str(err).lower(), (prog, flag, str(err))


@pytest.mark.parametrize(
    ("prog", "old", "field", "value"),
    [
        ("sts-extend-tokenizer", ["base", "out"], "out_dir", Path("out")),
        ("sts-train merge-lora", ["checkpoint", "merged"], "out_dir", Path("merged")),
        ("sts demo", ["runs/old"], "out_dir", Path("runs/old")),
        ("sts tiny-run", ["runs/old"], "out_dir", Path("runs/old")),
        ("sts-eval", ["test.jsonl", "--output", "r"], "out_dir", Path("r")),
        ("sts serve", ["--run-dir", "r"], "out_dir", Path("r")),
        ("sts-fit-codec", ["clips", "--out", "c"], "out_dir", Path("c")),
        ("sts-eval-mt", ["--backends", "hf:m", "--sts-codec", "c"], "codec", "c"),
        ("sts-train", ["--lr", "0.5"], "optim", None),
    ],
)
def test_old_spellings_still_work_with_a_warning(prog, old, field, value, caplog):
    cls = config_class(prog)
    with caplog.at_level(logging.WARNING):
        if cls.__name__ == "TrainConfig":
            from train.cli import parse_train

            cfg = parse_train("sft", old)
        else:
            cfg = parse_cli(cls, old, prog=prog)
    assert value is None or getattr(cfg, field) == value
    assert len(caplog.records) == 1 and prog in caplog.text


def test_the_installed_help_of_every_script_is_short():
    import sys

    bindir = Path(sys.executable).parent
    done = subprocess.run(
        [bindir / "sts", "train", "sft", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and len(done.stdout.splitlines()) <= 85


def _numeric_fields(cls: type, prefix: str = ""):
    """(dotted name, hint) of every int/float option of `cls`, groups included."""
    import dataclasses
    import types
    import typing

    from sts.config import _metadata

    for name, hint in field_hints(cls).items():
        bare, _ = _metadata(hint)
        if dataclasses.is_dataclass(bare):
            yield from _numeric_fields(bare, f"{prefix}{name}.")
            continue
        union = typing.get_origin(bare) in (typing.Union, types.UnionType)
        options = [a for a in typing.get_args(bare) if a is not type(None)] if union else [bare]
        if options and all(o in (int, float) for o in options):
            yield f"{prefix}{name}", hint


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_every_numeric_option_declares_its_range(prog):
    """Issue 20 item 8: a number's sign and range are checked when the command line is parsed, so
    each int/float option declares them (`Annotated[int, Ge(1)]`, docs/configuration.md)."""
    from sts.config import constraint_text

    missing = [name for name, hint in _numeric_fields(config_class(prog)) if not constraint_text(hint)]
    assert not missing, f"{prog}: no declared range for {missing}"


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_a_no_flag_says_what_it_does(prog):
    """`--help` shows an option that is on by default as its `--no-NAME` flag; the text beside it must
    say what that flag does (`sts.config.WhenOff`), not what the option does when on."""
    from sts.cli_help import option_lines

    cls = config_class(prog)
    hide = ()
    if cls.__name__ == "TrainConfig":
        from train.config import hidden_groups

        hide = hidden_groups("sft")
    for _, rows in option_lines(cli_view(cls, frozenset(hide))):  # group defaults from their factories
        for invocation, text in rows:
            if re.search(r"(^|--|\.)no-", invocation.split(", ")[-1]):
                assert not text.startswith("Turn off") and "[on by default: " in text, (
                    prog,
                    invocation,
                    text,
                )


def test_no_resume_help_and_the_fallback():
    import dataclasses

    from sts.cli_help import render_help

    done = subprocess.run([Path(__import__("sys").executable).parent / "sts-train", "sft", "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("--no-resume"))
    assert "Start at step 0" in line and "[on by default: Continue from the newest" in line

    @dataclasses.dataclass
    class Plain:
        tidy: bool = True
        """Tidy up at the end."""

    text = render_help(cli_view(Plain), prog="x", description=None)
    assert "--no-tidy  Turn off: Tidy up at the end. [on by default]" in text  # no WhenOff: still true
