"""Opt-in: a real `axolotl preprocess` + `axolotl train` on an `--export-axolotl` export, on CPU.

axolotl pins its own transformers (0.19: 5.16.1), so it lives in its own venv (README, axolotl):

    STS_AXOLOTL_BIN=/path/to/axolotl-venv/bin pytest tests/test_axolotl_run.py    # its bin/ folder
    pytest tests/test_axolotl_run.py                                               # axolotl on PATH

Skipped when neither is there. The export is written in one folder and axolotl runs from another
(every path in the YAML is absolute), with no GPU (the YAML says bf16: false, fp16: false), with
sample packing on (attn_implementation sdpa keeps packed samples apart); the output is adopted
(`sts-train adopt-axolotl`) and loads with `infer.Translator.from_checkpoint`.

Status (2026-11-30, axolotl 0.19.0, torch 2.13.0+cpu, transformers 5.16.1 in /work/axolotl-venv,
2 CPU cores): passes in about 2 minutes. A 4-step run of the same export by hand: loss 7.32 -> 7.07,
eval loss 7.34 -> 7.14.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

AXOLOTL_BIN = os.environ.get("STS_AXOLOTL_BIN") or (
    str(Path(shutil.which("axolotl")).parent) if shutil.which("axolotl") else None
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(AXOLOTL_BIN is None, reason="axolotl not on PATH and STS_AXOLOTL_BIN not set"),
]


def axolotl(command: str, config: Path, cwd: Path) -> str:
    # axolotl train starts `accelerate launch` from PATH; telemetry off (no network here).
    env = {**os.environ, "PATH": f"{AXOLOTL_BIN}:{os.environ['PATH']}", "AXOLOTL_DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    env.pop("PYTHONPATH", None)  # axolotl's own packages, not this environment's
    done = subprocess.run(
        [f"{AXOLOTL_BIN}/axolotl", command, str(config)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_axolotl_trains_an_export_from_another_folder(extended_lm_dir, tmp_path):
    from infer.translate import Translator
    from sts.testing import save_tiny_xcodec2
    from sts.vocab import SpeechVocab
    from train.cli import main
    from train.config import CONFIG_DIR
    from train.testing import write_tiny_encoded_shards

    shards = write_tiny_encoded_shards(tmp_path / "encoded", num_codes=1024)
    export = tmp_path / "export"
    assert main(["sft", "--config", str(CONFIG_DIR / "tiny_sft.yaml"), "--model", str(extended_lm_dir),
                 "--shards", *map(str, shards), "--out-dir", str(tmp_path / "run"), "--export-axolotl",
                 str(export), "--max-steps", "2", "--save-every", "2"]) == 0  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    axolotl("preprocess", export / "axolotl.yaml", elsewhere)
    log = axolotl("train", export / "axolotl.yaml", elsewhere)
    assert "cross-sample decontamination" not in log  # axolotl's warning for packing without isolation
    output = tmp_path / "run" / "axolotl"
    assert (output / "model.safetensors").is_file() and not (output / "sts_vocab.json").exists()

    assert main(["adopt-axolotl", str(output), "--from", str(export)]) == 0
    assert SpeechVocab.load(output) == SpeechVocab.load(extended_lm_dir)
    translator = Translator.from_checkpoint(output, codec=str(save_tiny_xcodec2(tmp_path / "codec")))
    assert translator.vocab.vocab_size == SpeechVocab.load(extended_lm_dir).vocab_size
