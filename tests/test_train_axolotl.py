"""`--export-axolotl`: the pre-tokenized dataset schema (input_ids, attention_mask, labels) and the YAML."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from sts.model_files import DECODING_FILES
from sts.tasks import IGNORE_INDEX, load_task_formats
from sts.vocab import SpeechVocab
from train.axolotl import AXOLOTL_COLUMNS, store_rows
from train.cli import main
from train.testing import tiny_cli_args
from train.token_cache import DocWriter


def export(stage, model, shards, tmp_path, *extra):
    out = tmp_path / "axolotl"
    assert (
        main(tiny_cli_args(stage, model, shards, tmp_path / "run", "--export-axolotl", str(out), *extra)) == 0
    )
    return out


def test_sft_export_schema_and_yaml(extended_lm_dir, shards, tmp_path):
    out = export("sft", extended_lm_dir, shards, tmp_path, "--lora.r", "8")
    assert not list((tmp_path / "run").glob("checkpoint-*")), "export does not train"
    text = (out / "axolotl.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert cfg["base_model"] == str(extended_lm_dir.resolve())
    assert cfg["sequence_len"] == 256 and cfg["sample_packing"] is True and cfg["lr_scheduler"] == "cosine"
    assert cfg["attn_implementation"] == "sdpa"  # a backend with which axolotl keeps packed samples apart
    assert cfg["adapter"] == "lora" and cfg["lora_r"] == 8
    # axolotl's LoRA cannot train the fresh extension's speech rows: the file says so, and what to do
    assert "# WARNING: LoRA in axolotl keeps the embedding and output layer frozen" in text
    assert "export with --lora.r 0" in text
    # CPU here, precision auto: no mixed precision, stated (axolotl's `bf16: auto` would turn fp16 on).
    assert (cfg["bf16"], cfg["fp16"]) == (False, False) and "# dtype: fp32" in text
    # Every path absolute, so `axolotl train` works from any folder.
    for key in ("base_model", "dataset_prepared_path", "output_dir"):
        assert Path(cfg[key]).is_absolute(), key
    assert cfg["output_dir"] == str((tmp_path / "run" / "axolotl").resolve())
    for key in ("datasets", "test_datasets"):
        (entry,) = cfg[key]
        assert entry["ds_type"] == "parquet" and "type" not in entry  # no `type:`: pre-tokenized rows
        assert Path(entry["path"]).is_absolute() and Path(entry["path"]).is_file()
    assert SpeechVocab.load(out) == SpeechVocab.load(extended_lm_dir)  # for adopt-axolotl
    assert load_task_formats(out)["s2st"] == "direct"  # tiny_sft.yaml's format, as a checkpoint records it
    assert set(json.loads((out / "sts_decoding.json").read_text())["duration_ratio"]) == {"ja-en", "en-ja"}

    vocab = SpeechVocab.load(extended_lm_dir)
    for split in ("train", "eval"):
        table = pq.read_table(out / "data" / f"{split}.parquet")
        assert tuple(table.column_names) == AXOLOTL_COLUMNS
        assert str(table.schema.field("input_ids").type) == "list<element: int32>"
        assert str(table.schema.field("labels").type) == "list<element: int64>"
        rows = table.to_pylist()
        assert rows
        for row in rows:
            ids, labels, mask = map(np.array, (row["input_ids"], row["labels"], row["attention_mask"]))
            assert len(ids) == len(labels) == len(mask) <= 256 and (mask == 1).all()
            kept = labels != IGNORE_INDEX
            assert labels[0] == IGNORE_INDEX and 0 < kept.sum() < len(ids)  # assistant-only loss
            assert (labels[kept] == ids[kept]).all()  # aligned, not shifted: the model shifts
            assert ids.max() < vocab.vocab_size
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "train.parquet"), split="train")
    assert ds.column_names == list(AXOLOTL_COLUMNS)


def test_cpt_export_cuts_long_documents(extended_lm_dir, shards, tmp_path):
    out = export(
        "cpt", extended_lm_dir, shards, tmp_path, "--data.seq-len", "16", "--data.eval-fraction", "0"
    )
    cfg = yaml.safe_load((out / "axolotl.yaml").read_text())
    assert "test_datasets" not in cfg and "eval_steps" not in cfg
    rows = pq.read_table(out / "data" / "train.parquet").to_pylist()
    assert max(len(r["input_ids"]) for r in rows) == 16
    assert all(r["labels"][1:] == r["input_ids"][1:] for r in rows)  # cpt learns every token


def test_store_rows_pieces():
    writer = DocWriter(with_labels=False)
    writer.add("speech_ja", np.arange(1, 11))
    rows = list(store_rows(writer.build({}), seq_len=4))
    assert [r["input_ids"] for r in rows] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert [r["labels"][0] for r in rows] == [IGNORE_INDEX] * 3
    assert list(store_rows(writer.build({}), seq_len=4, order=[0, 0]))[3]["input_ids"] == [1, 2, 3, 4]


def test_export_dtype_and_packing_follow_the_config(extended_lm_dir, shards, tmp_path):
    out = export("sft", extended_lm_dir, shards, tmp_path, "--runtime.precision", "bf16",
                 "--runtime.attn-implementation", "paged_attention")  # fmt: skip
    text = (out / "axolotl.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert (cfg["bf16"], cfg["fp16"]) == (True, False) and "# dtype: bf16" in text
    # An attention backend that would let packed samples see each other: packing off, and why.
    assert cfg["sample_packing"] is False and cfg["attn_implementation"] == "paged_attention"
    assert "# sample_packing is off" in text


def test_adopt_axolotl_output_writes_the_vocabulary(extended_lm_dir, tiny_lm_dir, shards, tmp_path, capsys):
    import shutil

    from infer.translate import Translator
    from sts.testing import save_tiny_xcodec2

    out = export("sft", extended_lm_dir, shards, tmp_path, "--sft.s2st-format", "text-first")
    # What axolotl leaves: the model and tokenizer, none of the files that say how to decode it.
    output = tmp_path / "axolotl-output"
    shutil.copytree(extended_lm_dir, output, ignore=shutil.ignore_patterns(*DECODING_FILES, "*.yaml"))
    assert main(["adopt-axolotl", str(output), "--from", str(out)]) == 0
    assert SpeechVocab.load(output) == SpeechVocab.load(extended_lm_dir)
    assert "WARNING" not in (out / "axolotl.yaml").read_text()  # full training: the rows train
    for name in ("sts_tasks.json", "sts_decoding.json"):  # a text-first model stays text-first
        assert json.loads((output / name).read_text()) == json.loads((out / name).read_text())
    assert yaml.safe_load((output / "axolotl_config.yaml").read_text())["base_model"]
    codec = save_tiny_xcodec2(tmp_path / "codec")
    translator = Translator.from_checkpoint(output, codec=str(codec))
    assert translator.vocab.num_speech_tokens == 1024 and translator.formatter.s2st_format == "text-first"

    capsys.readouterr()
    assert main(["adopt-axolotl", str(tiny_lm_dir), "--from", str(out)]) == 2  # not extended: refused
    err = capsys.readouterr().err
    assert err.startswith("sts-train adopt-axolotl: error: ") and "disagrees with" in err
    assert not (tiny_lm_dir / "sts_vocab.json").exists()
    assert main(["adopt-axolotl", str(tmp_path / "missing"), "--from", str(out)]) == 2
    assert "no config.json" in capsys.readouterr().err
