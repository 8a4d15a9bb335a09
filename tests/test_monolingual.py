"""Monolingual corpora (`sts-build-corpus --mt none`): built from text or clips, encoded, trained on.

A monolingual row has the source side only (tgt_* null). It must reach every stage as what it is:
no bad clip in sts-encode, asr/tts samples in sft (and a speech document in cpt) with nothing counted
as skipped, no duration ratio, tts prompts only in dpo-pairs, and a mixture with a bilingual corpus.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from corpus_builder.build import BuildConfig, build_corpus
from corpus_builder.cli import encode_main
from corpus_builder.cli import main as build_main
from corpus_builder.encode import bad_clips
from corpus_builder.testing import LengthCheck, ToneTTS, tone_bytes, tone_seconds
from sts.corpus import corpus_features, duration_ratios, encoded_features, read_card, read_rows, shard_paths
from sts.decoding_info import decoding_info

TONE = "python:corpus_builder.testing:ToneTTS"
JA = ["おはようございます。", "駅はどこですか。", "あ", "", "切符を二枚ください。", "これはいくらですか。"]
EN = ["Good morning.", "Where is the station?", "Thank you.", "Two tickets, please."]


def _lines(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_text_source_builds_monolingual_rows_checked_against_their_text(tmp_path):
    import datasets

    text = _lines(tmp_path / "ja.txt", JA)
    cfg = BuildConfig(
        out_dir=tmp_path / "mono", source="text", path=str(text), folder_lang="ja", mt="none",
        tts=TONE, checks=["none"], min_duration=0.0, rows_per_shard=4,
    )  # fmt: skip
    # "あ" is spoken for 0.6 s: 0.6 s per character fails a 0.3 s/char length check
    results = list(build_corpus(cfg, tts=ToneTTS(), checks=[LengthCheck(0.3)], argv=["test"]))
    assert [r.skipped for r in results] == [False, False]
    rows = read_rows(cfg.out_dir)
    assert [r["src_text"] for r in rows] == [JA[0], JA[1], JA[4], JA[5]]
    for row in rows:
        assert row["src_lang"] == "ja" and row["mt_backend"] == "none" and row["tts_backend"] == "tone:24000"
        assert all(row[c] is None for c in ("tgt_lang", "tgt_text", "tgt_audio", "tgt_duration"))
        assert row["tgt_asr_error"] is None and row["speaker_similarity"] is None
        assert row["src_duration"] == pytest.approx(tone_seconds(row["src_text"]), abs=1e-3)
        # the check scored the synthesized speech against its own text
        assert row["src_asr_error"] == pytest.approx(
            tone_seconds(row["src_text"]) / len(row["src_text"]), 1e-3
        )

    card = read_card(cfg.out_dir)
    assert card["kind"] == "monolingual" and card["directions"] == {} and card["duration_ratio"] == {}
    assert card["monolingual"]["ja"]["rows"] == 4
    hours = sum(tone_seconds(t) for t in (JA[0], JA[1], JA[4], JA[5])) / 3600
    assert card["monolingual"]["ja"]["hours"] == pytest.approx(hours, rel=1e-3)
    assert card["drops"] == {"check_length": 1, "text_empty": 1}
    assert card["models"]["mt"] == "none" and "Monolingual" in card["description"]
    readme = (cfg.out_dir / "README.md").read_text()
    header = yaml.safe_load(readme.split("---")[1])
    assert header["language"] == ["ja"] and "translation" not in header["task_categories"]
    assert "ja, monolingual (no translation side): 4 rows" in readme and "df.tgt_lang.isna()" in readme
    ds = datasets.load_dataset(str(cfg.out_dir), split="train")  # the dataset card's features describe it
    assert ds.features == corpus_features() and ds["tgt_lang"] == [None] * 4

    # A rerun resumes (nothing redone), and the flags it was built with are recorded.
    assert all(r.skipped for r in build_corpus(cfg, tts=ToneTTS(), checks=[], argv=["test"]))


def test_recorded_clips_need_no_tts_and_keep_their_audio(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    manifest = []
    for i, text in enumerate(EN):
        (clips / f"c{i}.wav").write_bytes(tone_bytes(1.0 + i / 4, 16000, "WAV"))
        manifest.append(
            json.dumps({"audio": f"c{i}.wav", "text": text, "language": "en", "tgt_text": "無視"})
        )
    _lines(clips / "clips.jsonl", manifest)
    out = tmp_path / "mono-en"
    # a TTS that cannot even be imported: a monolingual build of recorded clips never loads one
    args = ["--out-dir", str(out), "--source", "local", "--path", str(clips / "clips.jsonl"), "--mt", "none",
            "--tts", "python:no_such_module:Voice", "--checks", "python:corpus_builder.testing:LengthCheck",
            "--min-duration", "0"]  # fmt: skip
    assert build_main(args) == 0
    rows = read_rows(out)
    assert [r["src_text"] for r in rows] == EN
    assert [r["src_duration"] for r in rows] == pytest.approx([1.0, 1.25, 1.5, 1.75], abs=1e-3)
    assert {r["tts_backend"] for r in rows} == {"none"} and {r["tgt_text"] for r in rows} == {None}
    assert {r["src_asr_error"] for r in rows} == {None}  # a recorded clip is not checked
    card = read_card(out)
    assert card["models"]["tts"] == "none" and card["monolingual"]["en"]["rows"] == 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--source", "text-pairs", "--tgt-path", "{en}", "--mt", "none"],
            "--mt none builds one-language rows",
        ),
        (
            ["--source", "text", "--mt", "none", "--voice-preserving"],
            "--voice-preserving needs a translation",
        ),
        (["--source", "text", "--mt", "none", "--mt-context", "2"], "--mt-context needs an MT backend"),
        (["--source", "text", "--mt", "reference"], "--source text has no reference translations"),
    ],
)
def test_contradicting_flags_are_refused_before_any_work(tmp_path, capsys, flags, message):
    ja, en = _lines(tmp_path / "ja.txt", JA), _lines(tmp_path / "en.txt", EN)
    flags = [f.format(en=en) for f in flags]
    assert build_main(["--out-dir", str(tmp_path / "out"), "--path", str(ja), "--tts", TONE, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "data").exists()


def _build(tmp_path, name, *args):
    out = tmp_path / name
    assert (
        build_main(["--out-dir", str(out), "--tts", TONE, "--checks", "none", "--min-duration", "0", *args])
        == 0
    )
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A monolingual ja corpus (text), a monolingual en corpus (text) and a bilingual one (pairs), each
    encoded with the tiny XCodec2; the LM extended for that codec."""
    from sts.testing import save_tiny_lfm2, save_tiny_xcodec2
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    root = tmp_path_factory.mktemp("mono")
    codec = save_tiny_xcodec2(root / "codec")
    ja, en = _lines(root / "ja.txt", JA), _lines(root / "en.txt", EN + ["Yes.", "No."])
    folders = {
        "ja": _build(root, "mono-ja", "--source", "text", "--path", str(ja), "--folder-lang", "ja", "--mt", "none"),
        "en": _build(root, "mono-en", "--source", "text", "--path", str(en), "--folder-lang", "en", "--mt", "none"),
        "pairs": _build(root, "pairs", "--source", "text-pairs", "--path", str(ja), "--tgt-path", str(en),
                        "--mt", "reference"),
    }  # fmt: skip
    for folder in folders.values():
        assert encode_main([str(folder), "--codec", str(codec)]) == 0
    lm = root / "lm-speech"
    extend_tokenizer(
        ExtendConfig(str(save_tiny_lfm2(root / "lm")), lm, num_speech_tokens=1024, codec=str(codec))
    )
    return folders, lm


