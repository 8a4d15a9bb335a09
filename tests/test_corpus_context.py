"""Context-aware MT: waves, the exact context each sentence gets, the pipeline and the card."""

from __future__ import annotations

import json

from corpus_builder.build import BuildConfig, build_corpus
from corpus_builder.pipeline import PipelineConfig, process_rows
from corpus_builder.sources import SourceConfig, SourceRow, emilia_recording
from corpus_builder.testing import ToneTTS, tone_bytes
from sts.mt import PRESETS, MTBackend, MTResult, build_messages, context_waves, translate_in_context


class ContextMT(MTBackend):
    """Translates "x" to "T(x)"; records every call with the contexts it was given; "NOMT" comes back empty."""

    name = "context"

    def __init__(self):
        self.calls = []

    def translate(self, texts, src_lang, tgt_lang, contexts=None):
        self.calls.append((list(texts), [list(c) for c in contexts] if contexts is not None else None))
        return [MTResult(None, "mt_empty") if "NOMT" in t else MTResult(f"T({t})") for t in texts]


def test_context_waves():
    assert context_waves(["a", "a", "b", None, "a", "b", None]) == [0, 1, 0, 0, 2, 1, 0]
    assert context_waves([]) == []


def test_each_sentence_gets_exactly_its_documents_previous_pairs():
    mt = ContextMT()
    texts = ["a1", "b1", "a2", "a3", "x", "b2", "a4"]
    keys = ["A", "B", "A", "A", None, "B", "A"]
    results = translate_in_context(mt, texts, keys, "ja", "en", window=2)
    assert [r.text for r in results] == [f"T({t})" for t in texts]
    # One backend call per wave; within a wave, the documents' earlier pairs, newest last, at most 2.
    assert mt.calls == [
        (["a1", "b1", "x"], [[], [], []]),
        (["a2", "b2"], [[("a1", "T(a1)")], [("b1", "T(b1)")]]),
        (["a3"], [[("a1", "T(a1)"), ("a2", "T(a2)")]]),
        (["a4"], [[("a2", "T(a2)"), ("a3", "T(a3)")]]),
    ]


def test_history_continues_across_calls_and_skips_dropped_translations():
    mt, history = ContextMT(), {}
    translate_in_context(mt, ["a1", "NOMT a2"], ["A", "A"], "ja", "en", window=3, history=history)
    translate_in_context(mt, ["a3"], ["A"], "ja", "en", window=3, history=history)
    assert history == {"A": [("a1", "T(a1)"), ("a3", "T(a3)")]}
    assert mt.calls[-1] == (["a3"], [[("a1", "T(a1)")]])


def test_window_zero_is_one_plain_call():
    mt = ContextMT()
    translate_in_context(mt, ["a1", "a2"], ["A", "A"], "ja", "en", window=0)
    assert mt.calls == [(["a1", "a2"], None)]


def test_the_prompt_holds_the_context_as_prior_turns():
    messages = build_messages("a3", "en", PRESETS["LiquidAI/LFM2-350M-ENJP-MT"], [("a1", "T1"), ("a2", "T2")])
    assert messages == [
        {"role": "system", "content": "Translate to English."},
        {"role": "user", "content": "a1"},
        {"role": "assistant", "content": "T1"},
        {"role": "user", "content": "a2"},
        {"role": "assistant", "content": "T2"},
        {"role": "user", "content": "a3"},
    ]


def test_emilia_recording_ids():
    assert emilia_recording("JA_B00001_S00042_W000007") == "JA_B00001_S00042"
    assert emilia_recording("EN_B00000_S00000_W000000") == "EN_B00000_S00000"
    assert emilia_recording("clip-17") is None
    assert emilia_recording("_W12") is None


def _rows():
    ids = ["JA_B0_S1_W0", "JA_B0_S2_W0", "JA_B0_S1_W1", "JA_B0_S1_W2"]
    return [
        SourceRow(
            id=i,
            lang="ja",
            text=f"s{n}",
            source="emilia",
            audio=tone_bytes(1.0),
            recording=emilia_recording(i),
        )
        for n, i in enumerate(ids)
    ]


def test_pipeline_passes_recording_context_across_batches():
    mt = ContextMT()
    cfg = PipelineConfig(batch_size=2, filters=SourceConfig(min_duration=0.1), mt_context=1)
    outcomes = list(process_rows(_rows(), mt=mt, tts=ToneTTS(), cfg=cfg))
    assert [o.row["tgt_text"] for o in outcomes] == ["T(s0)", "T(s1)", "T(s2)", "T(s3)"]
    # Batch 1: two recordings, no context yet. Batch 2: S1's next two segments, one wave each.
    assert mt.calls == [
        (["s0", "s1"], [[], []]),
        (["s2"], [[("s0", "T(s0)")]]),
        (["s3"], [[("s2", "T(s2)")]]),
    ]


def test_build_reads_manifest_recordings_and_records_the_window_in_the_card(tmp_path):
    (tmp_path / "a.mp3").write_bytes(tone_bytes(1.0))
    manifest = tmp_path / "clips.jsonl"
    lines = [
        {"id": f"c{i}", "audio": "a.mp3", "text": f"s{i}", "language": "ja", "recording": "talk"}
        for i in range(3)
    ]
    manifest.write_text("\n".join(json.dumps(x) for x in lines))
    cfg = BuildConfig(
        out_dir=tmp_path / "out", source="local", path=str(manifest), mt_context=3, min_duration=0.1
    )
    mt = ContextMT()
    list(build_corpus(cfg, mt=mt, tts=ToneTTS(), checks=[], argv=["x"]))
    assert mt.calls[-1] == (["s2"], [[("s0", "T(s0)"), ("s1", "T(s1)")]])
    card = json.loads((tmp_path / "out" / "corpus.json").read_text())
    assert card["rows"] == 3
    assert card["models"]["mt_context"] == 3 and card["config"]["mt_context"] == 3
