"""The corpus pipeline and builder: bad rows dropped with reasons, shards + card written, reruns resume."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from corpus_builder.build import BuildConfig, build_corpus
from corpus_builder.interfaces import Check
from corpus_builder.pipeline import PipelineConfig, process_rows
from corpus_builder.sources import SourceConfig, SourceRow
from corpus_builder.testing import LengthCheck, ToneTTS, tone_bytes, tone_seconds
from sts.audio import write_audio
from sts.corpus import corpus_features
from sts.mt import MTBackend, MTResult


class TagMT(MTBackend):
    """Translates by tagging: "hello" -> "<ja>hello"; texts containing "NOMT" come back empty."""

    name = "tag"

    def __init__(self):
        self.calls = []

    def translate(self, texts, src_lang, tgt_lang, contexts=None):
        self.calls.append((list(texts), src_lang, tgt_lang))
        return [MTResult("" if "NOMT" in t else f"<{tgt_lang}>{t}") for t in texts]


def _row(i, text="こんにちは", lang="ja", audio=None, **kw):
    return SourceRow(
        id=f"r{i}",
        lang=lang,
        text=text,
        source="emilia",
        audio=tone_bytes(1.5) if audio is None else audio,
        **kw,
    )


def test_bad_rows_are_dropped_with_reasons_and_the_rest_written():
    rows = [
        _row(0, speaker="spk"),
        _row(1, audio=b"\xff\xfb\x90garbage mp3 frame"),
        _row(2, audio=b""),
        _row(3, text=""),
        _row(4, lang="de", text="Guten Tag"),
        _row(5, text="NOMT please"),
        _row(6, text="LOOP forever"),
        _row(7, text="Good morning to you", lang="en"),
        _row(8, text="長い"),  # its target is made 20 s long below: LengthCheck fails it
        _row(0),
    ]
    mt = TagMT()

    class SlowTone(ToneTTS):
        def synthesize(self, requests):
            return [
                r if q.text != "<en>長い" else type(r)(np.zeros(24000 * 20, np.float32) + 0.1, 24000)
                for q, r in zip(requests, super().synthesize(requests), strict=True)
            ]

    tts = SlowTone(never_stops="LOOP")
    cfg = PipelineConfig(batch_size=4, filters=SourceConfig(min_duration=0.5))
    outcomes = list(process_rows(rows, mt=mt, tts=tts, checks=[LengthCheck(1.0)], cfg=cfg))
    assert [(o.id, o.drop_reason) for o in outcomes] == [
        ("r0", None),
        ("r1", "audio_undecodable"),
        ("r2", "audio_empty"),
        ("r3", "text_empty"),
        ("r4", "language_unsupported"),
        ("r5", "mt_empty"),
        ("r6", "tts_no_end_marker"),
        ("r7", None),
        ("r8", "check_length"),
        ("r0", "duplicate_id"),
    ]
    assert outcomes[7].row["tgt_text"] == "<ja>Good morning to you"
    # MT saw each batch grouped by direction; rows dropped earlier never reached it.
    assert mt.calls == [
        (["こんにちは"], "ja", "en"),
        (["NOMT please", "LOOP forever"], "ja", "en"),
        (["Good morning to you"], "en", "ja"),
        (["長い"], "ja", "en"),
    ]
    row = outcomes[0].row
    assert set(row) == set(corpus_features())
    assert (row["src_lang"], row["tgt_lang"], row["tgt_text"], row["speaker"]) == (
        "ja",
        "en",
        "<en>こんにちは",
        "spk",
    )
    assert row["src_duration"] == pytest.approx(1.5, abs=0.05)
    assert row["tgt_duration"] == pytest.approx(tone_seconds("<en>こんにちは"))
    tgt, rate = sf.read(io.BytesIO(row["tgt_audio"]["bytes"]))
    assert rate == 24000 and sf.info(io.BytesIO(row["tgt_audio"]["bytes"])).format == "FLAC"
    assert len(tgt) == round(tone_seconds("<en>こんにちは") * 24000)
    assert sf.info(io.BytesIO(row["src_audio"]["bytes"])).samplerate == 16000
    assert row["tgt_asr_error"] == pytest.approx(
        tone_seconds("<en>こんにちは") / len("<en>こんにちは"), rel=1e-3
    )
    assert row["speaker_similarity"] is None  # no speaker check ran: null, not NaN
    assert outcomes[0].unscored == []


class ScoresOddIds(Check):
    """Scores rows whose target text ends in "odd" by the target's seconds; cannot score the others."""

    name, column = "odd", "speaker_similarity"

    def score(self, rows):
        return [len(r.tgt_audio) / 16000 if r.tgt_text.endswith("odd") else None for r in rows]

    def passes(self, score):
        assert score is not None  # the pipeline never asks about an unscored row
        return score < 1.5


