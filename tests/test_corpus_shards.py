"""The corpus card records each shard (rows, size, footer, SHA-256); a rebuild, `sts-encode` and
`sts-train` notice a shard that is missing or changed and say which (the builder rebuilds missing chunks)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pyarrow.parquet as pq
from test_corpus_folder import _args, _ids

from corpus_builder.cli import encode_main, main
from sts.codec.melkmeans import MelKMeansCodec
from sts.corpus import shard_paths, shard_problems
from sts.testing import synthetic_utterance
from train.cli import main as train_main
from train.config import CONFIG_DIR
from train.testing import write_tiny_encoded_shards


def _card(out) -> dict:
    return json.loads((out / "corpus.json").read_text())


def test_the_card_records_each_shard(tmp_path):
    out = tmp_path / "corpus"
    assert main(_args(out, tmp_path, 5, "--rows-per-shard", "2")) == 0
    card = _card(out)
    assert [e["path"] for e in card["shards"]] == [p.relative_to(out).as_posix() for p in shard_paths(out)]
    for entry in card["shards"]:
        path = out / entry["path"]
        assert entry["rows"] == pq.read_metadata(path).num_rows and entry["bytes"] == path.stat().st_size
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and len(entry["footer"]) == 16
    assert sum(e["rows"] for e in card["shards"]) == card["rows"] == 5
    assert shard_problems(out) == [] and shard_problems(out, checksums=True) == []


def test_a_rebuild_builds_a_missing_shard_again_and_refuses_a_changed_one(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = _args(out, tmp_path, 5, "--rows-per-shard", "2")
    assert main(args) == 0
    first, second = shard_paths(out)[:2]
    recorded = second.read_bytes()
    second.unlink()
    assert shard_problems(out) == [f"{second}: missing (corpus.json records it with 2 rows)"]
    capsys.readouterr()
    assert main(args) == 0
    assert f"{second}: missing; its chunk is built again" in capsys.readouterr().err.replace("\n", "")
    assert second.read_bytes() == recorded and _ids(out) == {f"ja-{i:08d}": 1 for i in range(5)}
    assert shard_problems(out) == [] and _card(out)["rows"] == 5

    shutil.copy(first, second)  # another file under the recorded name
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sts-build-corpus: error: ") and "footer" in err
    assert "changed since this build wrote them" in err and str(second) in err and str(first) not in err, err


def _codec(tmp_path):
    path = tmp_path / "codec"
    MelKMeansCodec.fit([synthetic_utterance(1.0, 150.0, seed=0)], codebook_size=16, seed=0).save(path)
    return str(path)


def test_sts_encode_checks_the_shards_and_records_what_it_rewrites(tmp_path, capsys):
    out = tmp_path / "corpus"
    args = _args(out, tmp_path, 5, "--rows-per-shard", "2")
    assert main(args) == 0
    codec = _codec(tmp_path)
    third = shard_paths(out)[2]
    third.unlink()
    assert encode_main([str(out), "--codec", codec]) == 2
    err = capsys.readouterr().err
    assert f"{third}: missing (corpus.json records it with 1 rows)" in err and "sts-build-corpus" in err, err
    assert main(args) == 0  # rebuilt

    assert encode_main([str(out), "--codec", codec]) == 0
    card = _card(out)
    for entry in card["shards"]:  # the encoded files, as the card and the builder's stats now record them
        path = out / entry["path"]
        assert "src_codes" in pq.read_schema(path).names and "next" not in entry
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        stats = json.loads((out / ".progress" / f"{path.stem}.json").read_text())
        assert stats["file"] == {k: v for k, v in entry.items() if k != "path"}
    assert shard_problems(out) == [] and main(args) == 0  # the rebuild accepts the encoded shards

    # a byte changed inside the audio data: same size and footer, another checksum
    first = shard_paths(out)[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 3] ^= 0xFF
    first.write_bytes(bytes(data))
    assert shard_problems(out) == []
    assert shard_problems(out, checksums=True) == [f"{first}: changed since corpus.json recorded it (sha256 "
                                                   f"{card['shards'][0]['sha256']}; now sha256 "
                                                   f"{hashlib.sha256(data).hexdigest()})"]  # fmt: skip
    capsys.readouterr()
    assert encode_main([str(out), "--codec", codec, "--reencode"]) == 2  # it reads every byte anyway
    assert f"{first}: its content is not what corpus.json records (sha256 differs)" in capsys.readouterr().err


def test_a_rewrite_killed_around_its_rename_is_still_whole(tmp_path):
    """sts-encode records the new file as `next` before the rename and as the record after it."""
    out = tmp_path / "corpus"
    assert main(_args(out, tmp_path, 3, "--rows-per-shard", "2")) == 0
    before = _card(out)
    assert encode_main([str(out), "--codec", _codec(tmp_path)]) == 0
    after = _card(out)
    killed = dict(after)  # killed after the rename of shard 0: the card still holds the old record
    killed["shards"] = [{**before["shards"][0], "next": {k: v for k, v in after["shards"][0].items() if k != "path"}},
                        *after["shards"][1:]]  # fmt: skip
    (out / "corpus.json").write_text(json.dumps(killed))
    assert shard_problems(out) == []
    assert encode_main([str(out), "--codec", _codec(tmp_path)]) == 0  # skips it and makes `next` the record
    assert _card(out)["shards"] == after["shards"]


def test_sts_train_refuses_a_missing_or_changed_shard(extended_lm_dir, tmp_path, capsys):
    shards = write_tiny_encoded_shards(tmp_path / "corpus", num_codes=1024)
    args = ["cpt", "--config", str(CONFIG_DIR / "tiny_cpt.yaml"), "--model", str(extended_lm_dir), "--shards",
            str(tmp_path / "corpus"), "--out-dir", str(tmp_path / "run")]  # fmt: skip
    kept = shards[1].read_bytes()
    shards[1].unlink()
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert f"{shards[1]}: missing (corpus.json records it with 12 rows)" in err and "sts-encode" in err, err
    shards[1].write_bytes(shards[0].read_bytes())
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert f"{shards[1]}: changed since corpus.json recorded it" in err and str(shards[0]) not in err, err
    shards[1].write_bytes(kept)
    assert train_main(args) == 0
