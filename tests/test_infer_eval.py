"""`sts-eval` end to end on a tiny random checkpoint; its ASR is the checkpoint's own `asr` task."""

from __future__ import annotations

import json
import logging

import pytest
from test_infer_cli import codec_dir, model_dir  # noqa: F401  (module fixtures)

from infer.checkpoint_eval import read_manifest, translation_scores
from infer.cli import eval_main as main
from infer.translate import CUT_RULES
from sts.audio import write_audio
from sts.metrics import asr_bleu, bleu, chrf, error_rate, mecab_available
from sts.testing import synthetic_utterance

pytest.importorskip("sacrebleu")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("testset")
    rows = [
        {
            "id": "j1",
            "audio": "j1.wav",
            "src_lang": "ja",
            "src_text": "駅はどこですか",
            "tgt_text": "Where is the station?",
            "tgt_audio": "e1.wav",
        },
        {
            "id": "e1",
            "audio": "e1.wav",
            "src_lang": "en",
            "tgt_lang": "ja",
            "src_text": "Thank you very much.",
            "tgt_text": "どうもありがとう",
        },
        {
            "id": "t1",
            "src_lang": "en",
            "src_text": "Good morning.",
            "tgt_text": "おはようございます",
        },  # no audio
    ]
    write_audio(root / "j1.wav", synthetic_utterance(0.8, 150.0, seed=5))
    write_audio(root / "e1.wav", synthetic_utterance(0.6, 210.0, seed=6))
    path = root / "test.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _eval_args(manifest, checkpoint, out, *, asr: str, max_new_tokens: int) -> list[str]:
    """The `sts-eval` arguments the tests share: manifest, checkpoint, output folder, ASR, length cap."""
    args = [str(manifest), "--model", str(checkpoint), "-o", str(out), "--asr", asr, "--no-dnsmos"]
    return [*args, "--max-new-tokens", str(max_new_tokens)]


def test_read_manifest(manifest):
    items = read_manifest(manifest)
    assert [i.id for i in items] == ["j1", "e1", "t1"]
    assert items[0].audio == manifest.parent / "j1.wav" and items[0].tgt_lang == "en"
    assert items[0].tgt_audio == manifest.parent / "e1.wav" and items[2].audio is None


