"""Checkpoints a resume can trust, and `sts-train merge-lora`: a LoRA run as a plain HF folder."""

from __future__ import annotations

import json
import stat

import pytest
import torch

from sts.testing.numerics import assert_close_rounding
from sts.vocab import SpeechVocab
from train.checkpoint import (
    CheckpointError,
    checkpoint_problem,
    latest_checkpoint,
    list_checkpoints,
    resume_checkpoint,
    safetensors_problem,
)
from train.cli import main
from train.logger import read_metrics
from train.testing import tiny_cli_args


def truncate(path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_safetensors_and_checkpoint_problems(tmp_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "checkpoint-0000002"
    (ckpt / "train_state").mkdir(parents=True)
    torch.save({"optimizer": {"state": torch.zeros(64)}}, ckpt / "train_state" / "train_state.pt")
    save_file({"w": torch.zeros(4, 4)}, ckpt / "model.safetensors")
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 2}))
    assert safetensors_problem(ckpt / "model.safetensors") is None and checkpoint_problem(ckpt) is None

    size = (ckpt / "model.safetensors").stat().st_size
    truncate(ckpt / "model.safetensors", size - 10)
    assert "truncated" in safetensors_problem(ckpt / "model.safetensors")
    truncate(ckpt / "model.safetensors", 5)
    assert "shorter than a safetensors header" in checkpoint_problem(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert "unreadable safetensors header" in checkpoint_problem(ckpt)
    (ckpt / "model.safetensors").unlink()
    assert "no weights file" in checkpoint_problem(ckpt)
    (ckpt / "trainer_state.json").write_text("{")
    assert "trainer_state.json: unreadable" in checkpoint_problem(ckpt)

    logged = []
    with pytest.raises(CheckpointError, match="no intact checkpoint.*checkpoint-0000002"):
        resume_checkpoint(tmp_path, log=logged.append)
    assert resume_checkpoint(tmp_path / "empty", log=logged.append) is None


def test_resume_passes_over_a_truncated_newest_checkpoint(extended_lm_dir, shards, tmp_path, capsys):
    out = tmp_path / "cpt"
    args = tiny_cli_args("cpt", extended_lm_dir, shards, out)
    assert main(args) == 0
    straight = {r["step"]: r["loss"] for r in read_metrics(out)}
    newest = latest_checkpoint(out)
    assert newest.name == "checkpoint-0000004"
    weights = newest / "model.safetensors"
    truncate(weights, weights.stat().st_size // 2)
    (out / "metrics.jsonl").unlink()
    capsys.readouterr()

    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "checkpoint-0000004 is damaged (model.safetensors:" in printed
    assert "resuming from checkpoint-0000002, the newest intact checkpoint" in printed
    resumed = {r["step"]: r["loss"] for r in read_metrics(out)}
    assert resumed == pytest.approx({3: straight[3], 4: straight[4]}, rel=1e-6)
    assert checkpoint_problem(latest_checkpoint(out)) is None  # rewritten whole

    for checkpoint in list_checkpoints(out):  # nothing intact: refused, not silently restarted
        truncate(checkpoint / "model.safetensors", 100)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sts-train cpt: error: ") and "no intact checkpoint" in err


@pytest.fixture(scope="module")
def lora_checkpoint(extended_lm_dir, shards, tmp_path_factory):
    pytest.importorskip("peft")
    out = tmp_path_factory.mktemp("lora") / "run"
    assert main(tiny_cli_args("sft", extended_lm_dir, shards, out, "--lora.r", "4", "--eval.every", "0")) == 0
    return latest_checkpoint(out)


def test_merge_lora_gives_a_plain_folder_with_the_same_outputs(lora_checkpoint, extended_lm_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from infer.translate import Translator
    from sts.testing import save_tiny_xcodec2

    merged = tmp_path / "merged"
    assert main(["merge-lora", str(lora_checkpoint), "-o", str(merged)]) == 0
    assert not (merged / "adapter_config.json").exists() and (merged / "model.safetensors").is_file()
    assert SpeechVocab.load(merged) == SpeechVocab.load(extended_lm_dir)
    note = json.loads((merged / "merged_from.json").read_text())
    assert note["step"] == 4 and note["base_model"] == str(extended_lm_dir)
    assert (merged / "train_config.yaml").is_file()
    assert stat.S_IMODE((merged / "model.safetensors").stat().st_mode) == 0o644  # umask 022 here

    ids = torch.randint(0, SpeechVocab.load(merged).vocab_size, (1, 12))
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert not any("lora" in name for name, _ in plain.named_parameters())
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(extended_lm_dir), lora_checkpoint
    )
    base = AutoModelForCausalLM.from_pretrained(extended_lm_dir).eval()
    cfg = plain.config  # merged W + BA vs W x + B(A x): float32 matmuls over every layer's widths
    n = cfg.num_hidden_layers * (cfg.hidden_size + cfg.intermediate_size) + cfg.hidden_size
    with torch.no_grad():
        want = adapted.eval()(ids).logits
        assert_close_rounding(plain(ids).logits, want, reduction_size=n)
        with pytest.raises(AssertionError):  # the adapter did something
            assert_close_rounding(base(ids).logits, want, reduction_size=n)

    translator = Translator.from_checkpoint(merged, codec=str(save_tiny_xcodec2(tmp_path / "codec")))
    assert translator.vocab == SpeechVocab.load(extended_lm_dir)


def test_merge_lora_errors_are_one_line(lora_checkpoint, extended_lm_dir, tmp_path, capsys):
    assert main(["merge-lora", str(extended_lm_dir), "-o", str(tmp_path / "m")]) == 2
    assert "not a LoRA checkpoint" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["merge-lora", str(lora_checkpoint), "-o", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        main(["merge-lora", str(lora_checkpoint), "-o", str(tmp_path / "m"), "--base-model", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("sts-train merge-lora: error: ") and "cannot load its base model" in err
