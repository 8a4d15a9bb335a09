"""`--min-dnsmos` for any source: Emilia's recorded DNSMOS where a row has one, DNSMOS P.835 of the
decoded (or synthesized) source speech otherwise; drops counted as "dnsmos_low"."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from corpus_builder.interfaces import TTSRequest
from corpus_builder.pipeline import PipelineConfig, process_rows, to_16k
from corpus_builder.sources import SourceConfig, SourceRow
from corpus_builder.testing import ToneTTS
from sts.mt import ReferenceMT
from sts.testing import synthetic_utterance

pytest.importorskip("speechmos")


def _wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_min_dnsmos_uses_recorded_values_and_rates_the_rest():
    from sts.dnsmos import Dnsmos

    clean = synthetic_utterance(9.5, 140.0, seed=1)  # one 9.01 s DNSMOS window each
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, np.sqrt(np.mean(clean**2)), len(clean)), -1, 1).astype(np.float32)
    scorer = Dnsmos()
    clean_ovrl, noisy_ovrl = scorer.score(clean).ovrl, scorer.score(noisy).ovrl
    threshold = (clean_ovrl + noisy_ovrl) / 2
    assert noisy_ovrl < threshold < clean_ovrl

    def row(i, audio, **kw):
        return SourceRow(f"r{i}", "ja", "こんにちは", "local", audio=_wav(audio), tgt_text="Hello.", **kw)

    rows = [
        row(0, clean),  # rated: kept
        row(1, noisy),  # rated: dropped
        row(2, noisy, dnsmos=threshold + 1),  # a recorded value is used as is: kept
        row(3, clean, dnsmos=threshold - 1),  # the recorded value wins over the clip: dropped
        SourceRow(
            "r4", "ja", "テキストだけ", "text-pairs", tgt_text="Text only."
        ),  # rated after its source TTS
    ]
    cfg = PipelineConfig(filters=SourceConfig(min_dnsmos=threshold, min_duration=0.0))
    tts = ToneTTS()
    outcomes = list(process_rows(rows, mt=ReferenceMT(), tts=tts, cfg=cfg, dnsmos=scorer))
    drops = {o.id: o.drop_reason for o in outcomes}
    [tone] = tts.synthesize([TTSRequest("テキストだけ", "ja")])
    assert scorer.score(to_16k(tone.audio, tone.sample_rate)).ovrl < threshold  # a sine is no speech (~1.0)
    assert drops == {"r0": None, "r1": "dnsmos_low", "r2": None, "r3": "dnsmos_low", "r4": "dnsmos_low"}
    # the drop log's record: the computed (or recorded) OVRL and the why
    records = {o.id: o.drop for o in outcomes if o.drop is not None}
    assert records["r1"]["dnsmos"] == pytest.approx(noisy_ovrl, abs=1e-3)
    assert records["r1"]["detail"].startswith("DNSMOS OVRL") and "(computed)" in records["r1"]["detail"]
    assert records["r3"]["dnsmos"] == pytest.approx(threshold - 1)
    # without a scorer only recorded values count (an Emilia build without speechmos)
    plain = {o.id: o.drop_reason for o in process_rows(rows[:4], mt=ReferenceMT(), tts=ToneTTS(), cfg=cfg)}
    assert plain == {"r0": None, "r1": None, "r2": None, "r3": "dnsmos_low"}
