"""Paths a card or contract records resolve from anywhere (`sts.paths`): relative to the recording
file (a codec in corpus.json and sts_vocab.json) or absolute (configs), and older cwd-relative ones
where they resolve."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from sts.config import config_to_dict, load_config, save_config
from sts.paths import absolute_if_local, record_path, resolve_recorded, same_location

HUB_ID = "HKUSTAudio/xcodec2-hf"


def test_record_and_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "codec").mkdir(parents=True)
    (tmp_path / "run" / "lm").mkdir(parents=True)
    codec = str((tmp_path / "models" / "codec").resolve())
    assert record_path("models/codec", "run/lm") == "../../models/codec"  # relative to the recording folder
    assert record_path(codec, "run/lm") == "../../models/codec"
    assert record_path(HUB_ID, "run/lm") == HUB_ID and record_path("no/such/dir", "run/lm") == "no/such/dir"
    assert record_path(codec, "/") == codec  # nothing in common but the root: absolute
    assert record_path(None, "run/lm") is None
    assert resolve_recorded("../../models/codec", "run/lm") == codec
    assert resolve_recorded(codec, "/anywhere") == codec
    assert resolve_recorded("models/codec", "run/lm") == codec  # an older, cwd-relative record
    assert resolve_recorded(HUB_ID, "run/lm") == HUB_ID and resolve_recorded("", "run/lm") == ""
    assert same_location("models/codec", codec) and same_location("./models/../models/codec", codec)
    assert not same_location(HUB_ID, codec) and same_location(HUB_ID, HUB_ID)
    assert absolute_if_local(["models/codec", HUB_ID, None]) == [codec, HUB_ID, None]
    monkeypatch.chdir(tmp_path / "run")
    assert resolve_recorded("../../models/codec", "lm") == codec  # the same record, read from elsewhere


def test_configs_record_path_options_absolute(tmp_path, monkeypatch):
    from sts.config import make_config
    from train.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    for folder in ("models/lm", "corpus", "text"):
        (tmp_path / folder).mkdir(parents=True)
    cfg = make_config(TrainConfig, stage="cpt", model="models/lm", data__shards=["corpus", "gone"], out_dir="run",
                      cpt__text_column="text")  # fmt: skip
    record = config_to_dict(cfg)
    assert record["model"] == str(tmp_path / "models" / "lm")
    assert record["data"]["shards"] == [
        str(tmp_path / "corpus"),
        "gone",
    ]  # what does not exist stays as given
    assert record["cpt"]["text_column"] == "text"  # not a path option, though a folder of that name exists
    assert record["out_dir"] == "run"  # not made yet
    save_config(cfg, tmp_path / "train_config.yaml")
    monkeypatch.chdir("/")
    again = load_config(TrainConfig, tmp_path / "train_config.yaml")
    assert Path(again.model).is_dir() and Path(again.data.shards[0]).is_dir()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project built with relative paths, as a user types them: models/codec, corpus, models/lm-speech."""
    from corpus_builder.cli import encode_main
    from corpus_builder.cli import main as build_main
    from sts.testing import save_tiny_lfm2, save_tiny_xcodec2
    from tokenizer_ext.cli import main as extend_main

    root = tmp_path_factory.mktemp("paths") / "proj"
    root.mkdir()
    before = os.getcwd()
    os.chdir(root)
    try:
        save_tiny_xcodec2(Path("models/codec"))
        save_tiny_lfm2(Path("models/lm"))
        Path("ja.txt").write_text("おはようございます。\n駅はどこですか。\nありがとう。\n", encoding="utf-8")
        Path("en.txt").write_text("Good morning.\nWhere is the station?\nThank you.\n", encoding="utf-8")
        assert build_main(["--out-dir", "corpus", "--source", "text-pairs", "--path", "ja.txt", "--tgt-path",
                           "en.txt", "--mt", "reference", "--tts", "python:corpus_builder.testing:ToneTTS",
                           "--checks", "none", "--min-duration", "0"]) == 0  # fmt: skip
        assert encode_main(["corpus", "--codec", "models/codec"]) == 0
        assert extend_main(["models/lm", "-o", "models/lm-speech", "--codec", "models/codec",
                            "--num-speech-tokens", "1024"]) == 0  # fmt: skip
    finally:
        os.chdir(before)
    return root


