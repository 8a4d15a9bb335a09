"""`sts-eval` end to end on a tiny random checkpoint; its ASR is the checkpoint's own `asr` task."""

from __future__ import annotations

import json

import pytest
from test_infer_cli import codec_dir, model_dir  # noqa: F401  (module fixtures)

from infer.eval import main, read_manifest
from infer.metrics import bleu_scores, chrf_score, error_rate, mecab_available
from sts.audio import write_audio
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
    args = [str(manifest), "--model", str(checkpoint), "-o", str(out), "--asr", asr]
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

    # translation: BLEU per target language with the right tokenizers, recomputable from the rows
    for task in ("s2st", "s2tt", "t2tt"):
        summary = tasks[task]
        assert "tok:13a" in summary["to_en"]["bleu"]["13a"]["signature"]
        assert "tok:char" in summary["to_ja"]["bleu"]["char"]["signature"]
        assert ("score" in summary["to_ja"]["bleu"]["ja-mecab"]) == mecab_available()
        for lang in ("en", "ja"):
            mine = [r for r in rows if r["task"] == task and r["lang"] == lang]
            hyps, refs = [r["hyp"] for r in mine], [r["ref"] for r in mine]
            assert summary[f"to_{lang}"]["bleu"] == bleu_scores(hyps, refs, lang)
            assert summary[f"to_{lang}"]["chrf"] == chrf_score(hyps, refs)
    assert tasks["s2st"]["asr"] == "sts-checkpoint:asr" and tasks["s2st"]["rtf"] > 0
    # asr and tts: CER (WER for English) against the source text
    for task in ("asr", "tts"):
        for lang in ("ja", "en"):
            mine = [r for r in rows if r["task"] == task and r["lang"] == lang]
            assert tasks[task][lang] == error_rate([r["hyp"] for r in mine], [r["ref"] for r in mine], lang)
    assert tasks["asr"]["en"]["wer"] is not None and tasks["asr"]["ja"]["wer"] is None
    # the codec round trip of the reference audio (j1 and e1 source audio, e1 again as j1's target)
    assert report["codec_roundtrip"]["en"]["n"] == 2 and report["codec_roundtrip"]["ja"]["n"] == 1
    assert {"original", "resynthesized"} <= set(report["codec_roundtrip"]["ja"])
    assert (out / "audio" / "s2st" / "j1.wav").is_file() and (out / "audio" / "tts" / "t1.wav").is_file()
    if report["plot"]:
        assert (out / "report.png").stat().st_size > 0


def test_eval_without_asr_skips_speech_scores(model_dir, manifest, tmp_path):  # noqa: F811
    out = tmp_path / "report"
    args = _eval_args(manifest, model_dir, out, asr="none", max_new_tokens=6)
    assert main([*args, "--tasks", "s2st", "t2tt", "--limit", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "skipped" in report["tasks"]["s2st"] and "to_en" not in report["tasks"]["s2st"]
    assert "to_en" in report["tasks"]["t2tt"] and "codec_roundtrip" not in report


@pytest.mark.slow
def test_speaker_similarity_in_s2st(model_dir, manifest, tmp_path):  # noqa: F811
    """resemblyzer, when installed: one cosine per s2st row and their mean (about 40 s: model load)."""
    pytest.importorskip("resemblyzer")
    from infer.eval import resemblyzer_similarity

    similarity = resemblyzer_similarity()
    same = synthetic_utterance(1.5, 150.0, seed=7)
    assert similarity(same, same) == pytest.approx(1.0, abs=1e-4)
    out = tmp_path / "report"
    args = _eval_args(manifest, model_dir, out, asr="none", max_new_tokens=40)
    assert main([*args, "--tasks", "s2st", "--no-codec-roundtrip"]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    sims = [r["speaker_similarity"] for r in rows]
    assert len(sims) == 2 and all(-1 <= s <= 1 for s in sims)
    assert report["tasks"]["s2st"]["speaker_similarity"] == pytest.approx(sum(sims) / 2, abs=1e-4)
