from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sts.config import ConfigError, load_config, parse_cli, save_config
from tokenizer_ext import ExtendConfig


def test_yaml_round_trip(tmp_path):
    cfg = ExtendConfig("LiquidAI/LFM2-350M", Path("runs/x"), num_speech_tokens=4096, frame_rate=25.0)
    path = save_config(cfg, tmp_path / "extend.yaml")
    assert yaml.safe_load(path.read_text())["out_dir"] == "runs/x"
    assert load_config(ExtendConfig, path) == cfg


def test_unknown_key_and_wrong_type_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base_model: a\nout_dir: b\nnum_speech_token: 5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown option\(s\) \['num_speech_token'\]"):
        load_config(ExtendConfig, path)
    path.write_text("base_model: a\nout_dir: b\nnum_speech_tokens: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: option 'num_speech_tokens' expects"):
        load_config(ExtendConfig, path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(ExtendConfig, path)


@dataclass
class Nested:
    inner: ExtendConfig
    tags: list[str] = field(default_factory=list)
    limit: float | None = None


def test_nested_and_optional_fields(tmp_path):
    cfg = Nested(ExtendConfig("m", Path("o")), tags=["a"], limit=2)
    path = save_config(cfg, tmp_path / "n.yaml")
    assert load_config(Nested, path) == cfg


def test_cli_flags_override_the_yaml_file(tmp_path):
    path = save_config(ExtendConfig("from-yaml", Path("o"), num_speech_tokens=7), tmp_path / "c.yaml")
    cfg = parse_cli(ExtendConfig, ["from-flags", "out", "--config", str(path)], prog="x")
    assert (cfg.base_model, cfg.out_dir, cfg.num_speech_tokens) == ("from-flags", Path("out"), 7)
    cfg = parse_cli(ExtendConfig, ["m", "o", "--config", str(path), "--num-speech-tokens", "9"], prog="x")
    assert cfg.num_speech_tokens == 9
