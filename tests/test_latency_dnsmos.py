"""SimulEval latency (`sts.latency`) against SimulEval's own scorers, and DNSMOS (`sts.dnsmos`) on real audio."""

from __future__ import annotations

import numpy as np
import pytest

from sts.latency import SpeechOutputTrace, average_token_delay, latency_scores, mean_scores
from sts.testing import synthetic_utterance

# (source ms, delays, elapsed, durations) -> SimulEval's StartOffsetScorer, EndOffsetScorer and ATDScorer
# (facebookresearch/SimulEval 536de82, speech-to-speech instances) run on the same traces, 2026-12-07.
# Computation-aware EndOffset is ours: SimulEval plays the chunks at their ideal delays in both forms.
SIMULEVAL_CASES = [
    ((1000, [500, 1000], [700, 1300], [600, 300]), (500, 400, 566.7), (700, 766.7)),
    ((600, [600], [1100], [600]), (600, 600, 600.0), (1100, 975.0)),
    (
        (4000, [4000] * 5, [4610, 4900, 5200, 5500, 6400], [700, 280, 280, 280, 900]),
        (4000, 2440, 3971.1),
        (4610, 5304.4),
    ),
    (
        (
            2500,
            [300, 300, 900, 1500, 2500, 2500],
            [350, 420, 1000, 1750, 2600, 2900],
            [250, 310, 640, 100, 950, 420],
        ),
        (300, 1370, 791.8),
        (350, 886.4),
    ),
]


@pytest.mark.parametrize(("trace", "ideal", "aware"), SIMULEVAL_CASES)
def test_latency_matches_simuleval(trace, ideal, aware):
    scores = latency_scores(SpeechOutputTrace(*trace))
    assert tuple(scores["ideal"].values()) == pytest.approx(ideal, abs=0.05)
    assert scores["computation_aware"]["StartOffset"] == pytest.approx(aware[0])
    assert scores["computation_aware"]["ATD"] == pytest.approx(aware[1], abs=0.05)


def test_computation_aware_end_offset_plays_chunks_when_they_come():
    # chunk 1 at 700 ms for 600 ms, chunk 2 ready at 1300 ms plays 1300-1600: ends 600 ms after the source
    trace = SpeechOutputTrace(1000, [500, 1000], [700, 1300], [600, 300])
    assert latency_scores(trace)["computation_aware"]["EndOffset"] == 600.0
    # a stall: chunk 2 comes 500 ms after chunk 1 ended, so the end moves by the gap
    stalled = SpeechOutputTrace(1000, [500, 1000], [700, 1800], [600, 300])
    assert latency_scores(stalled)["computation_aware"]["EndOffset"] == 1100.0


def test_a_model_that_reads_everything_first():
    """Offline translation: every delay is the source length; ideal EndOffset is the output's duration."""
    trace = SpeechOutputTrace.from_events(2.0, [(0.4, 0.7), (0.9, 0.7), (1.1, 0.3)])
    scores = latency_scores(trace)
    assert scores["ideal"]["StartOffset"] == 2000.0 and scores["ideal"]["EndOffset"] == pytest.approx(1700.0)
    assert scores["computation_aware"]["StartOffset"] == 2400.0
    assert scores["computation_aware"]["EndOffset"] == pytest.approx(2400 + 1700 - 2000)  # no stall
    # 1.7 s of output = 5 tokens of 300 ms + 200 ms, each paired with the source token of its rank:
    # five 2000 ms delays and 3700 - 1800 for the short last one
    assert average_token_delay(trace) == pytest.approx((5 * 2000 + 1900) / 6)
    assert latency_scores(SpeechOutputTrace.from_events(1.0, [])) == {}
    corpus = mean_scores([scores, {}, scores])
    assert corpus["n"] == 2 and corpus["ideal"]["StartOffset"] == 2000.0 and corpus["unit"] == "ms"


def test_dnsmos_rates_noise_worse_than_clean_speech():
    pytest.importorskip("speechmos")
    from sts.dnsmos import Dnsmos, summarize

    clean = synthetic_utterance(9.5, 140.0, seed=1)  # 9.5 s: one 9.01 s window
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, np.sqrt(np.mean(clean**2)), len(clean)).astype(np.float32), -1, 1)
    scorer = Dnsmos()
    a, b = scorer.score(clean), scorer.score(noisy)
    for score in (a, b):
        assert all(1.0 <= v <= 5.0 for v in (score.sig, score.bak, score.ovrl))
    assert b.bak < a.bak - 1.0 and b.ovrl < a.ovrl  # 0 dB white noise: the background rating falls
    assert scorer.score(np.zeros(0, np.float32)) is None
    assert scorer.score(np.full(100, np.nan, np.float32)) is None
    summary = summarize([a, None, b])
    assert summary["n"] == 2 and summary["ovrl"] == pytest.approx((a.ovrl + b.ovrl) / 2, abs=1e-3)
    assert summary["model"].startswith("DNSMOS P.835")


def test_dnsmos_cost_benchmark_tiny(tmp_path):
    pytest.importorskip("speechmos")
    from benchmark_scripts import load_benchmark

    bench = load_benchmark("dnsmos_cost")
    lengths = (2.0, 4.0, 9.5, 15.0, 30.0)
    assert [bench.windows(s) for s in lengths] == [7, 7, 1, 6, 21]  # 2 s and 4 s are tiled to 16 s
    result = bench.main(["--tiny", "--json", str(tmp_path / "cost.json")])
    [row] = result["rows"]
    assert (
        row["windows"] == 1
        and row["wall_s"] > 0
        and row["s_per_audio_s"] == pytest.approx(row["wall_s"] / 9.5, abs=1e-3)
    )