def test_eval_every_task(model_dir, manifest, tmp_path):  # noqa: F811
    out = tmp_path / "report"
    args = [*_eval_args(manifest, model_dir, out, asr="self", max_new_tokens=12), "--no-speaker-similarity"]
    assert main([*args, "--tasks", "s2st", "s2tt", "asr", "tts", "t2tt"]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    tasks = report["tasks"]
    assert {t: tasks[t]["n"] for t in tasks} == {"s2st": 2, "s2tt": 2, "asr": 2, "tts": 3, "t2tt": 3}
    assert len(rows) == 12 and all(isinstance(r["hyp"], str) for r in rows)
    # every output counted once by the rule that cut it (max_new_tokens 12: most run into it)
    for task, summary in tasks.items():
        mine = [r["cut"] for r in rows if r["task"] == task]
        assert summary["cut_by"] == {rule: mine.count(rule) for rule in CUT_RULES}
        assert sum(summary["cut_by"].values()) == summary["n"]
    assert sum(tasks[t]["cut_by"]["budget"] for t in tasks) > 0

    # translation: BLEU per target language with the right tokenizers, recomputable from the rows;
    # speech output (s2st) by the ASR-BLEU protocol on normalized text, text output on raw text
    for task in ("s2st", "s2tt", "t2tt"):
        summary = tasks[task]
        assert "tok:13a" in summary["to_en"]["bleu"]["13a"]["signature"]
        assert "tok:char" in summary["to_ja"]["bleu"]["char"]["signature"]
        assert ("score" in summary["to_ja"]["bleu"]["ja-mecab"]) == mecab_available()
        for lang in ("en", "ja"):
            mine = [r for r in rows if r["task"] == task and r["lang"] == lang]
            hyps, refs = [r["hyp"] for r in mine], [r["ref"] for r in mine]
            block = summary[f"to_{lang}"]
            if task == "s2st":
                expected = asr_bleu(hyps, refs, lang)
                assert block["protocol"].startswith("ASR-BLEU (Whisper normalizer, lowercase")
                assert "case:lc" in block["bleu"][{"en": "13a", "ja": "char"}[lang]]["signature"]
            else:
                expected = [*bleu(hyps, refs, lang), chrf(hyps, refs)]
                assert block["protocol"] == "raw text" and "normalizer" not in block
            assert block["chrf++"]["score"] == pytest.approx(expected[-1].score, abs=0.005)
            for score in expected[:-1]:
                entry = block["bleu"][score.name.removeprefix("BLEU(").removesuffix(")")]
                assert entry["score"] == pytest.approx(score.score, abs=0.005)
                assert (entry["signature"], entry["protocol"]) == (score.signature, score.protocol)
    assert tasks["s2st"]["asr"] == "sts-checkpoint:asr" and tasks["s2st"]["rtf"] > 0
    # asr and tts: CER (WER for English) against the source text
    for task in ("asr", "tts"):
        for lang in ("ja", "en"):
            mine = [r for r in rows if r["task"] == task and r["lang"] == lang]
            assert tasks[task][lang] == error_rate([r["hyp"] for r in mine], [r["ref"] for r in mine], lang)
    assert tasks["asr"]["en"]["wer"] is not None and tasks["asr"]["ja"]["wer"] is None
    assert all("chrf++" in r and "cer" in r for r in rows)
    # the codec round trip of the reference audio (j1 and e1 source audio, e1 again as j1's target)
    assert report["codec_roundtrip"]["en"]["n"] == 2 and report["codec_roundtrip"]["ja"]["n"] == 1
    assert {"original", "resynthesized"} <= set(report["codec_roundtrip"]["ja"])
    assert (out / "audio" / "s2st" / "j1.wav").is_file() and (out / "audio" / "tts" / "t1.wav").is_file()
    if report["plot"]:
        assert (out / "report.png").stat().st_size > 0


def test_eval_without_asr_skips_speech_scores(model_dir, manifest, tmp_path):  # noqa: F811
    out = tmp_path / "report"
    args = _eval_args(manifest, model_dir, out, asr="none", max_new_tokens=6)
    assert main([*args, "--tasks", "s2st", "t2tt", "--max-items", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "skipped" in report["tasks"]["s2st"] and "to_en" not in report["tasks"]["s2st"]
    assert "to_en" in report["tasks"]["t2tt"] and "codec_roundtrip" not in report


def test_a_clip_over_max_audio_seconds_is_skipped_and_counted(model_dir, manifest, tmp_path, caplog):  # noqa: F811
    """Batch policy: the 0.8 s clip over a 0.7 s limit is skipped (logged with its file and the
    limit, counted in the report); the 0.6 s clip is evaluated."""
    out = tmp_path / "report"
    args = _eval_args(manifest, model_dir, out, asr="none", max_new_tokens=4)
    with caplog.at_level(logging.WARNING, logger="infer.checkpoint_eval"):
        assert main([*args, "--tasks", "asr", "--max-audio-seconds", "0.7"]) == 0
    assert f"{manifest.parent / 'j1.wav'}: 0.8 s is longer than the 0.7 s limit" in caplog.text
    report = json.loads((out / "report.json").read_text())["tasks"]["asr"]
    assert report["n"] == 1 and report["skipped_inputs"] == {"audio over the seconds limit": 1}
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["e1"]
    assert main([*args, "--tasks", "asr", "--max-audio-seconds", "0.8"]) == 0
    report = json.loads((out / "report.json").read_text())["tasks"]["asr"]
    assert report["n"] == 2 and "skipped_inputs" not in report


def test_translation_scores_say_when_ja_mecab_cannot_run(monkeypatch):
    import infer.checkpoint_eval
    import sts.metrics

    for module in (infer.checkpoint_eval, sts.metrics):
        monkeypatch.setattr(module, "mecab_available", lambda: False)
    block = translation_scores(["今日はいい天気"], ["今日はいい天気"], "ja", speech=False)
    assert block["bleu"]["char"]["score"] == 100.0 and block["protocol"] == "raw text"
    assert "score" not in block["bleu"]["ja-mecab"] and "char" in block["bleu"]["ja-mecab"]["skipped"]
    spoken = translation_scores(["300円です"], ["三百円です。"], "ja", speech=True)
    assert spoken["bleu"]["char"]["score"] == 100.0 and "kanji numerals" in spoken["normalizer"]


@pytest.mark.slow
def test_speaker_similarity_in_s2st(model_dir, manifest, tmp_path):  # noqa: F811
    """`sts.speaker`, when resemblyzer is installed: one cosine per s2st row and their mean."""
    pytest.importorskip("resemblyzer")
    out = tmp_path / "report"
    args = _eval_args(manifest, model_dir, out, asr="none", max_new_tokens=40)
    assert main([*args, "--tasks", "s2st", "--no-codec-roundtrip"]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    sims = [r["speaker_similarity"] for r in rows if r["speaker_similarity"] is not None]
    assert len(rows) == 2 and all(-1 <= s <= 1 for s in sims)
    mean = report["tasks"]["s2st"]["speaker_similarity"]
    assert mean == (pytest.approx(sum(sims) / len(sims), abs=1e-4) if sims else None)
    assert report["tasks"]["s2st"]["speaker_unscored"] == len(rows) - len(sims)  # too little voice: counted
    assert "resemblyzer" in report["tasks"]["s2st"]["speaker_encoder"]
