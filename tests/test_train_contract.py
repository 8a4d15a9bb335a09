"""Where training starts: the corpus's codec against sts_vocab.json, out-of-range codes, counted skips,
and the Arrow-buffer row path giving the reference documents."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sts.corpus import CARD_NAME, encoded_features, shard_paths
from sts.tasks import Example, TaskFormatter
from sts.vocab import CodecMismatchError
from train.cli import main
from train.config import CONFIG_DIR
from train.contract import CorpusContractError
from train.data import build_doc_stores, speech_doc
from train.logger import read_metrics
from train.rows import InvalidCodesError
from train.testing import shard_entries, tiny_config, write_tiny_encoded_shards


def rewrite_rows(path, change) -> None:
    """Rewrite a shard after `change(rows)` edits its rows (a list of dicts) in place, and its record
    in the card (as sts-encode does when it rewrites a shard)."""
    rows = pq.read_table(path).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=encoded_features().arrow_schema), path)
    folder = path.parent.parent
    card = json.loads((folder / CARD_NAME).read_text())
    card["shards"] = shard_entries(folder, shard_paths(folder))
    (folder / CARD_NAME).write_text(json.dumps(card))


def set_card(folder, **encode) -> None:
    card = json.loads((folder / CARD_NAME).read_text())
    card["encode"].update(encode)
    (folder / CARD_NAME).write_text(json.dumps(card))


def stores(stage, lm_dir, tokenizer, vocab, shards, out, **overrides):
    return build_doc_stores(tiny_config(stage, lm_dir, shards, out, **overrides), tokenizer, vocab)


@pytest.mark.parametrize(
    ("encode", "shown"),
    [
        ({"codebook_size": 512}, ["512 codes", "1024 codes"]),
        ({"frame_rate": 75.0}, ["75.0 per second", "50.0 per second"]),
    ],
)
def test_a_codec_mismatch_is_refused_naming_both_values_and_files(
    extended_lm_dir, extended_tokenizer, speech_vocab, tmp_path, encode, shown
):
    shards = write_tiny_encoded_shards(tmp_path / "corpus", num_codes=1024)
    set_card(tmp_path / "corpus", **encode)
    with pytest.raises(CodecMismatchError) as err:
        stores("sft", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "run")
    message = str(err.value)
    assert (
        str(tmp_path / "corpus" / CARD_NAME) in message and str(extended_lm_dir / "sts_vocab.json") in message
    )
    assert all(s in message for s in shown) and "--data.allow-codec-name-mismatch" not in message
    assert not (tmp_path / "run" / "token_cache").exists()  # refused before tokenizing
    # the override for names does not cover a real difference
    with pytest.raises(CodecMismatchError):
        stores("sft", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "run",
               data__allow_codec_name_mismatch=True)  # fmt: skip


def test_a_name_only_mismatch_needs_the_explicit_flag(
    extended_lm_dir, extended_tokenizer, speech_vocab, tmp_path
):
    shards = write_tiny_encoded_shards(tmp_path / "corpus", codec="/models/xcodec2-hf")
    with pytest.raises(
        CodecMismatchError, match="only the names differ.*--data.allow-codec-name-mismatch"
    ) as err:
        stores("cpt", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "a")
    assert "'/models/xcodec2-hf'" in str(err.value) and "'HKUSTAudio/xcodec2-hf'" in str(err.value)
    train, _ = stores("cpt", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "b",
                      data__allow_codec_name_mismatch=True)  # fmt: skip
    assert train.num_docs > 0


def test_unrecorded_and_unencoded_corpora_are_refused(
    extended_lm_dir, extended_tokenizer, speech_vocab, tmp_path
):
    shards = write_tiny_encoded_shards(tmp_path / "bare", codec=None)  # codes, but no corpus.json
    with pytest.raises(
        CorpusContractError, match=r"corpus.json: no codec record.*sts-encode .*--data.allow-unrecorded"
    ):
        stores("cpt", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "a")
    train, _ = stores("cpt", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "b",
                      data__allow_unrecorded_codec=True)  # fmt: skip
    assert train.num_docs > 0

    plain = write_tiny_encoded_shards(tmp_path / "plain")
    table = pq.read_table(plain[0]).drop_columns(["src_codes", "tgt_codes"])
    pq.write_table(table, plain[0])
    with pytest.raises(
        CorpusContractError,
        match=r"part-00000-of-00002.parquet: no src_codes/tgt_codes.*not encoded.*sts-encode .*plain --codec",
    ):
        stores("sft", extended_lm_dir, extended_tokenizer, speech_vocab, plain, tmp_path / "c",
               data__allow_unrecorded_codec=True)  # fmt: skip


def test_the_cli_says_what_is_wrong_in_one_line(extended_lm_dir, tmp_path, capsys):
    write_tiny_encoded_shards(tmp_path / "corpus", num_codes=512)
    args = ["cpt", "--config", str(CONFIG_DIR / "tiny_cpt.yaml"), "--model", str(extended_lm_dir),
            "--data.shards", str(tmp_path / "corpus"), "--out-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sts-train cpt: error: codec mismatch:") and "\n" not in err


def _bad_code(rows) -> None:
    rows[3]["tgt_codes"][5] = 1024  # one past the tiny speech block
    rows[7]["src_codes"][0] = -2


def test_an_out_of_range_code_stops_with_shard_row_and_value(
    extended_lm_dir, extended_tokenizer, speech_vocab, tmp_path
):
    shards = write_tiny_encoded_shards(tmp_path / "corpus")
    rewrite_rows(shards[1], _bad_code)
    for stage in ("cpt", "sft"):
        with pytest.raises(InvalidCodesError) as err:
            stores(stage, extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / stage)
        message = str(err.value)
        assert f"{shards[1]}: row 'tiny-1-7': src_codes[0] = -2 is outside [0, 1024)" in message
        assert "--data.skip-invalid-codes" in message


def test_skip_invalid_codes_counts_them_in_the_header_the_log_and_the_metrics(
    extended_lm_dir, extended_tokenizer, speech_vocab, tmp_path, caplog
):
    shards = write_tiny_encoded_shards(tmp_path / "corpus")
    rewrite_rows(shards[1], _bad_code)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        train, held_out = stores("sft", extended_lm_dir, extended_tokenizer, speech_vocab, shards,
                                 tmp_path / "sft", data__skip_invalid_codes=True)  # fmt: skip
    counts = [s.header["counts"] for s in (train, held_out)]
    assert sum(c["skipped_invalid_codes"] for c in counts) == 2  # rows
    assert train.num_docs + held_out.num_docs == 240 - 2 * 10  # 10 samples per row
    assert "SKIPPED 2 corpus row(s)" in caplog.text and "tiny-1-3" in caplog.text

    out = tmp_path / "run"
    args = ["cpt", "--config", str(CONFIG_DIR / "tiny_cpt.yaml"), "--model", str(extended_lm_dir),
            "--data.shards", str(tmp_path / "corpus"), "--out-dir", str(out), "--data.skip-invalid-codes", "--optim.max-steps", "1"]  # fmt: skip
    assert main(args) == 0
    data = read_metrics(out, kind="data")
    assert data[0]["skipped_invalid_codes"] == 2 and data[0]["kept"] == 48 - 4


def test_other_skips_are_counted_by_reason(extended_lm_dir, extended_tokenizer, speech_vocab, tmp_path):
    shards = write_tiny_encoded_shards(tmp_path / "corpus", rows_per_shard=6, num_shards=1)

    def spoil(rows):
        rows[0]["src_text"] = "a<|im_end|>b"  # used by 5 samples (t2tt both ways, s2tt back, asr, tts)
        rows[1]["tgt_codes"] = None  # 5 samples need them (s2st both ways, s2tt from tgt, asr, tts)
        rows[2]["tgt_lang"] = rows[2]["src_lang"]  # no translation pair: the row is left out

    rewrite_rows(shards[0], spoil)
    sft = stores("sft", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "sft",
                 data__eval_fraction=0.0)  # fmt: skip
    counts = sft[0].header["counts"]
    assert counts["skipped_special_text"] == 5 and counts["skipped_missing_side"] == 5
    assert counts["skipped_bad_languages"] == 1 and counts["skipped_invalid_codes"] == 0
    assert sft[0].num_docs == 6 * 10 - 5 - 5 - 10
    cpt = stores("cpt", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "cpt",
                 data__eval_fraction=0.0)  # fmt: skip
    assert cpt[0].header["counts"]["skipped_missing_side"] == 1 and cpt[0].num_docs == 11


def test_arrow_row_path_gives_the_reference_documents(
    extended_lm_dir, extended_tokenizer, speech_vocab, tmp_path
):
    """cpt documents are `speech_doc` + eos of every present side, row by row; sft samples equal the
    formatter's from plain lists (the codes now come as int32 views into the Arrow buffers)."""
    shards = write_tiny_encoded_shards(tmp_path / "corpus", rows_per_shard=5)

    def gaps(rows):
        rows[1]["src_codes"] = []
        rows[4]["tgt_codes"] = None

    rewrite_rows(shards[0], gaps)
    rows = [r for s in shards for r in pq.read_table(s).to_pylist()]
    cpt, _ = stores("cpt", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "cpt",
                    data__eval_fraction=0.0)  # fmt: skip
    expected = [
        (f"speech_{row[f'{side}_lang']}", np.append(speech_doc(speech_vocab, row[f"{side}_codes"]), extended_tokenizer.eos_token_id))
        for row in rows
        for side in ("src", "tgt")
        if row[f"{side}_codes"]
    ]  # fmt: skip
    assert cpt.num_docs == len(expected) == 2 * 10 - 2
    for d, (group, ids) in enumerate(expected):
        np.testing.assert_array_equal(cpt.doc(d)[0], ids)
        assert cpt.group_names[cpt.groups[d]] == group

    sft, _ = stores("sft", extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path / "sft",
                    data__eval_fraction=0.0)  # fmt: skip
    reference = TaskFormatter(extended_tokenizer, speech_vocab, cache_templates=False)
    row = rows[0]  # ja -> en
    sample = reference.build(
        Example(
            "s2st", "ja", "en", src_codes=np.array(row["src_codes"]), tgt_codes=np.array(row["tgt_codes"])
        )
    )
    group = sft.group_names.index("s2st:ja-en")
    ids, labels = sft.doc(int(np.flatnonzero(sft.groups == group)[0]))
    np.testing.assert_array_equal(ids, sample["input_ids"])
    np.testing.assert_array_equal(labels, sample["labels"])