def test_encode_gives_the_one_side_codes_and_no_bad_clip(corpora):
    import datasets

    folders, _ = corpora
    for name in ("ja", "en"):
        rows = read_rows(folders[name])
        assert rows and all(r["src_codes"] and r["tgt_codes"] is None for r in rows)
        assert all(len(r["src_codes"]) == int(round(r["src_duration"] * 16000)) // 320 + 1 for r in rows)
        assert bad_clips(folders[name]) == [] and read_card(folders[name])["encode"]["skipped_clips"] == 0
        ds = datasets.load_dataset(str(folders[name]), split="train")
        assert ds.features == encoded_features() and ds["tgt_codes"] == [None] * len(rows)
    # duration ratios: the monolingual rows carry none, and do not change the mixture's
    shards = [s for f in folders.values() for s in shard_paths(f)]
    assert duration_ratios(shard_paths(folders["ja"])) == {}
    assert duration_ratios(shards) == duration_ratios(shard_paths(folders["pairs"]))
    assert decoding_info(shards)["duration_ratio"]["ja-en"]["n"] == 5  # 5 non-empty pairs


def _data_counts(run):
    from train.logger import read_metrics

    return read_metrics(run, kind="data")[-1]


def test_sft_on_a_mixture_uses_monolingual_rows_for_asr_and_tts(corpora, tmp_path, capsys):
    from train.cli import main
    from train.config import CONFIG_DIR
    from train.logger import read_metrics

    folders, lm = corpora
    run = tmp_path / "sft"
    args = ["sft", "--config", str(CONFIG_DIR / "tiny_sft.yaml"), "--model", str(lm), "--data.shards",
            *map(str, folders.values()), "--out-dir", str(run), "--optim.max-steps", "12", "--log.save-every", "12",
            "--eval.every", "0", "--eval.no-generate", "--data.eval-fraction", "0", "--data.seq-len", "512"]  # fmt: skip
    assert main(args) == 0
    counts = _data_counts(run)
    skipped = {k: v for k, v in counts.items() if k.startswith(("skipped_", "dropped_"))}
    assert skipped and set(skipped.values()) == {0}, skipped  # nothing about the missing side is counted
    # every row gives asr + tts per side: ja 5 mono + en 6 mono + 5 pairs x 2 sides, each twice;
    # every pair gives s2st, s2tt, t2tt both ways: 5 x 6
    assert counts["kept"] == 2 * (5 + 6 + 10) + 6 * 5
    out = capsys.readouterr().out
    groups = next(line for line in out.splitlines() if line.startswith("sft: "))
    assert "'asr:ja'" in groups and "'tts:en'" in groups and "'s2st:ja-en'" in groups
    losses = [r["loss"] for r in read_metrics(run)]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]) - 1.5, losses  # it learns


