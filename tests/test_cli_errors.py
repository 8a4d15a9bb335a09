"""Every console script under one error policy (`sts.errors.cli_main`), on a table of bad inputs.

Each case runs a CLI's `main([...])` in-process and asserts the exit status (2), that stderr holds
exactly one `PROG: error: ...` line naming the file and the problem, and no traceback. Then:
`--debug` and STS_TRACEBACK=1 re-raise the error, a genuine bug (a KeyError from inside) still
raises, and a few cases run as real subprocesses of the installed scripts.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sts.audio import write_audio
from sts.errors import DiskFullError, InputError, cli_main, error_message, writing
from sts.testing import synthetic_utterance
from sts.vocab import VOCAB_FILE, SpeechVocab
from train.config import CONFIG_DIR

TONE = "python:corpus_builder.testing:ToneTTS"
BIN = Path(sys.executable).parent


def _main(prog: str):
    """The `main` of a console script (the umbrella's stages are the same functions)."""
    import importlib

    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    module, _, function = tomllib.loads(pyproject.read_text())["project"]["scripts"][prog].partition(":")
    return getattr(importlib.import_module(module), function)


@pytest.fixture(scope="module")
def files(extended_lm_dir, tiny_lm_dir, tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs, built once: models, vocabularies, configs, manifests, clips, corpora."""
    import pyarrow.parquet as pq

    from sts.corpus import shard_paths
    from sts.testing import save_tiny_xcodec2
    from train.testing import shard_entries, write_tiny_encoded_shards

    root = tmp_path_factory.mktemp("bad-inputs")
    f: dict[str, Path] = {"root": root, "nope": root / "no-such-model"}
    f["codec"] = save_tiny_xcodec2(root / "codec")
    f["ckpt"] = root / "ckpt"
    shutil.copytree(extended_lm_dir, f["ckpt"])
    dataclasses.replace(SpeechVocab.load(extended_lm_dir), codec=str(f["codec"])).save(f["ckpt"])

    def variant(name: str, source: Path = f["ckpt"]) -> Path:
        f[name] = root / name
        shutil.copytree(source, f[name])
        return f[name]

    weights = variant("corrupt_weights") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # header says more than the file holds
    base = variant("corrupt_base", tiny_lm_dir) / "model.safetensors"
    base.write_bytes(b"\xff" * 8 + b"{}")  # safetensors' own error: "header too large", no path
    (variant("vocab_not_json") / VOCAB_FILE).write_text("{not json\n")
    data = json.loads((f["ckpt"] / VOCAB_FILE).read_text())
    data["speech_token_offset"] += 1  # code k would be <|s_{k+1}|>; only the start marker matched before
    (variant("vocab_one_off") / VOCAB_FILE).write_text(json.dumps(data))

    import numpy as np

    from sts.codec.melkmeans import MelKMeansCodec

    f["codec8"] = root / "codec8"  # an offline codec of 8 codes: not the checkpoint's 1,024
    MelKMeansCodec(np.random.default_rng(0).standard_normal((8, 80)).astype(np.float32)).save(f["codec8"])
    write_audio(root / "clip.wav", synthetic_utterance(0.5, 150.0, seed=1))
    (root / "undecodable.wav").write_bytes(b"RIFF....WAVEfmt not audio at all")
    (root / "bad.yaml").write_text("lr: [1, 2\n")
    (root / "unknown.yaml").write_text("nonsense_option: 3\n")
    (root / "bad_json.jsonl").write_text('{"audio": "clip.wav", "src_lang": "ja"}\n{"audio": "clip.wav",\n')
    (root / "no_audio.jsonl").write_text(
        '{"id": "a", "audio": "clip.wav", "src_lang": "ja"}\n{"id": "b", "audio": "nope.wav", "src_lang": "ja"}\n'
    )
    (root / "ok.jsonl").write_text('{"id": "a", "audio": "clip.wav", "src_lang": "ja", "tgt_text": "Hi."}\n')
    (root / "t.ja").write_text("おはようございます。\nありがとう。\n", encoding="utf-8")
    (root / "t.en").write_text("Good morning.\nThank you.\n", encoding="utf-8")

    f["encoded"] = root / "encoded"
    shards = write_tiny_encoded_shards(f["encoded"], rows_per_shard=4, num_shards=1, codec=str(f["codec"]))
    f["unencoded"] = root / "unencoded"
    shutil.copytree(f["encoded"], f["unencoded"])
    for shard in shards:
        target = f["unencoded"] / shard.relative_to(f["encoded"])
        pq.write_table(pq.read_table(shard).drop_columns(["src_codes", "tgt_codes"]), target)
    card = json.loads((f["unencoded"] / "corpus.json").read_text())
    card.pop("encode")
    card["shards"] = shard_entries(f["unencoded"], shard_paths(f["unencoded"]))
    (f["unencoded"] / "corpus.json").write_text(json.dumps(card))
    return f


def _train(f, model, *extra):
    return ["sft", "--config", str(CONFIG_DIR / "tiny_sft.yaml"), "--model", str(model),
            "--shards", str(f["encoded"]), "--out-dir", str(f["root"] / "run"), *extra]  # fmt: skip


def _infer(f, model, *extra, inp=None, out="o.wav"):
    return [str(inp or f["root"] / "clip.wav"), "--from", "ja", "-o", str(f["root"] / "out" / out),
            "--model", str(model), "--codec", str(f["codec"]), "--max-new-tokens", "4", *extra]  # fmt: skip


def _eval(f, model, manifest="ok.jsonl"):
    return [str(f["root"] / manifest), "--model", str(model), "-o", str(f["root"] / "eval"), "--asr", "none",
            "--codec", str(f["codec"]), "--no-codec-roundtrip", "--no-speaker-similarity", "--no-dnsmos",
            "--max-new-tokens", "4"]  # fmt: skip


def _eval_mt(f, model):
    return ["--backends", f"sts:{model}", "--ja-file", str(f["root"] / "t.ja"), "--en-file",
            str(f["root"] / "t.en"), "--out-dir", str(f["root"] / "mt"), "--codec", str(f["codec"])]  # fmt: skip


def _build(f, *extra):
    return ["--out-dir", str(f["root"] / "built"), "--source", "local", "--mt", "reference", "--tts", TONE,
            "--checks", "none", *extra]  # fmt: skip


def _pairs(f, name):
    return ["--out-dir", str(f["root"] / name), "--source", "text-pairs", "--path", str(f["root"] / "t.ja"),
            "--tgt-path", str(f["root"] / "t.en"), "--checks", "none"]  # fmt: skip


# (case id, console script, args from the files, what the one line must say besides the file)
CASES = [
    ("missing model: infer", "sts-infer", lambda f: _infer(f, f["nope"]), "no-such-model", "no such model folder"),
    ("missing model: train", "sts-train", lambda f: _train(f, f["nope"]), "no-such-model", "no such model folder"),
    ("missing model: extend", "sts-extend-tokenizer", lambda f: [str(f["nope"]), "-o", str(f["root"] / "x1")],
     "no-such-model", "no such model folder"),
    ("missing model: eval", "sts-eval", lambda f: _eval(f, f["nope"]), "no-such-model", "no such model folder"),
    ("missing model: eval-mt", "sts-eval-mt", lambda f: _eval_mt(f, f["nope"]), "no-such-model", "no such model folder"),
    ("missing model: umbrella", "sts", lambda f: ["infer", *_infer(f, f["nope"])], "no-such-model", "no such model folder"),
    ("missing codec: encode", "sts-encode", lambda f: [str(f["unencoded"]), "--codec", str(f["nope"])],
     "no-such-model", "no such codec folder"),
    ("missing input: fit-codec", "sts-fit-codec", lambda f: [str(f["nope"]), "-o", str(f["root"] / "c")],
     "no-such-model", "no such file"),
    ("missing manifest: build-corpus", "sts-build-corpus", lambda f: _build(f, "--path", str(f["nope"])),
     "no-such-model", "no such file"),
    ("missing MT model: build-corpus", "sts-build-corpus",
     lambda f: [*_pairs(f, "mt-missing"), "--mt", "hf", "--mt-model", str(f["nope"]), "--tts", TONE],
     "no-such-model", "no such MT model folder"),
    ("missing TTS model: build-corpus", "sts-build-corpus",
     lambda f: [*_pairs(f, "tts-missing"), "--mt", "reference", "--tts", f"llasa:{f['nope']}"],
     "no-such-model", "no such TTS model folder"),
    ("corrupt weights: infer", "sts-infer", lambda f: _infer(f, f["corrupt_weights"]),
     "corrupt_weights/model.safetensors", "truncated or damaged weights file"),
    ("corrupt weights: train", "sts-train", lambda f: _train(f, f["corrupt_weights"]),
     "corrupt_weights/model.safetensors", "its header alone claims"),
    ("corrupt weights: extend", "sts-extend-tokenizer", lambda f: [str(f["corrupt_base"]), "-o", str(f["root"] / "x2")],
     "corrupt_base/model.safetensors", "truncated or damaged weights file"),
    ("vocab not JSON: infer", "sts-infer", lambda f: _infer(f, f["vocab_not_json"]),
     "vocab_not_json/sts_vocab.json:1:2", "not valid JSON"),
    ("vocab not JSON: train", "sts-train", lambda f: _train(f, f["vocab_not_json"]),
     "vocab_not_json/sts_vocab.json:1:2", "not valid JSON"),
    ("vocab one off: infer", "sts-infer", lambda f: _infer(f, f["vocab_one_off"]),
     "vocab_one_off/sts_vocab.json", "<|s_0|> is id"),
    ("vocab one off: train", "sts-train", lambda f: _train(f, f["vocab_one_off"]),
     "vocab_one_off/sts_vocab.json", "but speech_token_offset ="),
    ("vocab one off: eval", "sts-eval", lambda f: _eval(f, f["vocab_one_off"]),
     "vocab_one_off/sts_vocab.json", "<|s_0|> is id"),
    ("vocab one off: eval-mt", "sts-eval-mt", lambda f: _eval_mt(f, f["vocab_one_off"]),
     "vocab_one_off/sts_vocab.json", "<|s_0|> is id"),
    ("bad YAML: train", "sts-train",
     lambda f: ["sft", "--config", str(f["root"] / "bad.yaml"), "--model", str(f["ckpt"])],
     "bad.yaml", "cannot read YAML config"),
    ("bad YAML: infer", "sts-infer", lambda f: ["--config", str(f["root"] / "bad.yaml")],
     "bad.yaml", "cannot read YAML config"),
    ("bad YAML: encode", "sts-encode", lambda f: ["--config", str(f["root"] / "bad.yaml"), str(f["encoded"])],
     "bad.yaml", "cannot read YAML config"),
    ("bad YAML: build-corpus", "sts-build-corpus", lambda f: ["--config", str(f["root"] / "bad.yaml")],
     "bad.yaml", "cannot read YAML config"),
    ("unknown key: train", "sts-train",
     lambda f: ["sft", "--config", str(f["root"] / "unknown.yaml"), "--model", str(f["ckpt"])],
     "unknown.yaml", "nonsense_option is not an option"),
    ("unknown key: infer", "sts-infer", lambda f: ["--config", str(f["root"] / "unknown.yaml")],
     "unknown.yaml", "nonsense_option is not an option"),
    ("manifest JSON: infer", "sts-infer", lambda f: _infer(f, f["ckpt"], inp=f["root"] / "bad_json.jsonl", out="b"),
     "bad_json.jsonl:2", "not valid JSON"),
    ("manifest JSON: eval", "sts-eval", lambda f: _eval(f, f["ckpt"], "bad_json.jsonl"),
     "bad_json.jsonl:2", "not valid JSON"),
    ("manifest JSON: build-corpus", "sts-build-corpus", lambda f: _build(f, "--path", str(f["root"] / "bad_json.jsonl")),
     "bad_json.jsonl:2", "not valid JSON"),
    ("manifest audio: infer", "sts-infer", lambda f: _infer(f, f["ckpt"], inp=f["root"] / "no_audio.jsonl", out="b"),
     "no_audio.jsonl:2", "audio 'nope.wav': no such file"),
    ("manifest audio: eval", "sts-eval", lambda f: _eval(f, f["ckpt"], "no_audio.jsonl"),
     "no_audio.jsonl:2", "audio 'nope.wav': no such file"),
    ("undecodable: infer", "sts-infer", lambda f: _infer(f, f["ckpt"], inp=f["root"] / "undecodable.wav"),
     "undecodable.wav", "cannot decode audio"),
    ("undecodable: fit-codec", "sts-fit-codec", lambda f: [str(f["root"] / "undecodable.wav"), "-o", str(f["root"] / "c")],
     "undecodable.wav", "cannot decode audio"),
    ("unencoded corpus: train", "sts-train",
     lambda f: [*_train(f, f["ckpt"])[:5], "--shards", str(f["unencoded"]), "--out-dir", str(f["root"] / "run")],
     "unencoded/data/part-", "the corpus is not encoded"),
    ("out dir exists: extend", "sts-extend-tokenizer", lambda f: [str(f["corrupt_base"]), "-o", str(f["ckpt"])],
     "ckpt", "already exists (pass --overwrite"),
    ("already extended: extend", "sts-extend-tokenizer", lambda f: [str(f["ckpt"]), "-o", str(f["root"] / "x3")],
     "ckpt", "already extended"),
    ("codec mismatch: infer", "sts-infer", lambda f: [*_infer(f, f["ckpt"])[:-4], "--codec", str(f["codec8"])],
     "codec8 has 8 codes but", "ckpt/sts_vocab.json holds 1024 speech tokens"),
    ("output suffix: infer", "sts-infer", lambda f: _infer(f, f["ckpt"], out="o.mp3"),
     "o.mp3", "speech is written as .wav or .flac"),
]  # fmt: skip


def _one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ") or lines[0].startswith(f"{prog} sft: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("prog", "make_args", "where", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_expected_failures_are_one_line(files, capsys, prog, make_args, where, problem):
    args = make_args(files)
    assert _main(prog)(args) == 2
    shown = "sts-infer" if prog == "sts" else prog  # `sts infer` runs sts-infer's main
    line = _one_error_line(capsys.readouterr().err, shown)
    assert where in line and problem in line, line


def test_debug_flag_and_env_show_the_traceback(files, capsys, monkeypatch):
    from infer.cli import main

    args = _infer(files, files["nope"])
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        main([*args, "--debug"])
    monkeypatch.setenv("STS_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        main(args)
    monkeypatch.delenv("STS_TRACEBACK")
    assert main(args) == 2  # and the flag did not leak into the environment
    with pytest.raises(InputError):  # through the umbrella too: `sts --debug infer ...`
        _main("sts")(["--debug", "infer", *args])
    assert "STS_TRACEBACK" not in os.environ


def test_a_bug_still_shows_its_traceback(files, monkeypatch):
    import infer.cli
    import infer.run

    def broken(cfg):
        raise KeyError("src_codes")  # what a bug looks like: no file, no typed error

    monkeypatch.setattr(infer.run, "_inputs", broken)
    with pytest.raises(KeyError, match="src_codes"):
        infer.cli.main(_infer(files, files["ckpt"]))
    with pytest.raises(ValueError, match="boom"):  # a bare ValueError is a bug too: not caught broadly
        cli_main("x", lambda args: (_ for _ in ()).throw(ValueError("boom")), [])


def test_full_disk_names_the_file(files, capsys, monkeypatch):
    """A write that fails with ENOSPC (or torch's "unexpected pos") is one line naming what was written."""
    import soundfile
    import transformers

    from infer.cli import main as infer_main
    from tokenizer_ext.cli import main as extend_main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # no file name, as write() raises it

    with monkeypatch.context() as m:
        m.setattr(soundfile, "write", full)
        assert infer_main(_infer(files, files["ckpt"], out="full.wav")) == 2
    line = _one_error_line(capsys.readouterr().err, "sts-infer")
    assert "out/full.wav: no space left on device" in line and "MB free there" in line
    assert not (files["root"] / "out" / "full.wav").exists()

    out, base = files["root"] / "extended-full", _tiny_base(files)
    with monkeypatch.context() as m:
        m.setattr(transformers.PreTrainedModel, "save_pretrained", full)
        assert extend_main([str(base), "-o", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "sts-extend-tokenizer")
    assert f"{out}: no space left on device" in line and not out.exists()


def _tiny_base(files) -> Path:
    from sts.testing import save_tiny_lfm2

    base = files["root"] / "base"
    return base if base.exists() else save_tiny_lfm2(base)


def test_full_disk_while_saving_a_checkpoint(files, capsys, monkeypatch):
    """torch.save's own error on a full disk is "unexpected pos", with no file: training names the checkpoint."""
    import torch

    from train.cli import main

    def full(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    out = files["root"] / "run-full"
    args = [*_train(files, files["ckpt"])[:-1], str(out), "--max-steps", "1", "--save-every", "1",
            "--no-gen-eval", "--eval-every", "0"]  # fmt: skip
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err, "sts-train")
    assert ".checkpoint-0000001.tmp: the write failed (" in line and "unexpected pos" in line
    assert "is the disk full?" in line
    assert not list(out.glob("checkpoint-*"))  # nothing that a resume would trust


def test_error_messages_of_machine_errors():
    assert (
        error_message(FileNotFoundError(2, "No such file or directory", "/x/y"))
        == "/x/y: No such file or directory"
    )
    assert error_message(PermissionError(13, "Permission denied", "/root/z")) == "/root/z: Permission denied"
    assert "no space left on device" in error_message(OSError(errno.ENOSPC, "No space left on device"))
    assert (
        error_message(OSError("model x is not a local folder and is not a valid model identifier"))
        is not None
    )
    assert error_message(OSError(errno.EBADF, "Bad file descriptor")) is None  # a bug, not the machine
    assert error_message(KeyError("src_codes")) is None and error_message(ValueError("x")) is None
    assert error_message(InputError("a.json:3: bad\nsecond line")) == "a.json:3: bad second line"
    with pytest.raises(DiskFullError, match="f.bin: no space left on device"), writing("/tmp/f.bin"):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RuntimeError, match="other"), writing("/tmp/f.bin"):
        raise RuntimeError("other")  # not a write failure: passes through


@pytest.mark.parametrize(
    ("script", "args", "where"),
    [
        ("sts-infer", lambda f: _infer(f, f["vocab_one_off"]), "sts_vocab.json: <|s_0|> is id"),
        pytest.param(
            "sts-train",
            lambda f: _train(f, f["nope"]),
            "no-such-model: no such model folder",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "sts",
            lambda f: ["extend-tokenizer", str(f["corrupt_base"]), "-o", str(f["root"] / "x4")],
            "model.safetensors",
            marks=pytest.mark.slow,
        ),  # fmt: skip
    ],
    ids=["sts-infer", "sts-train", "sts extend-tokenizer"],
)
def test_installed_scripts_print_one_line(files, script, args, where):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "STS_TRACEBACK": ""}
    done = subprocess.run(
        [str(BIN / script), *args(files)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and where in done.stderr
    assert sum(": error: " in line for line in done.stderr.splitlines()) == 1
    debug = subprocess.run(
        [str(BIN / script), *args(files), "--debug"], capture_output=True, text=True, env=env, timeout=300
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def _into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """Run `argv` with stdout a pipe whose reader has already gone (as `| head -1` leaves it)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE: BrokenPipeError in Python
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "STS_TRACEBACK": ""}
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ["sts-train", "sft", "--help"],
        ["sts-build-corpus", "--help"],
        ["sts-infer", "--help"],
        ["sts", "--help"],
        ["sts-train", "--help"],
        ["sts", "train", "sft", "--help"],
    ],  # fmt: skip
    ids=lambda argv: " ".join(argv),
)
def test_help_into_a_closed_pipe_is_quiet(argv):
    done = _into_closed_pipe([str(BIN / argv[0]), *argv[1:]])
    assert done.stderr == "" and done.returncode == 0  # no BrokenPipeError traceback, --help's status


def test_output_into_a_closed_pipe_ends_quietly():
    from sts.errors import EXIT_BROKEN_PIPE

    script = (
        "import sys; from sts.errors import cli_main; sys.exit(cli_main('x', lambda a: print('y' * 99999)))"
    )
    done = _into_closed_pipe([sys.executable, "-c", script])
    assert done.stderr == "" and done.returncode == EXIT_BROKEN_PIPE
