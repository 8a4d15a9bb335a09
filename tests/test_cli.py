import json
import subprocess
import sys

import pytest
import soundfile as sf

from recipes.cli import SCRIPTS, STAGES, main


def test_sts_help_lists_the_stages(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert stage.name in out
    assert "sts-build-corpus" in out and "not yet available" not in out  # every pipeline stage works


def test_unknown_stage_is_an_error(capsys):
    assert main(["translate-everything"]) == 2
    assert "unknown stage 'translate-everything'" in capsys.readouterr().err


def _declared_scripts() -> dict[str, str]:
    from pathlib import Path

    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    return tomllib.loads(pyproject.read_text())["project"]["scripts"]


def test_every_stage_script_is_declared():
    scripts = _declared_scripts()
    for stage, script in SCRIPTS.items():
        assert (
            script in scripts
            and scripts[script].split(":")[0]
            == next(s.target for s in STAGES if s.name == stage).split(":")[0]
        )


@pytest.mark.slow
def test_every_declared_script_answers_help():
    """Each [project.scripts] target, run in a fresh interpreter as its console script would run it
    (the target itself, so that an installed script of an older version cannot hide a broken one)."""
    for script, target in _declared_scripts().items():
        module, _, function = target.partition(":")
        code = f"from {module} import {function}; raise SystemExit({function}())"
        done = subprocess.run(
            [sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "usage" in (done.stdout + done.stderr).lower(), script


def test_installed_console_scripts_run():
    bindir = __import__("pathlib").Path(sys.executable).parent
    out = subprocess.run([bindir / "sts", "--help"], capture_output=True, text=True, check=True).stdout
    assert "extend-tokenizer" in out
    out = subprocess.run(
        [bindir / "sts-extend-tokenizer", "--help"], capture_output=True, text=True, check=True
    )
    assert "--num-speech-tokens" in out.stdout


def test_tiny_run_end_to_end(tmp_path):
    assert main(["tiny-run", "-o", str(tmp_path), "--steps", "40"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["loss"]["last"] < report["loss"]["first"] / 2
    # 1.2 s and 0.8 s of audio at 16 kHz: N // 320 + 1 codes each
    assert report["codes"] == {"source": 61, "target": 41, "frame_rate": 50.0}
    generation = report["generation"]
    assert generation["codes"] > 0 and generation["stray_ids"] == 0
    audio, rate = sf.read(tmp_path / "translation.wav")
    assert rate == 16000 and len(audio) == generation["codes"] * 320
    assert sf.info(tmp_path / "source.wav").frames == 19200
