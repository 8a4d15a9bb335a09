"""Training data: cpt/sft documents from encoded shards, the self-describing token cache, mixture and packing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sts.tasks import IGNORE_INDEX
from train import data as train_data
from train.data import build_doc_stores, speech_doc
from train.packing import PackedStream
from train.testing import tiny_config
from train.token_cache import CACHE_FORMAT, DocStore, DocWriter
from train.trainer import mixture_weights


@pytest.fixture(scope="module")
def sft_stores(extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path_factory):
    cfg = tiny_config("sft", extended_lm_dir, shards, tmp_path_factory.mktemp("sft"))
    return build_doc_stores(cfg, extended_tokenizer, speech_vocab)


@pytest.mark.slow
def test_worker_processes_tokenize_the_same_documents(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path
):
    one = tiny_config("sft", extended_lm_dir, shards, tmp_path / "one")
    two = tiny_config("sft", extended_lm_dir, shards, tmp_path / "two", data__tokenize_workers=2)
    (a, a_eval), (b, b_eval) = (build_doc_stores(c, extended_tokenizer, speech_vocab) for c in (one, two))
    for x, y in ((a, b), (a_eval, b_eval)):
        assert x.group_names == y.group_names and x.header["counts"] == y.header["counts"]
        for name in ("tokens", "labels", "offsets", "groups"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), name


def test_doc_store_roundtrip_is_self_describing(tmp_path):
    writer = DocWriter(with_labels=True)
    writer.add("a", np.array([1, 2, 3]), np.array([-100, 2, 3]))
    writer.add("b", np.array([4, 5]))
    store = writer.build({"vocab_size": 1280, "speech_token_offset": 256, "codec": "x", "frame_rate": 50.0})
    path = store.save(tmp_path / "cache" / "s.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["s.safetensors"]  # no temporary file left

    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        header = json.loads(f.metadata()["sts"])
    assert header["format"] == CACHE_FORMAT and header["dtype"] == "int32"
    assert (
        header["vocab_size"] == 1280 and header["speech_token_offset"] == 256 and header["frame_rate"] == 50.0
    )
    assert header["groups"] == ["a", "b"] and header["num_docs"] == 2 and header["num_tokens"] == 5

    loaded = DocStore.load(path)
    assert isinstance(loaded.tokens, np.memmap)  # opened, not read
    assert loaded.num_docs == 2 and loaded.lengths.tolist() == [3, 2]
    ids, labels = loaded.doc(0)
    assert ids.tolist() == [1, 2, 3] and labels.tolist() == [-100, 2, 3]
    assert loaded.doc(1)[1].tolist() == [4, 5]
    assert loaded.group_names[loaded.groups[1]] == "b"


def test_spilled_writer_matches_in_memory_and_is_valid_safetensors(tmp_path):
    from safetensors.numpy import load_file

    rng = np.random.default_rng(0)
    docs = [(f"g{d % 3}", rng.integers(0, 1000, int(rng.integers(1, 50)))) for d in range(200)]
    memory, spilled = DocWriter(with_labels=True), DocWriter(with_labels=True, spill_dir=tmp_path / "parts")
    for group, ids in docs:
        for writer in (memory, spilled):
            writer.add(group, ids, np.where(ids % 2 == 0, ids, IGNORE_INDEX))
    a, b = memory.build({"x": 1}), spilled.build({"x": 1})
    assert isinstance(b.tokens, np.memmap)
    for name in ("tokens", "labels", "offsets", "groups"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    b.save(tmp_path / "b.safetensors")
    official = load_file(tmp_path / "b.safetensors")  # the safetensors library reads what we stream out
    assert np.array_equal(official["tokens"], a.tokens) and official["offsets"].dtype == np.int64
    assert np.array_equal(DocStore.load(tmp_path / "b.safetensors").labels, a.labels)


def test_load_rejects_foreign_safetensors(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, np.int32)}, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="not an sts token cache"):
        DocStore.load(tmp_path / "x.safetensors")


def test_sft_stores_cover_every_task_and_direction(sft_stores, speech_vocab):
    train_store, eval_store = sft_stores
    expected = {f"{t}:{d}" for t in ("s2st", "s2tt", "t2tt") for d in ("ja-en", "en-ja")}
    expected |= {f"{t}:{lang}" for t in ("asr", "tts") for lang in ("ja", "en")}
    assert set(train_store.group_names) == expected
    assert train_store.header["speech_token_offset"] == speech_vocab.speech_token_offset
    assert train_store.header["vocab_size"] == speech_vocab.vocab_size
    assert train_store.header["split"] == "train" and eval_store.header["split"] == "eval"
    # 24 rows x 5 tasks x 2 directions, split between train and eval by row id
    assert train_store.num_docs + eval_store.num_docs == 240
    assert 0 < eval_store.num_docs < train_store.num_docs
    # assistant-only loss: the prompt is masked, the answer is not
    for d in range(0, train_store.num_docs, 17):
        ids, labels = train_store.doc(d)
        kept = labels != IGNORE_INDEX
        assert 0 < kept.sum() < len(ids)
        assert (labels[kept] == ids[kept]).all()
        assert not kept[: np.argmax(kept)].any()
    group = train_store.group_names.index("tts:ja")
    d = int(np.flatnonzero(train_store.groups == group)[0])
    ids, labels = train_store.doc(d)
    assert speech_vocab.is_speech_id(ids[labels != IGNORE_INDEX]).any()  # tts answers in speech tokens


def test_sft_full_loss_and_overlong_counts(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path
):
    full = tiny_config("sft", extended_lm_dir, shards, tmp_path / "full", sft__loss_mask="full")
    store, _ = build_doc_stores(full, extended_tokenizer, speech_vocab)
    ids, labels = store.doc(0)
    assert (labels[1:] == ids[1:]).all() and labels[0] == IGNORE_INDEX

    lengths = store.lengths
    cut = int(np.median(lengths))
    dropped, _ = build_doc_stores(
        tiny_config("sft", extended_lm_dir, shards, tmp_path / "drop", data__seq_len=cut),
        extended_tokenizer,
        speech_vocab,
    )
    trimmed, _ = build_doc_stores(
        tiny_config(
            "sft", extended_lm_dir, shards, tmp_path / "trim", data__seq_len=cut, data__overlong="trim"
        ),
        extended_tokenizer,
        speech_vocab,
    )
    n_long = int((lengths > cut).sum())
    assert dropped.header["counts"]["dropped_overlong"] == n_long > 0
    assert dropped.num_docs == store.num_docs - n_long
    assert trimmed.header["counts"]["trimmed_overlong"] == n_long
    assert trimmed.lengths.max() == cut


def test_cpt_documents_speech_and_text(extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("hello world\n\nthe station is there\n\n\nmore text here\n")
    cfg = tiny_config(
        "cpt", extended_lm_dir, shards, tmp_path / "cpt", cpt__text_files=[str(text)], data__eval_fraction=0.0
    )
    store, eval_store = build_doc_stores(cfg, extended_tokenizer, speech_vocab)
    assert eval_store.num_docs == 0 and store.labels is None
    assert set(store.group_names) == {"speech_ja", "speech_en", "text"}
    counts = np.bincount(store.groups, minlength=3)
    assert counts[store.group_names.index("text")] == 3
    assert counts.sum() == 3 + 48  # both sides of 24 rows

    import pyarrow.parquet as pq

    row = pq.read_table(shards[0]).to_pylist()[0]
    ids, _ = store.doc(0)
    expected = np.append(speech_doc(speech_vocab, row["src_codes"]), extended_tokenizer.eos_token_id)
    assert ids.tolist() == expected.tolist()
    assert ids[0] == speech_vocab.speech_start_id and ids[-2] == speech_vocab.speech_end_id
    assert speech_vocab.ids_to_codes(ids[1:-2]).tolist() == row["src_codes"]


def test_token_cache_is_reused(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path, monkeypatch
):
    cfg = tiny_config("cpt", extended_lm_dir, shards, tmp_path / "run")
    first, _ = build_doc_stores(cfg, extended_tokenizer, speech_vocab)
    files = sorted(p.name for p in cfg.token_cache_dir.iterdir())
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)

    def fail(*args):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(train_data, "_tokenized_rows", fail)
    second, _ = build_doc_stores(cfg, extended_tokenizer, speech_vocab)
    assert np.array_equal(first.tokens, second.tokens)
    # a changed input (another eval split) is a different cache
    monkeypatch.undo()
    cfg.data.eval_fraction = 0.5
    build_doc_stores(cfg, extended_tokenizer, speech_vocab)
    assert len(list(cfg.token_cache_dir.iterdir())) == 4


def _toy_store(with_labels: bool) -> DocStore:
    writer = DocWriter(with_labels=with_labels)
    rng = np.random.default_rng(0)
    for d in range(40):
        n = int(rng.integers(3, 12))
        ids = np.arange(n) + 100 * d + 1  # document d's ids are 100*d + 1 ...
        labels = ids.copy()
        if with_labels:
            labels[: n // 2] = IGNORE_INDEX
        writer.add("a" if d % 4 else "b", ids, labels)
    return writer.build({})


@pytest.mark.parametrize("sft", [False, True])
def test_packing_is_a_pure_function_of_the_index(sft):
    store = _toy_store(with_labels=sft)
    a = PackedStream(store, {"a": 1, "b": 1}, seq_len=16, seed=3)
    b = PackedStream(store, {"a": 1, "b": 1}, seq_len=16, seed=3)
    later = b.batch(150, 4)  # beyond the first epoch, asked first
    early = b.batch(0, 4)
    assert np.array_equal(a.batch(150, 4)["input_ids"], later["input_ids"])
    assert np.array_equal(a.batch(0, 4)["labels"], early["labels"])
    assert early["input_ids"].shape == (4, 16)
    other_seed = PackedStream(store, {"a": 1, "b": 1}, seq_len=16, seed=4).batch(0, 4)
    assert not np.array_equal(other_seed["input_ids"], early["input_ids"])


def test_packing_positions_labels_and_whole_samples():
    store = _toy_store(with_labels=True)
    stream = PackedStream(store, None, seq_len=24, seed=0, pad_id=0)
    for i in range(30):
        seq = stream.sequence(i)
        ids, labels, pos = seq["input_ids"], seq["labels"], seq["position_ids"]
        starts = np.flatnonzero(pos == 0)
        assert starts[0] == 0
        for s, e in zip(starts, [*starts[1:], None], strict=True):
            doc = ids[s:e][ids[s:e] > 0]
            d = (doc[0] - 1) // 100
            assert doc[0] == 100 * d + 1, "an sft sample never starts mid-way"
            assert len(doc) == store.lengths[d], "an sft sample is never split"
            assert labels[s] == IGNORE_INDEX
        assert (labels[ids == 0] == IGNORE_INDEX).all()


def test_cpt_packing_fills_sequences_and_continues_documents():
    store = _toy_store(with_labels=False)
    stream = PackedStream(store, None, seq_len=16, seed=0)
    batch = stream.batch(0, 8)
    assert (batch["input_ids"] > 0).all(), "cpt sequences have no padding"
    flat = batch["input_ids"].reshape(-1)
    # the whole first epoch, read in order, is the documents one after another
    doc_starts = np.flatnonzero(flat % 100 == 1)
    for s, e in zip(doc_starts[:-1], doc_starts[1:], strict=True):
        assert np.array_equal(flat[s:e], np.arange(e - s) + flat[s])


def test_mixture_follows_group_weights():
    store = _toy_store(with_labels=False)  # 30 docs in "a", 10 in "b"
    stream = PackedStream(store, {"a": 1.0, "b": 3.0}, seq_len=16, seed=0)
    picked = store.groups[np.random.default_rng([0, 0]).choice(store.num_docs, 20000, p=stream.doc_probs)]
    share_b = (picked == store.group_names.index("b")).mean()
    assert abs(share_b - 0.75) < 0.02
    only_a = PackedStream(store, {"a": 1.0}, seq_len=16, seed=0)
    assert only_a.doc_probs[store.groups == store.group_names.index("b")].sum() == 0
    with pytest.raises(ValueError, match="weight 0"):
        PackedStream(store, {"a": 0.0}, seq_len=16, seed=0)


def test_mixture_weights_split_a_task_over_its_directions(tmp_path):
    cfg = tiny_config("sft", "m", [], tmp_path, sft__task_weights={"s2st": 2.0, "asr": 1.0, "tts": 1.0})
    w = mixture_weights(cfg, ["s2st:ja-en", "s2st:en-ja", "asr:ja", "asr:en", "tts:ja", "t2tt:ja-en"])
    assert w["s2st:ja-en"] == pytest.approx(0.25) and w["asr:ja"] == pytest.approx(0.125)
    assert w["t2tt:ja-en"] == 0.0 and sum(w.values()) == pytest.approx(1.0)
    cpt = tiny_config("cpt", "m", [], tmp_path, cpt__speech_weight=0.8)
    w = mixture_weights(cpt, ["speech_ja", "speech_en", "text"])
    assert w == pytest.approx({"speech_ja": 0.4, "speech_en": 0.4, "text": 0.2})


def test_cpt_text_from_a_streamed_dataset(
    extended_lm_dir, extended_tokenizer, speech_vocab, shards, tmp_path
):
    """`text_datasets` streams with `datasets` (a hub id on a networked machine; a local folder here)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "wiki"
    folder.mkdir()
    docs = [f"article number {i} about trains" for i in range(10)]
    pq.write_table(pa.table({"text": docs, "id": list(range(10))}), folder / "part-0.parquet")
    cfg = tiny_config("cpt", extended_lm_dir, shards, tmp_path / "cpt", cpt__text_datasets=[f"{folder}::train"],
                      cpt__text_max_docs=4, data__eval_fraction=0.0)  # fmt: skip
    store, _ = build_doc_stores(cfg, extended_tokenizer, speech_vocab)
    text = store.group_names.index("text")
    text_docs = np.flatnonzero(store.groups == text)
    assert len(text_docs) == 4  # text_max_docs
    ids, _ = store.doc(int(text_docs[0]))
    assert ids[-1] == extended_tokenizer.eos_token_id
    assert extended_tokenizer.decode(ids[:-1].tolist()) == docs[0]


@pytest.mark.parametrize("sft", [False, True])
def test_without_packing_one_document_per_sequence(sft):
    store = _toy_store(with_labels=sft)
    stream = PackedStream(store, None, seq_len=16, seed=0, pack=False, pad_id=0)
    for i in range(20):
        seq = stream.sequence(i)
        ids = seq["input_ids"]
        n = int((ids > 0).sum())
        d = (ids[0] - 1) // 100
        assert n == store.lengths[d] and (ids[n:] == 0).all()
        assert (seq["position_ids"][:n] == np.arange(n)).all()
        assert (seq["labels"][n:] == IGNORE_INDEX).all()
