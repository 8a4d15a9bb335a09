"""Sources of the corpus builder: Emilia tars through `datasets`, local manifests/folders, text pairs, filters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corpus_builder.sources import SourceConfig, SourceRow, filter_reason, iter_emilia, open_source
from corpus_builder.testing import tone_bytes, write_emilia_tar
from sts.audio import AudioError, write_audio


def _meta(i: int, lang: str, **kw) -> dict:
    return {
        "id": f"{lang.upper()}_B00000_S00000_W{i:06d}",
        "text": "こんにちは、元気ですか。" if lang == "ja" else "Hello, how are you?",
        "language": lang,
        "speaker": f"{lang.upper()}_B00000_S00000",
        "duration": 1.5,
        "dnsmos": 3.3,
        **kw,
    }


@pytest.fixture(scope="module")
def emilia_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("emilia")
    ja = [{**_meta(i, "ja"), "mp3": tone_bytes(1.5)} for i in range(3)]
    ja[1]["mp3"] = b"this is not an mp3 file at all"
    en = [{**_meta(i, "en"), "mp3": tone_bytes(1.5)} for i in range(2)]
    en[1]["mp3"] = b""
    write_emilia_tar(root / "Emilia" / "JA" / "JA-B000000.tar", ja)
    write_emilia_tar(root / "Emilia-YODAS" / "EN" / "EN-B000000.tar", en)
    return root


def test_emilia_rows_parse_through_datasets_webdataset(emilia_dir):
    cfg = SourceConfig(source="emilia", path=str(emilia_dir))
    rows = list(iter_emilia(cfg))
    assert [r.id for r in rows] == [
        "JA_B00000_S00000_W000000",
        "JA_B00000_S00000_W000001",
        "JA_B00000_S00000_W000002",
        "EN_B00000_S00000_W000000",
        "EN_B00000_S00000_W000001",
    ]
    first = rows[0]
    assert (first.lang, first.source, first.speaker) == ("ja", "emilia", "JA_B00000_S00000")
    assert first.text == "こんにちは、元気ですか。"
    assert first.duration == pytest.approx(1.5) and first.dnsmos == pytest.approx(3.3)
    wav = first.load_audio()  # 24 kHz mp3 bytes -> 16 kHz float32
    assert wav.dtype == np.float32 and abs(len(wav) - 24000) < 2000
    with pytest.raises(AudioError, match="cannot decode"):
        rows[1].load_audio()
    with pytest.raises(AudioError, match="no samples"):
        rows[4].load_audio()


def test_emilia_split_by_node_is_disjoint_and_complete(emilia_dir):
    cfg = SourceConfig(source="emilia", path=str(emilia_dir))
    parts = [[r.id for r in open_source(cfg, num_shards=2, shard_index=i)] for i in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(r.id for r in iter_emilia(cfg))
    only_ja = [
        r.lang for r in iter_emilia(SourceConfig(source="emilia", path=str(emilia_dir), languages=["ja"]))
    ]
    assert only_ja == ["ja"] * 3


def test_local_jsonl_csv_and_folder(tmp_path):
    write_audio(tmp_path / "clips" / "a.wav", np.zeros(16000 * 4, np.float32) + 0.1)
    write_audio(tmp_path / "clips" / "b.flac", np.zeros(16000 * 5, np.float32) + 0.1)
    (tmp_path / "clips" / "a.txt").write_text("おはようございます。\n", encoding="utf-8")
    records = [
        {"audio": "clips/a.wav", "text": "おはよう", "language": "ja", "speaker": "spk1"},
        {"audio": "clips/b.flac", "text": "Good morning", "language": "en", "tgt_text": "おはよう"},
    ]
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8"
    )
    rows = list(open_source(SourceConfig(source="local", path=str(tmp_path / "m.jsonl"))))
    assert [(r.id, r.lang, r.speaker, r.tgt_text) for r in rows] == [
        ("clips/a", "ja", "spk1", None),
        ("clips/b", "en", "", "おはよう"),
    ]
    assert len(rows[1].load_audio()) == 16000 * 5

    (tmp_path / "m.csv").write_text("audio,text,language\nclips/a.wav,hello,en\n", encoding="utf-8")
    (row,) = open_source(SourceConfig(source="local", path=str(tmp_path / "m.csv")))
    assert (row.id, row.text, row.lang) == ("clips/a", "hello", "en")

    folder = list(open_source(SourceConfig(source="local", path=str(tmp_path / "clips"), folder_lang="ja")))
    assert [(r.id, r.text) for r in folder] == [("a", "おはようございます。"), ("b", "")]
    # Row index modulo: two workers split the manifest.
    assert [
        r.id
        for r in open_source(
            SourceConfig(source="local", path=str(tmp_path / "m.jsonl")), num_shards=2, shard_index=1
        )
    ] == ["clips/b"]


def test_text_pairs(tmp_path):
    (tmp_path / "ja.txt").write_text("一つ\n二つ\n三つ\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    cfg = SourceConfig(source="text-pairs", path=str(tmp_path / "ja.txt"), tgt_path=str(tmp_path / "en.txt"))
    rows = list(open_source(cfg))
    assert [(r.id, r.lang, r.text, r.tgt_text, r.audio) for r in rows][1] == (
        "ja-00000001",
        "ja",
        "二つ",
        "two",
        None,
    )
    assert rows[2].load_audio() is None
    (tmp_path / "short.txt").write_text("one\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lines"):
        list(
            open_source(
                SourceConfig(
                    source="text-pairs", path=str(tmp_path / "ja.txt"), tgt_path=str(tmp_path / "short.txt")
                )
            )
        )


@pytest.mark.parametrize(
    "row, reason",
    [
        (dict(lang="de"), "language_unsupported"),
        (dict(lang="en"), "language_filtered"),
        (dict(text="  "), "text_empty"),
        (dict(text="あ"), "text_short"),
        (dict(text="あ" * 50), "text_long"),
        (dict(dnsmos=2.0), "dnsmos_low"),
        (dict(duration=1.0), "duration_short"),
        (dict(duration=40.0), "duration_long"),
        (dict(), None),
    ],
)
def test_filter_reasons(row, reason):
    cfg = SourceConfig(
        languages=["ja"], min_chars=2, max_chars=20, min_dnsmos=3.0, min_duration=2.0, max_duration=30.0
    )
    base = dict(id="x", lang="ja", text="こんにちは", source="t", duration=5.0, dnsmos=3.5)
    assert filter_reason(SourceRow(**{**base, **row}), cfg) == reason
