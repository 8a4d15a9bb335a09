"""Training configs: every shipped YAML parses into TrainConfig, round-trips, and the CLI reads it."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from sts.config import ConfigError, load_config, parse_cli, save_config
from train.cli import main
from train.config import CONFIG_DIR, TrainConfig, shipped_configs


def test_the_recipe_configs_are_shipped():
    names = {p.name for p in shipped_configs()}
    assert {"cpt_lfm2_350m.yaml", "sft_lfm2_350m.yaml", "tiny_cpt.yaml", "tiny_sft.yaml"} <= names
    assert {"cpt_llasa_1b.yaml", "sft_llasa_1b.yaml"} <= names
    assert {"dpo_lfm2_350m.yaml", "dpo_llasa_1b.yaml"} <= names


def test_dpo_recipes_start_from_the_sft_checkpoints():
    """TRL 1.16's DPOConfig defaults (beta 0.1, sigmoid, lr 1e-6), on the SFT runs' checkpoints and pairs;
    Llasa's window, bf16 and a precomputed reference."""
    for model, sft_name in (("lfm2_350m", "sft_lfm2_350m.yaml"), ("llasa_1b", "sft_llasa_1b.yaml")):
        dpo = load_config(TrainConfig, CONFIG_DIR / f"dpo_{model}.yaml")
        sft = load_config(TrainConfig, CONFIG_DIR / sft_name)
        assert (
            dpo.stage == "dpo"
            and dpo.model.startswith(str(sft.out_dir))
            and dpo.pairs
            and dpo.shards == sft.shards
        )
        assert (dpo.dpo_beta, dpo.dpo_loss, dpo.lr) == (0.1, "sigmoid", 1e-6) and dpo.seq_len == sft.seq_len
        assert (
            dpo.gen_eval and 0 < dpo.eval_every <= dpo.save_every and dpo.warmup_steps <= 0.05 * dpo.max_steps
        )
    assert load_config(TrainConfig, CONFIG_DIR / "dpo_llasa_1b.yaml").dpo_reference == "precomputed"


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_shipped_config_parses_and_round_trips(path, tmp_path):
    cfg = load_config(TrainConfig, path)
    assert cfg.stage in path.name
    again = load_config(TrainConfig, save_config(cfg, tmp_path / "again.yaml"))
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)


def test_recipe_shape():
    cpt = load_config(TrainConfig, CONFIG_DIR / "cpt_lfm2_350m.yaml")
    sft = load_config(TrainConfig, CONFIG_DIR / "sft_lfm2_350m.yaml")
    for cfg in (cpt, sft):
        assert cfg.seq_len == 4096 and cfg.packing and cfg.loss_impl == "auto"
    assert cpt.stage == "cpt" and any("wikipedia" in d for d in cpt.text_datasets)
    assert sft.stage == "sft" and sft.loss_mask == "assistant"
    assert set(sft.task_weights) == {"s2st", "asr", "tts", "s2tt", "t2tt"}


def test_llasa_recipe_follows_llasa():
    """Llasa's window and learning rates (zhenye234/LLaSA_training config.json and
    finetune/offline_finetune/config.json), on the adopted model, Llama's LoRA module names."""
    cpt = load_config(TrainConfig, CONFIG_DIR / "cpt_llasa_1b.yaml")
    sft = load_config(TrainConfig, CONFIG_DIR / "sft_llasa_1b.yaml")
    assert cpt.model == "runs/llasa-1b-adopted" and str(cpt.out_dir) in sft.model
    assert (cpt.stage, cpt.lr, sft.stage, sft.lr) == ("cpt", 5e-5, "sft", 1e-5)
    for cfg in (cpt, sft):
        assert cfg.seq_len == 2048 and cfg.packing and cfg.precision == "bf16" and cfg.gradient_checkpointing
        assert cfg.betas == (0.9, 0.95) and 0 < cfg.warmup_steps <= 0.05 * cfg.max_steps
        assert 0 < cfg.eval_every <= cfg.save_every and "o_proj" in cfg.lora_targets
        assert cfg.batch_size * cfg.grad_accum * cfg.seq_len >= 32768
    assert sft.loss_mask == "assistant" and set(sft.task_weights) == {"s2st", "asr", "tts", "s2tt", "t2tt"}


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_launch_configs_are_valid_yaml(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in {"NO", "FSDP", "DEEPSPEED"} and data["mixed_precision"] == "bf16"


def test_flags_override_the_yaml():
    cfg = parse_cli(TrainConfig, ["--config", str(CONFIG_DIR / "tiny_sft.yaml"), "--lr", "0.5", "--loss-mask", "full"],
                    prog="sts-train sft")  # fmt: skip
    assert cfg.lr == 0.5 and cfg.loss_mask == "full" and cfg.seq_len == 256


def test_bad_values_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: sft\ntask_weights: {s2st: 1.0, karaoke: 1.0}\n")
    with pytest.raises(ConfigError, match="karaoke"):
        load_config(TrainConfig, bad)
    with pytest.raises(ValueError, match="speech_weight"):
        TrainConfig(speech_weight=1.5)


def test_cli_usage(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "sts-train {cpt,sft,dpo}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main(["sft", "--help"])
    assert err.value.code == 0
    assert "--task-weights" in capsys.readouterr().out
