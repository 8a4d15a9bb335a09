"""`infer.decoding`: the per-task defaults sts-infer decides with (length budgets from the source, sampling)."""

from __future__ import annotations

import pytest

from infer.decoding import DEFAULT_GUARDS, DEFAULT_SAMPLING, LengthBudget, max_new_tokens_for
from sts.generation import RAS_SAMPLING, SPEECH_GUARD, TEXT_GUARD
from sts.tasks import task_spec


def test_length_budget_follows_the_source():
    budget = LengthBudget()
    assert max_new_tokens_for(budget, "speech", source_seconds=10.0) == 125 * 10 + 50
    assert max_new_tokens_for(budget, "text", source_seconds=2.0) == 50 + 50
    assert max_new_tokens_for(budget, "speech", source_chars=10) == 150 + 50
    assert max_new_tokens_for(budget, "text", source_chars=10) == 20 + 50
    # Speech out of text scales with the codec's frame rate (15 codes per character at 50 per second).
    assert max_new_tokens_for(budget, "speech", source_chars=10, frame_rate=25.0) == 75 + 50
    with pytest.raises(ValueError):
        max_new_tokens_for(budget, "speech")


def test_every_task_has_sampling_and_every_output_a_guard():
    for task, sampling in DEFAULT_SAMPLING.items():
        assert DEFAULT_GUARDS[task_spec(task).output] in (SPEECH_GUARD, TEXT_GUARD)
        assert sampling.do_sample == (task != "asr")
    assert DEFAULT_SAMPLING["t2tt"].generate_kwargs() == {
        "do_sample": True,
        "temperature": 0.5,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.1,
        "repetition_penalty": 1.05,
    }


def test_speech_budget_from_the_measured_ratio():
    ratio = {"ja-en": {"p99": 1.6, "p90": 1.2}, "en-ja": {"p99": 0.9}}
    budget = LengthBudget(duration_ratio=ratio)
    # ceil(p99 * 1.25 * source frames) + 1 s
    assert max_new_tokens_for(budget, "speech", source_seconds=4.0, direction="ja-en") == 400 + 50
    assert max_new_tokens_for(budget, "speech", source_seconds=4.0, direction="en-ja") == 225 + 50
    assert max_new_tokens_for(budget, "speech", source_seconds=4.0, frame_rate=25.0, direction="ja-en") == 250
    tighter = LengthBudget(duration_ratio=ratio, ratio_percentile="p90", ratio_margin=1.0)
    assert max_new_tokens_for(tighter, "speech", source_seconds=4.0, direction="ja-en") == 240 + 50
    # an unmeasured direction, text output and text input keep their fixed bounds
    assert max_new_tokens_for(budget, "speech", source_seconds=4.0, direction="ja-ja") == 125 * 4 + 50
    assert max_new_tokens_for(budget, "text", source_seconds=2.0, direction="ja-en") == 50 + 50
    assert max_new_tokens_for(budget, "speech", source_chars=10, direction="ja-en") == 150 + 50
    assert LengthBudget().speech_ratio("ja-en") is None and budget.speech_ratio("ja-en") == 2.0


def test_speech_tasks_sample_repetition_aware():
    for task in ("s2st", "tts"):
        assert DEFAULT_SAMPLING[task] == RAS_SAMPLING and RAS_SAMPLING.ras_active
        assert (RAS_SAMPLING.top_p, RAS_SAMPLING.top_k, RAS_SAMPLING.ras_window, RAS_SAMPLING.ras_tau) == (
            0.8,
            25,
            10,
            0.1,
        )
    assert not any(DEFAULT_SAMPLING[t].repetition_aware for t in ("asr", "s2tt", "t2tt"))
