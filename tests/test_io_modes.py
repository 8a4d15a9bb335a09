"""Everything the package writes honours the umask: 0644 files and 0755 folders under umask 022."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sts.config import save_config
from sts.io import atomic_open, current_umask, default_mode, temp_dir_beside, write_json_atomic
from sts.vocab import SpeechVocab


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class _Cfg:
    name: str = "x"
    """A field."""


def test_current_umask_and_default_modes(umask):
    assert current_umask() == umask
    assert default_mode() == 0o666 & ~umask and default_mode(is_dir=True) == 0o777 & ~umask
    if umask == 0o022:
        assert (default_mode(), default_mode(is_dir=True)) == (0o644, 0o755)


def test_writers_give_files_the_umask_mode(tmp_path, umask, speech_vocab):
    from train.token_cache import DocWriter

    files = [
        write_json_atomic(tmp_path / "a.json", {"k": 1}),
        save_config(_Cfg(), tmp_path / "train_config.yaml"),
        speech_vocab.save(tmp_path / "model"),
    ]
    writer = DocWriter(with_labels=False)
    writer.add("text", np.arange(5))
    files.append(writer.build({}).save(tmp_path / "cache.safetensors"))
    with atomic_open(tmp_path / "b.txt", "w") as f:
        f.write("hello")
    files.append(tmp_path / "b.txt")
    for path in files:
        assert mode(path) == 0o666 & ~umask, path
    assert SpeechVocab.load(tmp_path / "model") == speech_vocab
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_atomic_open_leaves_the_old_file_on_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    with pytest.raises(ValueError, match="mode"), atomic_open(target, "a"):
        pass


def test_temp_dir_and_extended_model_folder_modes(tmp_path, umask, tiny_lm_dir):
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    staging = temp_dir_beside(tmp_path / "out")
    assert staging.parent == tmp_path and staging.name.startswith(".out.tmp-")
    assert mode(staging) == 0o777 & ~umask  # mkdtemp alone gives 0700

    out = tmp_path / "extended"
    extend_tokenizer(ExtendConfig(str(tiny_lm_dir), out, num_speech_tokens=64))
    assert mode(out) == 0o777 & ~umask
    for name in ("sts_vocab.json", "extend_config.yaml", "config.json", "model.safetensors"):
        assert mode(out / name) == 0o666 & ~umask, name