def test_unscored_rows_pass_with_null_and_are_named():
    rows = [_row(0, text="even"), _row(1, text="odd"), _row(2, text="長い odd")]
    cfg = PipelineConfig(filters=SourceConfig(min_duration=0.5))
    outcomes = list(process_rows(rows, mt=TagMT(), tts=ToneTTS(), checks=[ScoresOddIds()], cfg=cfg))
    kept, scored, dropped = outcomes
    assert kept.row["speaker_similarity"] is None and kept.unscored == ["odd"]
    assert (
        scored.row["speaker_similarity"] == pytest.approx(tone_seconds("<en>odd")) and scored.unscored == []
    )
    assert tone_seconds("<en>odd") < 1.5 <= tone_seconds("<en>長い odd")
    assert dropped.drop_reason == "check_odd"
    assert dropped.drop["speaker_similarity"] == pytest.approx(tone_seconds("<en>長い odd"))


def test_voice_preserving_sends_the_source_clip_and_text():
    seen = []

    class Recorder(ToneTTS):
        def synthesize(self, requests):
            seen.extend(requests)
            return super().synthesize(requests)

    cfg = PipelineConfig(voice_preserving=True, filters=SourceConfig(min_duration=0.5))
    (out,) = process_rows([_row(0)], mt=TagMT(), tts=Recorder(), cfg=cfg)
    assert out.row is not None
    assert seen[0].prompt_text == "こんにちは" and abs(len(seen[0].prompt_audio) - 24000) < 2000


def _manifest(tmp_path, n=7):
    records = []
    for i in range(n):
        lang = "ja" if i % 2 == 0 else "en"
        write_audio(tmp_path / "clips" / f"c{i}.wav", np.full(16000 * (1 + i % 3), 0.1, np.float32))
        text = "" if i == 3 else ("おはよう" if lang == "ja" else "good morning") + str(i)
        records.append(
            {"id": f"c{i}", "audio": f"clips/c{i}.wav", "text": text, "language": lang, "tgt_text": f"T{i}"}
        )
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    return path


def test_build_writes_shards_and_card_and_resumes(tmp_path):
    import datasets

    cfg = BuildConfig(
        out_dir=tmp_path / "corpus",
        source="local",
        path=str(_manifest(tmp_path)),
        mt="reference",
        tts="python:corpus_builder.testing:ToneTTS",
        checks=["none"],
        min_duration=0.5,
        rows_per_shard=3,
    )
    results = list(build_corpus(cfg, argv=["sts-build-corpus", "test"]))
    assert [(r.name, r.skipped, r.stats["input_rows"], r.stats["rows"]) for r in results] == [
        ("part-00000-of-00001-000000", False, 3, 3),
        ("part-00000-of-00001-000001", False, 3, 2),
        ("part-00000-of-00001-000002", False, 1, 1),
    ]
    card = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert (card["input_rows"], card["rows"], card["dropped"], card["drops"]) == (7, 6, 1, {"text_empty": 1})
    # ja rows c0, c2, c4, c6: 1, 3, 2, 1 s of source; targets are tones of "T{i}" (0.7 s each).
    assert card["directions"]["ja-en"]["rows"] == 4
    assert card["directions"]["ja-en"]["src_hours"] == pytest.approx(7 / 3600, rel=1e-3)
    assert card["directions"]["ja-en"]["tgt_hours"] == pytest.approx(4 * tone_seconds("T0") / 3600, rel=1e-3)
    assert card["directions"]["en-ja"]["src_hours"] == pytest.approx((2 + 3) / 3600, rel=1e-3)
    assert card["models"] == {"mt": "reference", "mt_context": 0, "tts": "tone:24000", "checks": []}
    assert card["command"] == ["sts-build-corpus", "test"] and card["config"]["rows_per_shard"] == 3
    assert {"python", "torch", "datasets", "pyarrow"} <= set(card["versions"])

    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "corpus" / "data" / "*.parquet"), split="train"
    )
    assert sorted(ds["id"]) == ["c0", "c1", "c2", "c4", "c5", "c6"]
    assert ds.features["src_audio"] == datasets.Audio(decode=False)
    assert ds[0]["tgt_text"] == "T0" and ds[0]["src_audio"]["bytes"][:4] == b"fLaC"

    # A rerun loads no backend and rewrites nothing (the TTS spec may change only when allowed).
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "corpus" / "data").glob("*.parquet")}
    cfg.tts, cfg.allow_changed = "python:no_such_module:Nothing", ["tts"]
    assert all(r.skipped for r in build_corpus(cfg))
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "corpus" / "data").glob("*.parquet")}
    assert len(mtimes) == 3
    assert pq.read_metadata(tmp_path / "corpus" / "data" / "part-00000-of-00001-000001.parquet").num_rows == 2