def test_sft_and_cpt_on_monolingual_rows_alone(corpora, tmp_path):
    from train.cli import main
    from train.config import CONFIG_DIR

    folders, lm = corpora
    for stage in ("sft", "cpt"):
        run = tmp_path / stage
        args = [stage, "--config", str(CONFIG_DIR / f"tiny_{stage}.yaml"), "--model", str(lm), "--data.shards",
                str(folders["ja"]), "--out-dir", str(run), "--optim.max-steps", "2", "--log.save-every", "2",
                "--eval.every", "0", "--eval.no-generate", "--data.eval-fraction", "0"]  # fmt: skip
        assert main(args) == 0
        counts = _data_counts(run)
        assert not any(v for k, v in counts.items() if k.startswith(("skipped_", "dropped_"))), counts
        assert counts["kept"] == (10 if stage == "sft" else 5)  # asr + tts per row; one speech document
        decoding = json.loads((run / "checkpoint-0000002" / "sts_decoding.json").read_text())
        assert decoding["duration_ratio"] == {}  # no translation learned, none measured


def test_dpo_pairs_and_gen_eval_draw_only_one_language_prompts(corpora):
    from transformers import AutoTokenizer

    from sts.config import make_config
    from sts.tasks import TaskFormatter
    from sts.vocab import SpeechVocab
    from train.config import TrainConfig
    from train.dev_subset import build_dev_subset
    from train.pairs import PairConfig, pair_prompts

    folders, lm = corpora
    tokenizer, vocab = AutoTokenizer.from_pretrained(lm), SpeechVocab.load(lm)
    cfg = PairConfig(model=str(lm), shards=[str(folders["ja"])], skip_eval_rows=False)
    items = pair_prompts(cfg, TaskFormatter(tokenizer, vocab), tokenizer)
    assert {i.group for i in items} == {"tts:ja"} and len(items) == 5  # s2st/s2tt/t2tt need a target
    sft = make_config(TrainConfig, model=str(lm), data__shards=[str(folders["ja"])], data__eval_fraction=0.0,
                      eval__samples=2)  # fmt: skip
    assert {i.group for i in build_dev_subset(sft, tokenizer, vocab)} == {"asr:ja", "tts:ja"}


