from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest
import yaml
from annotated_types import Ge

from sts.cli import parse_cli
from sts.config import ConfigError, check_config, load_config, save_config
from tokenizer_ext import ExtendConfig


def test_yaml_round_trip(tmp_path):
    cfg = ExtendConfig("LiquidAI/LFM2-350M", Path("runs/x"), num_speech_tokens=4096, frame_rate=25.0)
    path = save_config(cfg, tmp_path / "extend.yaml")
    assert yaml.safe_load(path.read_text())["out_dir"] == "runs/x"
    assert load_config(ExtendConfig, path) == cfg


def test_unknown_key_and_wrong_type_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base_model: a\nout_dir: b\nnum_speech_token: 5\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: num_speech_token is not an option; did you mean 'num_speech_tokens'"
    ):
        load_config(ExtendConfig, path)
    path.write_text("base_model: a\nout_dir: b\nnum_speech_tokens: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: num_speech_tokens expects int, got 'many'"):
        load_config(ExtendConfig, path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(ExtendConfig, path)
    path.write_text("base_model: [a\n")
    with pytest.raises(ConfigError, match="bad.yaml: cannot read YAML config"):
        load_config(ExtendConfig, path)


@dataclass
class Inner:
    size: Annotated[int, Ge(1)] = 1
    """How many."""


@dataclass
class Nested:
    inner: ExtendConfig
    tags: list[str] = field(default_factory=list)
    limit: float | None = None
    group: Inner = field(default_factory=Inner)


def test_nested_and_optional_fields(tmp_path):
    cfg = Nested(ExtendConfig("m", Path("o")), tags=["a"], limit=2)
    path = save_config(cfg, tmp_path / "n.yaml")
    assert load_config(Nested, path) == cfg
    path.write_text("inner: {base_model: m, out_dir: o}\ngroup: {size: 0}\n")
    with pytest.raises(ConfigError, match=r"n.yaml: group.size must be >= 1, got 0"):
        load_config(Nested, path)
    with pytest.raises(ConfigError, match=r"group.size must be >= 1, got 0"):
        check_config(Nested(ExtendConfig("m", Path("o")), group=Inner(size=0)))


def test_cli_flags_override_the_yaml_file(tmp_path):
    path = save_config(ExtendConfig("from-yaml", Path("o"), num_speech_tokens=7), tmp_path / "c.yaml")
    cfg = parse_cli(ExtendConfig, ["from-flags", "out", "--config", str(path)], prog="x")
    assert (cfg.base_model, cfg.out_dir, cfg.num_speech_tokens) == ("from-flags", Path("out"), 7)
    cfg = parse_cli(ExtendConfig, ["m", "o", "--config", str(path), "--num-speech-tokens", "9"], prog="x")
    assert cfg.num_speech_tokens == 9
