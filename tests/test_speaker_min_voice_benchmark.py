"""benchmarks/speaker_min_voice.py --source synthetic: cuts hold the voice asked for, pairs are counted."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_benchmark

pytest.importorskip("resemblyzer")
pytest.importorskip("faster_whisper")  # the silero VAD that measures the voice


@pytest.mark.slow
def test_synthetic_voices_are_cut_and_counted(tmp_path):
    bench = load_benchmark("speaker_min_voice")
    out = tmp_path / "table.json"
    result = bench.main(["--source", "synthetic", "--durations", "0.5", "2", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["threshold"] == 0.6  # the corpus builder's min_speaker_similarity
    assert result["voices"] == ["synthetic:110", "synthetic:220"] and result["clips"] == 6
    rows = {row["voiced_s"]: row for row in result["rows"]}
    assert list(rows) == [0.5, 2.0, "full"]
    for seconds in (0.5, 2.0):
        low, high = rows[seconds]["measured_voiced_s"]
        assert seconds - 0.01 <= low <= high <= seconds + 0.02  # each cut holds that much voice
    for row in rows.values():
        same, other = row["same voice"], row["same engine, other voice"]
        assert (same["pairs"], other["pairs"], row["different engine"]["pairs"]) == (6, 9, 0)
        assert other["pairs"] == row["synthetic-synthetic"]["pairs"]
        assert 0 <= other["at_or_above"] <= other["scored"] <= other["pairs"]
        assert same["mean"] > other["mean"]  # one pitch is closer to itself than to the other


def test_bad_durations_are_one_line(capsys):
    bench = load_benchmark("speaker_min_voice")
    from sts.errors import cli_main

    assert cli_main("speaker_min_voice.py", bench.main, ["--durations", "0"]) == 2
    assert "--durations must be in (0, 30] seconds" in capsys.readouterr().err