def test_a_monolingual_row_shape_survives_an_older_shard_without_src_asr_error(tmp_path):
    """Shards written before `src_asr_error` existed are re-encoded with the column null."""
    import pyarrow as pa

    from corpus_builder.encode import encode_table
    from sts.audio import load_audio
    from sts.codec.melkmeans import MelKMeansCodec

    row = {"id": "x", "src_lang": "ja", "tgt_lang": None, "src_text": "あ", "tgt_text": None,
           "src_audio": {"bytes": tone_bytes(1.0, 16000, "WAV"), "path": "x.wav"}, "tgt_audio": None,
           "src_duration": 1.0, "tgt_duration": None, "speaker": "", "source": "old", "mt_backend": "none",
           "tts_backend": "none", "tgt_asr_error": math.nan, "speaker_similarity": math.nan}  # fmt: skip
    schema = pa.schema([f for f in corpus_features().arrow_schema if f.name != "src_asr_error"])
    table = pa.Table.from_pylist([row], schema=schema)
    codec = MelKMeansCodec.fit([load_audio(row["src_audio"]["bytes"])] * 4, codebook_size=4)
    encoded, bad = encode_table(table, codec)
    assert bad == [] and encoded.to_pylist()[0]["src_asr_error"] is None
    assert encoded.to_pylist()[0]["tgt_codes"] is None and encoded.to_pylist()[0]["src_codes"]
    # a clip over the limit (from its header, before decoding) is a bad clip, not a crash
    encoded, bad = encode_table(table, codec, shard="s", max_seconds=0.5)
    assert [(b["id"], b["side"]) for b in bad] == [("x", "src")] and encoded.to_pylist()[0][
        "src_codes"
    ] is None
    assert bad[0]["reason"] == "x.wav: 1.0 s is longer than the 0.5 s limit"


@pytest.mark.slow
def test_a_monolingual_corpus_with_the_real_offline_voice_and_whisper_check(tmp_path):
    """English lines spoken by the offline voice (Piper, else espeak-ng), checked by offline Whisper."""
    import importlib.util
    import shutil

    from sts.offline_models import default_whisper_model

    if importlib.util.find_spec("faster_whisper") is None or default_whisper_model("en") == "base":
        pytest.skip("needs faster-whisper and offline Whisper weights")
    if importlib.util.find_spec("piper") is None and shutil.which("espeak-ng") is None:
        pytest.skip("needs piper-tts or espeak-ng")
    text = _lines(tmp_path / "en.txt", ["Good morning, how are you today?", "Where is the nearest station?"])
    out = tmp_path / "en-mono"
    assert build_main(["--out-dir", str(out), "--source", "text", "--path", str(text), "--folder-lang", "en",
                       "--mt", "none", "--tts", "offline", "--checks", "default", "--min-duration", "0"]) == 0  # fmt: skip
    rows = read_rows(out)
    assert len(rows) == 2 and all(r["tgt_audio"] is None and r["speaker_similarity"] is None for r in rows)
    assert all(r["src_asr_error"] is not None and r["src_asr_error"] <= 0.2 for r in rows), rows
    assert all(r["src_duration"] > 1.0 for r in rows)
    assert read_card(out)["models"]["checks"] and read_card(out)["monolingual"]["en"]["rows"] == 2
