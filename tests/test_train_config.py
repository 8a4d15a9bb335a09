"""Training configs: every shipped YAML parses into TrainConfig, round-trips, and the CLI reads it;
typos, misplaced keys, old flat files and values out of range are handled as docs/configuration.md says."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import yaml

from sts.cli import parse_cli
from sts.config import ConfigError, load_config, save_config
from train.cli import main, parse_train
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
        assert dpo.stage == "dpo" and dpo.model.startswith(str(sft.out_dir)) and dpo.dpo.pairs
        assert dpo.data.shards == sft.data.shards and dpo.data.seq_len == sft.data.seq_len
        assert (dpo.dpo.beta, dpo.dpo.loss, dpo.optim.lr) == (0.1, "sigmoid", 1e-6)
        assert dpo.eval.generate and 0 < dpo.eval.every <= dpo.log.save_every
        assert dpo.optim.warmup_steps <= 0.05 * dpo.optim.max_steps
    assert load_config(TrainConfig, CONFIG_DIR / "dpo_llasa_1b.yaml").dpo.reference == "precomputed"


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_shipped_config_parses_and_round_trips(path, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_config(TrainConfig, path)
    assert not caplog.records, "a shipped config uses old option names"
    assert cfg.stage in path.name
    again = load_config(TrainConfig, save_config(cfg, tmp_path / "again.yaml"))
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
    assert parse_train(cfg.stage, ["--config", str(path)]) == cfg  # and the command line reads it


def test_recipe_shape():
    cpt = load_config(TrainConfig, CONFIG_DIR / "cpt_lfm2_350m.yaml")
    sft = load_config(TrainConfig, CONFIG_DIR / "sft_lfm2_350m.yaml")
    for cfg in (cpt, sft):
        assert cfg.data.seq_len == 4096 and cfg.data.packing and cfg.runtime.loss_impl == "auto"
    assert cpt.stage == "cpt" and any("wikipedia" in d for d in cpt.cpt.text_datasets)
    assert sft.stage == "sft" and sft.sft.loss_mask == "assistant"
    assert set(sft.sft.task_weights) == {"s2st", "asr", "tts", "s2tt", "t2tt"}


def test_llasa_recipe_follows_llasa():
    """Llasa's window and learning rates (zhenye234/LLaSA_training config.json and
    finetune/offline_finetune/config.json), on the adopted model, Llama's LoRA module names."""
    cpt = load_config(TrainConfig, CONFIG_DIR / "cpt_llasa_1b.yaml")
    sft = load_config(TrainConfig, CONFIG_DIR / "sft_llasa_1b.yaml")
    assert cpt.model == "runs/llasa-1b-adopted" and str(cpt.out_dir) in sft.model
    assert (cpt.stage, cpt.optim.lr, sft.stage, sft.optim.lr) == ("cpt", 5e-5, "sft", 1e-5)
    for cfg in (cpt, sft):
        assert cfg.data.seq_len == 2048 and cfg.data.packing and cfg.runtime.precision == "bf16"
        assert cfg.runtime.gradient_checkpointing and cfg.optim.betas == (0.9, 0.95)
        assert 0 < cfg.optim.warmup_steps <= 0.05 * cfg.optim.max_steps
        assert 0 < cfg.eval.every <= cfg.log.save_every and "o_proj" in cfg.lora.targets
        assert cfg.optim.batch_size * cfg.optim.grad_accum * cfg.data.seq_len >= 32768
    assert sft.sft.loss_mask == "assistant" and set(sft.sft.task_weights) == {
        "s2st",
        "asr",
        "tts",
        "s2tt",
        "t2tt",
    }


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_launch_configs_are_valid_yaml(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in {"NO", "FSDP", "DEEPSPEED"} and data["mixed_precision"] == "bf16"


def test_flags_override_the_yaml():
    args = ["--config", str(CONFIG_DIR / "tiny_sft.yaml"), "--optim.lr", "0.5", "--sft.loss-mask", "full"]
    cfg = parse_train("sft", args)
    assert cfg.optim.lr == 0.5 and cfg.sft.loss_mask == "full" and cfg.data.seq_len == 256
    assert parse_cli(TrainConfig, ["--eval.sampling.do-sample", "--eval.sampling.temperature", "0.7"],
                     prog="x").eval.sampling.temperature == 0.7  # fmt: skip


def test_a_typo_names_the_file_the_key_and_the_closest_one(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: sft\noptim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.lrr is not an option; did you mean 'optim.lr'\?"):
        load_config(TrainConfig, bad)
    bad.write_text("stage: sft\ndata:\n  warmup_steps: 3\n")  # in the wrong group
    with pytest.raises(
        ConfigError, match=r"bad.yaml: data.warmup_steps .* did you mean 'optim.warmup_steps'\?"
    ):
        load_config(TrainConfig, bad)
    bad.write_text("stage: sft\noptim: {batch_size: many}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.batch_size expects int, got 'many'"):
        load_config(TrainConfig, bad)
    bad.write_text("stage: sft\noptim: {batch_size: 0}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.batch_size must be >= 1, got 0"):
        load_config(TrainConfig, bad)


def test_an_old_flat_file_is_read_with_one_warning(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text(
        "stage: sft\nlr: 0.01\nbatch_size: 3\ngen_eval_temperature: 0.5\ntask_weights: {s2st: 1.0}\n"
    )
    with caplog.at_level(logging.WARNING):
        cfg = load_config(TrainConfig, old)
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.sft.task_weights) == (0.01, 3, {"s2st": 1.0})
    assert cfg.eval.sampling.do_sample and cfg.eval.sampling.temperature == 0.5
    assert len(caplog.records) == 1 and "lr -> optim.lr" in caplog.text and "old.yaml" in caplog.text


def test_old_flags_still_work_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = parse_train(
            "sft", ["--lr", "0.5", "--no-packing", "--task-weights.s2st", "3", "--gen-eval-samples", "2"]
        )
    assert (cfg.optim.lr, cfg.data.packing, cfg.sft.task_weights["s2st"], cfg.eval.samples) == (
        0.5,
        False,
        3.0,
        2,
    )
    assert "--lr -> --optim.lr" in caplog.text


def test_stage_specific_options_are_checked_against_the_stage(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"dpo.beta applies to dpo only, not to stage sft"):
        TrainConfig(stage="sft", dpo=dataclasses.replace(TrainConfig().dpo, beta=0.5))
    with pytest.raises(ConfigError, match=r"cpt.speech_weight applies to cpt only"):
        load_config(TrainConfig, CONFIG_DIR / "tiny_sft.yaml", **{"cpt.speech_weight": 0.2})
    assert main(["sft", "--dpo.beta", "0.5"]) == 2  # sts-train sft does not take dpo's options
    assert "unrecognized option(s) --dpo.beta" in capsys.readouterr().err
    assert main(["sft", "--config", str(CONFIG_DIR / "tiny_cpt.yaml")]) == 2  # it sets cpt.speech_weight
    assert "tiny_cpt.yaml: cpt.speech_weight applies to cpt only, not to stage sft" in capsys.readouterr().err
    assert (
        parse_train("dpo", ["--config", str(CONFIG_DIR / "tiny_sft.yaml")]).stage == "dpo"
    )  # sft's groups serve dpo


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optim.lr", "-1"], "--optim.lr must be > 0, got -1.0"),
        (["--optim.batch-size", "0"], "--optim.batch-size must be >= 1, got 0"),
        (["--optim.batch-size", "abc"], "--optim.batch-size: expects an integer, got 'abc'"),
        (["--data.eval-fraction", "1"], "--data.eval-fraction must be < 1, got 1.0"),
        (
            ["--eval.sampling.do-sample", "--eval.sampling.temperature", "0"],
            "--eval.sampling.temperature must be > 0",
        ),
        (["--optim.batchsize", "3"], "did you mean --optim.batch-size?"),
        (["--sft.task-weights.s2st", "-1"], "--sft.task-weights must be >= 0"),
    ],
)
def test_bad_values_are_one_line_and_exit_2_before_anything_loads(args, message, capsys):
    assert main(["sft", "--model", "no/such/model", *args]) == 2  # the model would fail later
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("sts-train sft: error: ")


def test_bad_values_in_code_are_errors_too():
    with pytest.raises(ConfigError, match="cpt.speech_weight must be <= 1"):
        TrainConfig(stage="cpt", cpt=dataclasses.replace(TrainConfig().cpt, speech_weight=1.5))
    with pytest.raises(ConfigError, match="karaoke"):
        TrainConfig(sft=dataclasses.replace(TrainConfig().sft, task_weights={"karaoke": 1.0}))


@pytest.mark.parametrize("stage", ["cpt", "sft", "dpo"])
def test_help_is_a_short_reference_card(stage, capsys):
    with pytest.raises(SystemExit) as err:
        main([stage, "--help"])
    out = capsys.readouterr().out
    assert err.value.code == 0 and len(out.splitlines()) <= 90  # dpo: 86 lines with --lora.train-speech-rows
    assert "--optim.lr FLOAT" in out and "[default 0.0002; > 0]" in out
    assert ("--dpo.beta" in out) == (stage == "dpo") and ("--cpt.speech-weight" in out) == (stage == "cpt")


def test_cli_usage(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "sts-train {cpt,sft,dpo-pairs,dpo,merge-lora,adopt-axolotl}" in capsys.readouterr().out
