"""The standard test sets read from tiny copies in their published layouts, and the hub path up to the network."""

from __future__ import annotations

import pytest
from testset_copies import (
    make_common_voice,
    make_covost2,
    make_cvss,
    make_fleurs_original,
    make_fleurs_parquet,
)

from infer.eval_items import item_audio
from infer.testsets import load_test_set
from sts.errors import ManifestError, UsageError

FLEURS_JA_EN = [  # (id, source transcript, reference)
    ("1-1000", "駅はどこですか。", "Where is the station?"),
    ("1-1001", "駅はどこですか。", "Where is the station?"),  # a second speaker of sentence 1
    ("2-1010", "今日は晴れです。", 'It is "sunny" today.'),  # quotes survive (tsv read without quoting)
]


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("testsets")
    make_fleurs_original(root / "fleurs")
    make_fleurs_parquet(root / "fleurs_parquet")
    make_common_voice(root / "cv")
    make_cvss(root / "cvss")
    make_covost2(root / "covost")
    return root


def _triples(test):
    return [(i.id, i.src_text, i.tgt_text) for i in test.items]


@pytest.mark.parametrize("layout", ["fleurs", "fleurs_parquet", "fleurs/data"])
def test_fleurs_layouts_pair_sentences_by_id(copies, layout):
    test = load_test_set("fleurs", direction="ja-en", data_dir=copies / layout)
    assert _triples(test) == FLEURS_JA_EN
    assert test.dropped == {"no_target_sentence": 1}  # sentence 3 has no en_us recording
    assert test.tasks == ("s2st", "s2tt", "asr") and test.items[0].tgt_lang == "en"
    wav = item_audio(test.items[2])
    assert wav.dtype.name == "float32" and abs(len(wav) / 16000 - 0.7) < 0.01  # the 0.7 s clip of sentence 2
    assert ("Parquet" in test.source) == (layout == "fleurs_parquet")


def test_fleurs_other_direction_and_max_items(copies):
    test = load_test_set("fleurs", direction="en-ja", data_dir=copies / "fleurs", max_items=1)
    assert _triples(test) == [("1-1500", "Where is the station?", "駅はどこですか。")]
    assert isinstance(test.items[0].audio, bytes)


def test_fleurs_hub_path_asks_for_the_right_files(copies, monkeypatch):
    """No --data-dir: the tsv and the tar are read from hf://datasets/google/fleurs/data with the real
    `load_dataset` builders; patched only at the network boundary (the URL points at the local copy)."""
    import datasets

    real, calls = datasets.load_dataset, []
    local = f"{copies / 'fleurs' / 'data'}"

    def at_the_boundary(builder, **kwargs):
        calls.append((builder, dict(kwargs["data_files"]), kwargs["split"], kwargs["streaming"]))
        files = {
            k: v.replace("hf://datasets/google/fleurs/data", local) for k, v in kwargs["data_files"].items()
        }
        return real(builder, **{**kwargs, "data_files": files})

    monkeypatch.setattr(datasets, "load_dataset", at_the_boundary)
    test = load_test_set("fleurs", direction="ja-en", split="test", max_items=2)
    hub = "hf://datasets/google/fleurs/data"
    assert calls == [
        ("csv", {"test": f"{hub}/en_us/test.tsv"}, "test", True),  # the references first
        ("csv", {"test": f"{hub}/ja_jp/test.tsv"}, "test", True),
        ("webdataset", {"test": f"{hub}/ja_jp/audio/test.tar.gz"}, "test", True),
    ]
    assert _triples(test) == FLEURS_JA_EN[:2] and test.source == "hub:google/fleurs (original layout)"
    assert all(isinstance(i.audio, bytes) for i in test.items)


def test_fleurs_refusals(copies, tmp_path):
    with pytest.raises(FileNotFoundError, match="no FLEURS ja_jp dev split here"):
        load_test_set("fleurs", split="dev", data_dir=copies / "fleurs")
    with pytest.raises(UsageError, match="split 'eval' is not one of"):
        load_test_set("fleurs", split="eval", data_dir=copies / "fleurs")
    with pytest.raises(UsageError, match="direction 'ja-ja'"):
        load_test_set("fleurs", direction="ja-ja")
    with pytest.raises(UsageError, match="expected one of"):
        load_test_set("librispeech")


def test_cvss_joins_common_voice_clips(copies):
    test = load_test_set("cvss", data_dir=copies / "cvss", common_voice_dir=copies / "cv" / "ja")
    assert _triples(test) == [
        ("common_voice_ja_100", "駅はどこですか", "where is the station"),
        ("common_voice_ja_101", "五ドルです", "it is five dollars"),
    ]
    assert test.dropped == {"source_clip_missing": 1}
    assert test.items[0].tgt_audio.name == "common_voice_ja_100.mp3.wav"
    src, tgt = item_audio(test.items[0]), item_audio(test.items[0], "target")
    assert abs(len(src) / 16000 - 0.7) < 0.05 and abs(len(tgt) / 16000 - 0.8) < 0.01  # 48 kHz mp3, 24 kHz wav


def test_cvss_and_covost2_say_what_to_download(copies):
    with pytest.raises(UsageError, match="Common Voice release 4 .ja.*not on the hub"):
        load_test_set("cvss")
    with pytest.raises(UsageError, match="covost_v2.ja_en.tsv.*Common Voice release 4"):
        load_test_set("covost2")
    with pytest.raises(FileNotFoundError, match="no clips/ folder.*Common Voice release 4"):
        load_test_set("cvss", data_dir=copies / "cvss")
    with pytest.raises(UsageError, match="direction 'en-ja'"):
        load_test_set("cvss", direction="en-ja", data_dir=copies / "cvss")


def test_covost2_splits_and_transcripts(copies, tmp_path):
    test = load_test_set("covost2", data_dir=copies / "covost", common_voice_dir=copies / "cv" / "ja")
    assert _triples(test) == [
        ("common_voice_ja_100", "駅はどこですか", "Where is the station?"),
        ("common_voice_ja_101", "五ドルです", "It's $5."),
    ]
    assert test.tasks == ("s2tt", "asr") and test.dropped == {"source_clip_missing": 1}
    train = load_test_set(
        "covost2", split="train", data_dir=copies / "covost", common_voice_dir=copies / "cv" / "ja"
    )
    assert train.items == [] and train.dropped == {"source_clip_missing": 1}  # train_covost belongs to train
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "covost_v2.ja_en.tsv").write_text("path\tsentence\n", encoding="utf-8")
    with pytest.raises(
        ManifestError, match=r"covost_v2.ja_en.tsv:1: the header lacks \['split', 'translation'\]"
    ):
        load_test_set("covost2", data_dir=bad, common_voice_dir=copies / "cv" / "ja")


def test_an_unreachable_hub_is_one_line_that_says_what_to_do(monkeypatch):
    """The hub's file system raises the network library's own error (not an OSError); the loader
    turns it into a ConnectionError naming the repo and --data-dir (one line through cli_main)."""
    import datasets

    ConnectError = type("ConnectError", (Exception,), {"__module__": "httpx"})

    def offline(*args, **kwargs):
        raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        ConnectionError, match=r"hub:google/fleurs: cannot reach the hub .*give --data-dir DIR"
    ):
        load_test_set("fleurs", max_items=1)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug stays a bug
        load_test_set("fleurs", max_items=1)
