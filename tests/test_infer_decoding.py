"""`infer.decoding`: the per-task defaults sts-infer decides with (length budgets from the source, sampling)."""

from __future__ import annotations

import pytest

from infer.decoding import DEFAULT_GUARDS, DEFAULT_SAMPLING, LengthBudget, max_new_tokens_for
from sts.generation import SPEECH_GUARD, TEXT_GUARD
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
