"""A resume compares the request with the run its checkpoint holds: refuse data/model changes, warn on
safe ones, `--override` forces and records (train.resume_check, train.config.RESUME_RULES)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field

import pytest
import torch
import yaml

from sts.config import config_to_dict, make_config
from train import resume_check
from train.checkpoint import latest_checkpoint
from train.cli import main
from train.config import CONFIG_DIR, RESUME_RULES, TrainConfig
from train.logger import read_metrics
from train.resume_check import Change, compare, flatten, rule_of
from train.testing import write_tiny_encoded_shards


def test_every_setting_has_a_resume_rule():
    keys = flatten(config_to_dict(TrainConfig()))
    unruled = [k for k in keys if not any(k == p or k.startswith(p + ".") for p in RESUME_RULES)]
    assert not unruled, f"classify these in train.config.RESUME_RULES: {unruled}"
    assert set(RESUME_RULES.values()) <= {"refuse", "warn", "ignore"}
    assert rule_of("sft.task_weights.asr") == "refuse" and rule_of("log.every") == "warn"
    assert (
        rule_of("optim.lr") == "refuse" and rule_of("optim.max_steps") == "warn"
    )  # the longest prefix decides
    assert rule_of("a_setting_nobody_classified") == "refuse"  # unknown: refused, never silently allowed


@dataclass
class _Optimization:
    lr: float = 1e-3
    max_steps: int = 10


@dataclass
class _Logging:
    log_every: int = 10


@dataclass
class _Nested:
    """A config nested by concern, as TrainConfig's groups are: the comparison is on dotted keys."""

    model: str = "m"
    out_dir: str = "out"
    optimization: _Optimization = field(default_factory=_Optimization)
    logging: _Logging = field(default_factory=_Logging)
    task_weights: dict = field(default_factory=lambda: {"asr": 0.5, "tts": 0.5})


def test_nested_groups_compare_by_dotted_key_and_group_rule(monkeypatch, tmp_path):
    monkeypatch.setattr(resume_check, "RESUME_RULES", {"model": "refuse", "optimization": "refuse",
                        "optimization.max_steps": "warn", "logging": "warn", "task_weights": "refuse",
                        "out_dir": "ignore"})  # fmt: skip
    assert flatten({"optimization": {"lr": 1, "betas": (0.9, 0.95)}, "w": {}}) == {
        "optimization.lr": 1, "optimization.betas": [0.9, 0.95], "w": {}}  # fmt: skip
    recorded = config_to_dict(_Nested())
    request = _Nested(out_dir=str(tmp_path))
    request.optimization.lr, request.optimization.max_steps, request.logging.log_every = 0.5, 20, 1
    request.task_weights["asr"] = 0.0
    changes = {c.key: c for c in compare(request, recorded, None)}
    assert {k: c.rule for k, c in changes.items()} == {"optimization.lr": "refuse",
            "optimization.max_steps": "warn", "logging.log_every": "warn", "task_weights.asr": "refuse",
            "out_dir": "ignore"}  # fmt: skip
    assert changes["optimization.lr"].show() == "optimization.lr: 0.001 -> 0.5"


@pytest.fixture(scope="module")
def run(extended_lm_dir, tmp_path_factory):
    """A tiny cpt run of 2 steps on a copy of the base model, and the arguments that made it."""
    root = tmp_path_factory.mktemp("resume")
    base = root / "base"
    shutil.copytree(extended_lm_dir, base)
    corpus = root / "corpus"
    write_tiny_encoded_shards(corpus, num_codes=1024)
    args = ["cpt", "--config", str(CONFIG_DIR / "tiny_cpt.yaml"), "--model", str(base), "--data.shards",
            str(corpus), "--out-dir", str(root / "run"), "--optim.max-steps", "2"]  # fmt: skip
    assert main(args) == 0
    return root, args


def _fresh(run, tmp_path):
    """A copy of the run folder (and its base and corpus) to resume in, with the arguments for it."""
    root, args = run
    for name in ("base", "corpus", "run"):
        shutil.copytree(root / name, tmp_path / name)
    return tmp_path, [str(tmp_path / a[len(str(root)) + 1 :]) if a.startswith(str(root)) else a for a in args]


def _set(args, flag, value):
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def test_changed_data_or_model_settings_are_refused_naming_each(run, tmp_path, capsys):
    root, args = _fresh(run, tmp_path)
    other = tmp_path / "other"
    shutil.copytree(root / "base", other)
    _perturb(other)
    changed = _set(_set(args, "--model", str(other)), "--optim.lr", "0.5")
    changed = _set(_set(changed, "--cpt.speech-weight", "0.9"), "--lora.r", "4")
    changed = _set(changed, "--optim.max-steps", "4")
    capsys.readouterr()
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert err.startswith("sts-train cpt: error: ") and err.count("\n") == 1, err
    for expected in (f"model: '{run[0] / 'base'}' -> '{other}'; ", "lr: 0.003 -> 0.5",
                     "cpt.speech_weight: 0.5 -> 0.9", "lora.r: 0 -> 4", "--override"):  # fmt: skip
        assert expected in err, err  # the base the run started from, by content: not its copy here
    assert "max_steps" not in err  # allowed: not among the refused
    assert latest_checkpoint(root / "run").name == "checkpoint-0000002"  # nothing trained

    # the base moved elsewhere is the same model; another model copied to its path is not
    moved = tmp_path / "moved-base"
    shutil.move(root / "base", moved)
    args = _set(_set(args, "--model", str(moved)), "--optim.max-steps", "4")
    assert main(args) == 0  # and checkpoint 4 records the base where it lies now
    shutil.rmtree(moved)
    shutil.copytree(other, moved)
    assert main(_set(args, "--optim.max-steps", "6")) == 2
    err = capsys.readouterr().err
    assert f"model: {moved} (content " in err and "other content now" in err, err

    # one of the run's own checkpoints is not the base
    own = latest_checkpoint(root / "run")
    assert main(_set(_set(args, "--model", str(own)), "--optim.max-steps", "6")) == 2
    assert "a checkpoint of this run" in capsys.readouterr().err


