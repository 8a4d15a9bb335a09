"""The corpus drop log: every dropped row with its id, source, reason and evidence in `drops/`, read by
datasets and pandas, resumable and deduplicated like the shards, pointed to by both cards."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from corpus_builder.checks import AsrRoundTrip
from corpus_builder.cli import main
from corpus_builder.interfaces import Check, CheckInput
from sts.audio import write_audio
from sts.corpus import drop_features, drop_paths, read_rows

TONE = "python:corpus_builder.testing:ToneTTS"


class MishearingAsr(AsrRoundTrip):
    """The ASR round-trip check with a stand-in ASR that mishears one sentence (no Whisper here)."""

    def __init__(self):
        self.max_asr_error = 0.3

    def transcribe(self, audio: np.ndarray, lang: str) -> str:
        return "completely different words" if len(audio) > 16000 * 1.2 else self._said

    def score_with_evidence(self, rows: Sequence[CheckInput]):
        results = []
        for row in rows:
            self._said = row.tgt_text
            results += super().score_with_evidence([row])
        return results


class NoVoiceSpeaker(Check):
    """A speaker check that finds no voice to compare (a null score, which passes)."""

    name, column = "speaker_similarity", "speaker_similarity"

    def score(self, rows):
        return [math.nan] * len(rows)

    def score_with_evidence(self, rows):
        return [(math.nan, {"voiced_seconds": 0.0}) for _ in rows]

    def passes(self, score):
        return True


def _manifest(tmp_path) -> list[str]:
    t = np.arange(16000 * 2) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    write_audio(tmp_path / "ok.wav", speech)
    write_audio(tmp_path / "short.wav", speech[:8000])
    write_audio(tmp_path / "silent.wav", np.zeros(32000, np.float32))
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio at all")
    rows = [("ok", "ok.wav", "はい", "Yes."), ("long", "ok.wav", "はい", "This sentence is long enough."),
            ("short", "short.wav", "はい", "Yes."), ("silent", "silent.wav", "はい", "Yes."),
            ("broken", "broken.wav", "はい", "Yes."), ("ok", "ok.wav", "はい", "Yes."),
            ("untranslated", "ok.wav", "はい", "")]  # fmt: skip
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "audio": a, "text": s, "language": "ja", "tgt_text": t},
                                           ensure_ascii=False) + "\n" for i, a, s, t in rows))  # fmt: skip
    return ["--source", "local", "--path", str(manifest), "--mt", "reference", "--tts", TONE, "--tts-kwargs",
            '{"sample_rate": 16000}', "--min-duration", "1", "--rows-per-shard", "3", "--checks",
            "python:test_drop_log:NoVoiceSpeaker", "python:test_drop_log:MishearingAsr"]  # fmt: skip


def test_every_dropped_row_is_logged_with_its_evidence(tmp_path):
    import datasets

    out = tmp_path / "corpus"
    assert main(["--out-dir", str(out), *_manifest(tmp_path)]) == 0
    card = json.loads((out / "corpus.json").read_text())
    log = pd.read_parquet(out / "drops").set_index("id", drop=False)
    assert len(log) == card["dropped"] == card["drop_log"]["rows"] == 6 and card["drop_log"]["complete"]
    assert Counter(log["reason"]) == Counter(card["drops"])
    assert [r["id"] for r in read_rows(out, columns=["id"])] == ["ok"]

    assert log.loc["short", "reason"] == "duration_short" and log.loc["short", "src_duration"] == 0.5
    assert log.loc["silent", "reason"] == "silent_audio" and "RMS -inf dBFS" in log.loc["silent", "detail"]
    broken = log.loc["broken"]
    assert broken["reason"] == "audio_undecodable" and "cannot decode" in broken["detail"]
    assert broken["src_audio_path"].endswith("broken.wav") and broken["source"] == "local"
    assert log.loc["untranslated", "reason"] == "reference_missing"
    dup = log[log["reason"] == "duplicate_id"]
    assert list(dup["id"]) == ["ok"]  # the second row with id "ok"; the first is in the shards
    heard = log.loc["long"]
    assert heard["reason"] == "check_asr_round_trip" and heard["asr_text"] == "completely different words"
    assert heard["tgt_text"] == "This sentence is long enough." and heard["tgt_asr_error"] > 0.3
    assert heard["tgt_duration"] > 1.2 and heard["src_duration"] == 2.0
    assert heard["speaker_similarity"] is None or math.isnan(heard["speaker_similarity"])  # pandas: null
    table = datasets.load_dataset("parquet", data_files=str(out / "drops" / "*.parquet"), split="train")
    assert table.features == drop_features()
    row = next(r for r in table if r["id"] == "long")
    assert (
        row["speaker_similarity"] is None
        and row["dnsmos"] is None
        and json.loads(row["evidence"]) == {"voiced_seconds": 0.0}
    )

    front = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    assert [c["config_name"] for c in front["configs"]] == ["default", "drops"]
    drops = datasets.load_dataset(str(out), "drops", split="train")  # the folder's own card
    assert sorted(drops["id"]) == sorted(log["id"]) and drops.features == drop_features()
    assert datasets.load_dataset(str(out), split="train")["id"] == ["ok"]
    assert "drop log: `drops/` lists 6 dropped rows" in (out / "README.md").read_text()


def test_the_drop_log_resumes_and_never_holds_a_row_twice(tmp_path):
    out = tmp_path / "corpus"
    args = ["--out-dir", str(out), *_manifest(tmp_path)]
    assert main([*args, "--max-rows", "4"]) == 0  # a trial: its last chunk is cut short
    assert sorted(pd.read_parquet(out / "drops")["id"]) == ["long", "short", "silent"]
    assert main(args) == 0  # the full run redoes the short chunk and goes on
    first = {p.name: p.read_bytes() for p in drop_paths(out)}
    (out / ".progress" / "part-00000-of-00001-000001.json").unlink()  # as if killed before its done-marker
    assert main(args) == 0
    log = pd.read_parquet(out / "drops")
    assert len(log) == 6 and not log.duplicated(["id", "reason"]).any()
    assert {p.name: p.read_bytes() for p in drop_paths(out)} == first  # the same rows, rewritten in place


def test_a_monolingual_rows_drop_has_no_translation_side(tmp_path):
    from corpus_builder.build import BuildConfig, build_corpus
    from corpus_builder.testing import LengthCheck, ToneTTS, tone_seconds

    text = tmp_path / "ja.txt"
    text.write_text("あ\nこんにちは、元気ですか\n", encoding="utf-8")
    cfg = BuildConfig(out_dir=tmp_path / "mono", source="text", path=str(text), folder_lang="ja", mt="none",
                      tts=TONE, checks=["none"], min_duration=0.0)  # fmt: skip
    list(build_corpus(cfg, tts=ToneTTS(), checks=[LengthCheck(0.3)], argv=["test"]))  # "あ": 0.6 s a char
    (drop,) = pq.read_table(cfg.out_dir / "drops").to_pylist()
    assert drop["reason"] == "check_length" and drop["src_text"] == "あ" and drop["tgt_lang"] is None
    assert (
        drop["src_asr_error"] == pytest.approx(tone_seconds("あ"), rel=1e-3) and drop["tgt_asr_error"] is None
    )