def test_a_relative_codec_resolves_from_another_folder_and_after_a_move(project, tmp_path, monkeypatch):
    from corpus_builder.encode import EncodeConfig, encode_corpus, recorded_codec
    from sts.corpus import read_card, shard_paths
    from sts.vocab import SpeechVocab
    from train.contract import check_corpus

    codec = str((project / "models" / "codec").resolve())
    card = read_card(project / "corpus")
    assert card["encode"]["codec"] == "../models/codec" and card["cwd"] == str(project)
    assert card["config"]["path"] == str(project / "ja.txt") and card["config"]["out_dir"] == str(
        project / "corpus"
    )
    vocab_file = project / "models" / "lm-speech" / "sts_vocab.json"
    assert json.loads(vocab_file.read_text())["codec"] == "../codec"
    extend_config = yaml.safe_load((project / "models" / "lm-speech" / "extend_config.yaml").read_text())
    assert extend_config["codec"] == codec and extend_config["base_model"] == str(project / "models" / "lm")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    vocab = SpeechVocab.load(project / "models" / "lm-speech")
    assert vocab.codec == codec and vocab.base_model == str(project / "models" / "lm")
    assert recorded_codec(project / "corpus") == codec
    check_corpus(shard_paths(project / "corpus"), vocab, vocab_file)  # the contract holds from here
    # the same codec spelled from here is the same codec: a rerun skips, nothing is refused
    for spelling in (codec, os.path.relpath(codec)):
        assert all(skip for *_, skip in encode_corpus(EncodeConfig(project / "corpus", codec=spelling)))

    moved = tmp_path / "moved"
    shutil.copytree(project, moved)  # the tree as a whole, elsewhere: its links move with it
    vocab = SpeechVocab.load(moved / "models" / "lm-speech")
    assert vocab.codec == str(moved / "models" / "codec")
    check_corpus(shard_paths(moved / "corpus"), vocab, moved / "models" / "lm-speech" / "sts_vocab.json")


def test_training_from_another_folder_writes_checkpoints_that_find_their_codec(
    project, tmp_path, monkeypatch
):
    from sts.vocab import SpeechVocab
    from train.cli import main
    from train.config import CONFIG_DIR
    from train.merge import base_model_of

    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    rel = os.path.relpath(project, run_dir)
    args = ["sft", "--config", str(CONFIG_DIR / "tiny_sft.yaml"), "--model", f"{rel}/models/lm-speech",
            "--data.shards", f"{rel}/corpus", "--out-dir", "sft", "--optim.max-steps", "2", "--log.save-every", "2",
            "--eval.every", "0", "--eval.no-generate"]  # fmt: skip
    assert main(args) == 0
    checkpoint = run_dir / "sft" / "checkpoint-0000002"
    recorded = yaml.safe_load((checkpoint / "train_config.yaml").read_text())
    assert recorded["model"] == str(project / "models" / "lm-speech")
    assert recorded["data"]["shards"] == [str(project / "corpus")] and recorded["out_dir"] == str(
        run_dir / "sft"
    )
    decoding = json.loads((checkpoint / "sts_decoding.json").read_text())
    assert decoding["source"][0]["corpus"] == str(project / "corpus")
    assert decoding["source"][0]["card_duration_ratio"] == decoding["duration_ratio"]  # the card was found
    monkeypatch.chdir("/")
    assert SpeechVocab.load(checkpoint).codec == str(project / "models" / "codec")
    assert base_model_of(checkpoint) == str(project / "models" / "lm-speech")  # what merge-lora reads


def test_older_cwd_relative_records_keep_working_where_they_resolve(project, tmp_path, monkeypatch):
    from corpus_builder.encode import recorded_codec
    from sts.corpus import shard_paths
    from sts.vocab import SpeechVocab
    from train.contract import check_corpus
    from train.merge import base_model_of

    old = tmp_path / "old"
    shutil.copytree(project, old)
    card_file, vocab_file = old / "corpus" / "corpus.json", old / "models" / "lm-speech" / "sts_vocab.json"
    for path in (card_file, vocab_file):  # as versions before sts.paths wrote them: the flag as typed
        data = json.loads(path.read_text())
        data.get("encode", data)["codec"] = "models/codec"
        path.write_text(json.dumps(data))
    (old / "ckpt").mkdir()
    (old / "ckpt" / "train_config.yaml").write_text("model: models/lm-speech\n")
    monkeypatch.chdir(old)  # where they were made: they resolve
    codec = str(old / "models" / "codec")
    assert recorded_codec(old / "corpus") == codec and SpeechVocab.load(vocab_file).codec == codec
    check_corpus(shard_paths(old / "corpus"), SpeechVocab.load(vocab_file), vocab_file)
    assert base_model_of(old / "ckpt") == str(old / "models" / "lm-speech")
    monkeypatch.chdir(tmp_path)  # elsewhere they stay as written (and name what is missing)
    assert recorded_codec(old / "corpus") == "models/codec"
