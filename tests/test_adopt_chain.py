"""A Llasa-layout model runs the whole chain from its adopted vocabulary: `sts-extend-tokenizer` adopts
it, `sts-train cpt` and `sts-train sft` train it (loss falls), `sts-infer` speaks with the result and
`sts-eval` scores it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from corpus_builder.tts.testing import save_tiny_llasa
from infer.cli import eval_main
from infer.cli import main as infer_main
from sts.audio import write_audio
from sts.io import write_json_atomic
from sts.testing import save_tiny_xcodec2, synthetic_utterance
from sts.vocab import SpeechVocab
from tokenizer_ext import ExtendConfig, extend_tokenizer
from train.checkpoint import latest_checkpoint
from train.cli import main as train_main
from train.config import CONFIG_DIR
from train.logger import read_metrics
from train.testing import write_tiny_encoded_shards

N = 1024  # the tiny XCodec2's codebook
HOP = 320


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Adopted tiny Llasa (recording the tiny codec), encoded shards with their card, a run folder."""
    root = tmp_path_factory.mktemp("llasa-chain")
    codec = save_tiny_xcodec2(root / "codec")
    llasa = save_tiny_llasa(root / "llasa", num_speech_tokens=N, chat_format="llama3", end_bias=0.0)
    adopted = root / "adopted"
    extend_tokenizer(ExtendConfig(str(llasa), adopted, num_speech_tokens=N, codec=str(codec)))
    shards = write_tiny_encoded_shards(root / "encoded", num_codes=N)
    card = {"codec": str(codec), "frame_rate": 50.0, "codebook_size": N, "sample_rate": 16000}
    write_json_atomic(root / "encoded" / "corpus.json", {"encode": {**card, "dtype": "int32",
                                                                    "columns": ["src_codes", "tgt_codes"]}})  # fmt: skip
    return root, adopted, shards


def _train(stage, model, shards, out, *extra):
    args = [stage, "--config", str(CONFIG_DIR / f"tiny_{stage}.yaml"), "--model", str(model),
            "--shards", *map(str, shards), "--out-dir", str(out), *extra]  # fmt: skip
    assert train_main(args) == 0
    return latest_checkpoint(out)


def _falls(losses: list[float]) -> bool:
    return np.mean(losses[-2:]) < np.mean(losses[:2])


@pytest.fixture(scope="module")
def trained(run):
    root, adopted, shards = run
    cpt = _train("cpt", adopted, shards, root / "cpt", "--max-steps", "8", "--save-every", "8")
    sft = _train(
        "sft", cpt, shards, root / "sft", "--max-steps", "8", "--save-every", "8", "--eval-every", "4"
    )
    return cpt, sft


def test_cpt_and_sft_train_from_the_adopted_vocab(run, trained):
    root, adopted, _ = run
    cpt, sft = trained
    vocab = SpeechVocab.load(adopted)
    assert SpeechVocab.load(cpt) == SpeechVocab.load(sft) == vocab  # the contract travels unchanged
    assert vocab.speech_start_token == "<|SPEECH_GENERATION_START|>"
    for stage in ("cpt", "sft"):
        losses = [r["loss"] for r in read_metrics(root / stage)]
        assert len(losses) == 8 and all(np.isfinite(losses)) and _falls(losses), (stage, losses)
    evals = read_metrics(root / "sft", kind="eval")
    assert [r["step"] for r in evals] == [4, 8]
    losses = {k: (evals[0][k], evals[1][k]) for k in evals[0] if k.startswith("loss/")}
    assert len(losses) == 10 and all(after < before for before, after in losses.values()), losses  # held out
    assert {"s2st:ja-en", "tts:en", "asr:ja", "t2tt:en-ja"} <= {k.split("/")[1] for k in evals[0] if "/" in k}


def _codes_in(path) -> int:
    wav, sr = sf.read(path)
    assert sr == 16000 and wav.ndim == 1 and len(wav) % HOP == 0
    return len(wav) // HOP


def test_infer_speaks_from_the_trained_checkpoint(trained, tmp_path):
    _, sft = trained
    write_audio(tmp_path / "ja.wav", synthetic_utterance(0.8, 150.0, seed=3))
    s2st, results = tmp_path / "en.wav", tmp_path / "r.jsonl"
    args = [str(tmp_path / "ja.wav"), "--from", "ja", "--to", "en", "-o", str(s2st), "--model", str(sft)]
    assert infer_main([*args, "--max-new-tokens", "24", "--results", str(results)]) == 0
    row = json.loads(results.read_text())
    assert row["task"] == "s2st" and 1 <= _codes_in(s2st) <= 24 and row["codes"] == _codes_in(s2st)

    tts = tmp_path / "tts.wav"
    args = [
        "--task",
        "tts",
        "--text",
        "Where is the station?",
        "--from",
        "en",
        "-o",
        str(tts),
        "--model",
        str(sft),
    ]
    assert infer_main([*args, "--max-new-tokens", "20"]) == 0
    assert 1 <= _codes_in(tts) <= 20

    asr = tmp_path / "asr.txt"
    args = [str(tmp_path / "ja.wav"), "--task", "asr", "--from", "ja", "-o", str(asr), "--model", str(sft)]
    assert infer_main([*args, "--max-new-tokens", "8"]) == 0
    assert asr.read_text().endswith("\n")


def test_eval_scores_the_trained_checkpoint(trained, tmp_path):
    pytest.importorskip("sacrebleu")
    _, sft = trained
    write_audio(tmp_path / "j1.wav", synthetic_utterance(0.8, 150.0, seed=5))
    rows = [
        {
            "id": "j1",
            "audio": "j1.wav",
            "src_lang": "ja",
            "src_text": "駅はどこですか",
            "tgt_text": "Where is it?",
        },
        {"id": "t1", "src_lang": "en", "src_text": "Good morning.", "tgt_text": "おはようございます"},
    ]
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "report"
    args = [str(manifest), "--model", str(sft), "-o", str(out), "--asr", "self", "--max-new-tokens", "8"]
    assert eval_main([*args, "--no-speaker-similarity", "--tasks", "s2st", "tts", "t2tt"]) == 0
    tasks = json.loads((out / "report.json").read_text())["tasks"]
    assert {t: tasks[t]["n"] for t in tasks} == {"s2st": 1, "tts": 2, "t2tt": 2}
    assert tasks["s2st"]["asr"] == "sts-checkpoint:asr" and "to_en" in tasks["s2st"]
    assert (out / "audio" / "s2st" / "j1.wav").is_file() and (out / "audio" / "tts" / "t1.wav").is_file()
