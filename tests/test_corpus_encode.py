"""`sts-encode`: code columns added to corpus shards with the tiny XCodec2, resumably."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus_builder.cli import encode_main as main
from corpus_builder.cli import main as build_main
from corpus_builder.encode import EncodeConfig, encode_corpus, recorded_codec
from corpus_builder.testing import tone_seconds
from sts.audio import load_audio
from sts.codec.melkmeans import MelKMeansCodec
from sts.corpus import encoded_features, shard_paths
from train.testing import shard_entries


@pytest.fixture(scope="module")
def tiny_codec_dir(tmp_path_factory):
    from sts.testing import save_tiny_xcodec2

    return save_tiny_xcodec2(tmp_path_factory.mktemp("models") / "tiny-xcodec2")


def _corpus(tmp_path):
    (tmp_path / "ja.txt").write_text("あ\nいいい\nううううう\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("a\nbb\ncccc\n", encoding="utf-8")
    out = tmp_path / "corpus"
    args = ["--out-dir", str(out), "--source", "text-pairs", "--path", str(tmp_path / "ja.txt"),
            "--tgt-path", str(tmp_path / "en.txt"), "--mt", "reference", "--tts", "python:corpus_builder.testing:ToneTTS",
            "--checks", "none", "--rows-per-shard", "2"]  # fmt: skip
    assert build_main(args) == 0
    return out


def test_encode_adds_codes_and_resumes(tmp_path, tiny_codec_dir, capsys):
    import datasets

    from sts.codec import load_codec

    out = _corpus(tmp_path)
    assert main([str(out), "--codec", str(tiny_codec_dir)]) == 0
    codec = load_codec(str(tiny_codec_dir))
    rows = [r for p in sorted(shard_paths(out)) for r in pq.read_table(p).to_pylist()]
    assert [r["id"] for r in rows] == ["ja-00000000", "ja-00000001", "ja-00000002"]
    for r in rows:
        tgt = load_audio(r["tgt_audio"]["bytes"])
        assert (
            len(r["tgt_codes"])
            == codec.num_codes(len(tgt))
            == int(round(tone_seconds(r["tgt_text"]) * 16000)) // 320 + 1
        )
        assert len(r["src_codes"]) == codec.num_codes(len(load_audio(r["src_audio"]["bytes"])))
        np.testing.assert_array_equal(r["tgt_codes"], codec.encode([tgt])[0])
        assert min(r["src_codes"]) >= 0 and max(r["src_codes"]) < codec.codebook_size
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert ds.features == encoded_features()
    folder = datasets.load_dataset(str(out), split="train")  # the README card now lists the code columns
    assert folder.features == encoded_features() and folder["id"] == ds["id"]
    card = json.loads((out / "corpus.json").read_text())
    # a local codec is recorded relative to the card, and read back absolute (sts.paths)
    assert not card["encode"]["codec"].startswith("/") and card["encode"]["frame_rate"] == 50.0
    assert recorded_codec(out) == str(tiny_codec_dir.resolve())
    assert card["encode"]["max_pad_ratio"] == 0.0  # exact batching by default, recorded
    assert card["rows"] == 3  # the build's numbers are kept

    # Rerun: everything is done; the codec is not even loaded.
    assert [skipped for _, _, skipped in encode_corpus(EncodeConfig(out, codec=str(tiny_codec_dir)))] == [
        True,
        True,
    ]
    # Other batching on encoded shards is refused (the card would misdescribe the finished shards).
    assert main([str(out), "--codec", str(tiny_codec_dir), "--max-pad-ratio", "0.1"]) == 2  # one line
    assert "already encoded with max_pad_ratio 0.0, not 0.1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="already encoded with max_pad_ratio 0.0, not 0.1"):
        list(encode_corpus(EncodeConfig(out, codec=str(tiny_codec_dir), max_pad_ratio=0.1)))
    # Another codec on encoded shards is refused unless asked to replace the codes.
    with pytest.raises(ValueError, match="already encoded with .* pass --reencode"):
        list(encode_corpus(EncodeConfig(out, codec="/no/such/codec")))
    mel = MelKMeansCodec.fit([load_audio(r["src_audio"]["bytes"]) for r in rows], codebook_size=8)
    mel.save(tmp_path / "mel")
    assert main([str(out), "--codec", str(tmp_path / "mel"), "--reencode"]) == 0
    again = [r for p in sorted(shard_paths(out)) for r in pq.read_table(p).to_pylist()]
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    assert max(max(r["src_codes"]) for r in again) < 8
    assert json.loads((out / "corpus.json").read_text())["encode"]["codebook_size"] == 8
    assert json.loads((out / "corpus.json").read_text())["encode"]["max_pad_ratio"] is None  # clip by clip
    # A rebuild after encoding skips its chunks and keeps the encode record.
    assert build_main(["--out-dir", str(out), "--source", "text-pairs", "--path", str(tmp_path / "ja.txt"),
                       "--tgt-path", str(tmp_path / "en.txt"), "--mt", "reference", "--tts", "python:x:Y",
                       "--checks", "none", "--rows-per-shard", "2", "--allow-changed", "tts"]) == 0  # fmt: skip
    assert "encode" in json.loads((out / "corpus.json").read_text())


def test_a_bad_clip_is_skipped_recorded_and_passed_on_rerun(tmp_path, tiny_codec_dir, capsys):
    """An undecodable clip mid-shard: its side's codes stay null, the other clips are encoded, corpus.json
    lists it, and the rerun goes past it (the shard is done). --fail-fast stops on it instead."""
    out = _corpus(tmp_path)
    first = sorted(shard_paths(out))[0]
    table = pq.read_table(first)
    rows = table.to_pylist()
    rows[1]["tgt_audio"] = {"bytes": b"RIFF not audio", "path": "broken.wav"}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), first)
    card = json.loads((out / "corpus.json").read_text())  # as if it had been built so
    card["shards"] = shard_entries(out, shard_paths(out))
    (out / "corpus.json").write_text(json.dumps(card))
    failing = [str(out), "--codec", str(tiny_codec_dir), "--fail-fast"]
    assert main(failing) == 2
    assert (
        f"{first.name}: row ja-00000001, tgt_audio: broken.wav: cannot decode audio"
        in capsys.readouterr().err
    )

    assert main([str(out), "--codec", str(tiny_codec_dir)]) == 0
    assert "1 bad clip(s) left with null codes" in capsys.readouterr().err
    encoded = [r for p in sorted(shard_paths(out)) for r in pq.read_table(p).to_pylist()]
    assert [r["tgt_codes"] is None for r in encoded] == [False, True, False]
    assert all(r["src_codes"] for r in encoded) and encoded[2]["tgt_codes"]
    record = json.loads((out / "corpus.json").read_text())["encode"]
    assert record["skipped_clips"] == 1 and recorded_codec(out) == str(tiny_codec_dir.resolve())
    [bad] = record["bad_clips"]
    assert (bad["shard"], bad["id"], bad["side"]) == (first.name, "ja-00000001", "tgt")
    assert "cannot decode audio" in bad["reason"]

    # the rerun does not stop at the same clip: every shard is done, the record stays
    assert [done for _, _, done in encode_corpus(EncodeConfig(out, codec=str(tiny_codec_dir)))] == [
        True,
        True,
    ]
    assert main([str(out), "--codec", str(tiny_codec_dir)]) == 0
    assert json.loads((out / "corpus.json").read_text())["encode"]["bad_clips"] == [bad]