def test_a_shard_added_to_the_corpus_is_a_data_change(run, tmp_path, capsys):
    root, args = _fresh(run, tmp_path)
    extra = write_tiny_encoded_shards(tmp_path / "extra", num_codes=1024, num_shards=3)[-1]
    shutil.copy(extra, root / "corpus" / "data" / extra.name)
    capsys.readouterr()
    assert main(_set(args, "--optim.max-steps", "4")) == 2
    err = capsys.readouterr().err
    assert "shards: 2 file(s)" in err and f"added {extra.name}" in err, err


def test_safe_changes_are_allowed_with_a_warning_and_recorded(run, tmp_path, capsys):
    root, args = _fresh(run, tmp_path)
    capsys.readouterr()
    assert main(_set(_set(args, "--optim.max-steps", "4"), "--log.every", "2")) == 0
    out = capsys.readouterr().out
    assert "warning: resuming" in out and "optim.max_steps: 2 -> 4" in out and "log.every: 1 -> 2" in out, out
    resume = read_metrics(root / "run", kind="resume")
    assert resume == [{"kind": "resume", "step": 2, "forced": {},
                       "changed": {"optim.max_steps": [2, 4], "log.every": [1, 2]}}]  # fmt: skip
    state = json.loads((latest_checkpoint(root / "run") / "trainer_state.json").read_text())
    assert state["step"] == 4 and "forced" not in state
    origin = state["origin"]
    assert origin["model"]["fingerprint"] and origin["files"]["shards"][0][0].startswith("part-")


def test_override_forces_applies_and_records_the_change(run, tmp_path, capsys):
    root, args = _fresh(run, tmp_path)
    forced = _set(
        _set(_set(args, "--optim.lr", "0.5"), "--optim.max-steps", "4"), "--optim.warmup-steps", "1"
    )
    capsys.readouterr()
    assert main([*forced, "--override"]) == 0
    out = capsys.readouterr().out
    assert "FORCED changes (--override): optim.lr: 0.003 -> 0.5" in out, out
    checkpoint = latest_checkpoint(root / "run")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert [(f["step"], f["changes"]) for f in state["forced"]] == [(2, {"optim.lr": [0.003, 0.5]})]
    assert yaml.safe_load((checkpoint / "train_config.yaml").read_text())["optim"]["lr"] == 0.5
    assert [r["forced"] for r in read_metrics(root / "run", kind="resume")] == [{"optim.lr": [0.003, 0.5]}]
    # the new lr is the one used: cosine from 0.5 (warm-up 1, 4 steps, min ratio 0.1) at step 3
    lr = {r["step"]: r["lr"] for r in read_metrics(root / "run") if "lr" in r}
    factor = 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * (2 - 1) / 3)).item())
    assert lr[3] == pytest.approx(0.5 * factor, rel=1e-6)
    # the forced value is now the run's: the same command resumes without --override, and the
    # record of the forced change stays in every later checkpoint
    assert main(_set(forced, "--optim.max-steps", "6")) == 0
    state = json.loads((latest_checkpoint(root / "run") / "trainer_state.json").read_text())
    assert state["step"] == 6 and [f["changes"] for f in state["forced"]] == [{"optim.lr": [0.003, 0.5]}]


def test_checkpoint_without_origin_compares_the_yaml(tmp_path):
    """Checkpoints written before origins were recorded: the model by path, the rest by value."""
    recorded = config_to_dict(make_config(TrainConfig, model=str(tmp_path / "a"), data__seq_len=128))
    cfg = make_config(TrainConfig, model=str(tmp_path / "b"), data__seq_len=256, out_dir=tmp_path / "run")
    changes = {c.key: c for c in compare(cfg, recorded, None)}
    assert isinstance(changes["model"], Change) and changes["model"].rule == "refuse"
    assert changes["data.seq_len"].show() == "data.seq_len: 128 -> 256"
    old_flat = {"model": str(tmp_path / "a"), "seq_len": 128, "lr": 0.003}  # a run of the flat layout
    changes = {c.key: c for c in compare(cfg, old_flat, None)}
    assert (
        changes["data.seq_len"].show() == "data.seq_len: 128 -> 256" and changes["optim.lr"].rule == "refuse"
    )


def _perturb(model_dir):
    from safetensors.torch import load_file, save_file

    weights = load_file(model_dir / "model.safetensors")
    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})


def test_model_fingerprint_follows_content_not_path(tmp_path, monkeypatch):
    import sts.model_files as model_files
    from sts.model_files import model_fingerprint

    monkeypatch.setattr(model_files, "_SAMPLE_BYTES", 16)  # files over 16 KiB are sampled (real: 64 MiB)
    from safetensors.torch import save_file

    a = tmp_path / "a"
    a.mkdir()
    (a / "config.json").write_text('{"hidden_size": 8}')
    save_file({"w": torch.arange(40_000, dtype=torch.float32)}, a / "model.safetensors")
    first = model_fingerprint(a)
    assert first == model_fingerprint(str(a)) and len(first) == 16
    shutil.copytree(a, tmp_path / "moved")
    assert model_fingerprint(tmp_path / "moved") == first
    save_file({"w": torch.arange(40_000, dtype=torch.float32) + 1}, a / "model.safetensors")  # same size
    assert model_fingerprint(a) != first
    assert model_fingerprint("LiquidAI/LFM2-350M") is None and model_fingerprint(tmp_path / "none") is None
