"""Training documents from corpus shards and text: the cpt and sft recipes, tokenized once and cached.

    from train.data import build_doc_stores
    train_store, eval_store = build_doc_stores(cfg, tokenizer, vocab)   # DocStore each

cpt documents: every speech segment of the encoded shards (source and target side) as
`<|speech_start|> s_k ... <|speech_end|> <eos>`, grouped `speech_ja` / `speech_en`, and text documents
(`text_files`, `text_datasets` streamed with `datasets`) as `ids <eos>`, grouped `text`.
sft samples: each shard row gives every enabled task in both directions through `sts.tasks`
(`s2st:ja-en`, `s2st:en-ja`, `asr:ja`, `tts:en`, ...). Rows whose id hashes into `data.eval_fraction`
go to the eval store. Over-long sft samples are dropped or trimmed (`overlong`) and counted.

Before anything is tokenized, `train.contract.check_corpus` holds every shard folder's `corpus.json`
(the codec, frame rate and codebook size `sts-encode` recorded) against `sts_vocab.json`; the rows
themselves are read as Arrow buffers and turned into documents by `train.rows.RowTokenizer`, which
stops at (or, with `skip_invalid_codes`, skips and counts) a code outside the speech block.
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sts.corpus import is_corpus_dir, shard_paths
from sts.io import remove_stale_temps, temp_path
from sts.paths import absolute_if_local
from sts.vocab import VOCAB_FILE
from train.config import TrainConfig
from train.contract import check_corpus
from train.rows import SKIP_REASONS, RowTokenizer, TokenizedBatch, is_eval_row
from train.token_cache import DocStore, DocWriter, fingerprint

log = logging.getLogger(__name__)

CORPUS_COLUMNS = ["id", "src_lang", "tgt_lang", "src_text", "tgt_text", "src_codes", "tgt_codes"]
"""What sft reads of a shard; cpt reads the same without the texts."""


def list_shards(paths: list[str]) -> list[Path]:
    """Parquet files named directly, the shards of named corpus folders (`sts.corpus.shard_paths`),
    or found (recursively) in other named folders; in the order given, each folder sorted."""

    files: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)
            continue
        found = shard_paths(p) if is_corpus_dir(p) else sorted(p.rglob("*.parquet"))
        if not found:
            raise FileNotFoundError(f"{p}: no Parquet shards in this folder")
        files += found
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(2, f"no such corpus folder or shard{more}", missing[0])
    return files


def iter_row_batches(
    shards: list[Path], batch_rows: int = 256, columns: list[str] = CORPUS_COLUMNS
) -> Iterator[tuple[Path, object]]:
    """(shard, `pyarrow.RecordBatch` of up to `batch_rows` rows) with only `columns` (the audio bytes
    are never read); a progress bar on a terminal."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    total = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    with tqdm(total=total, desc="tokenizing", unit="row", disable=None) as progress:  # off when not a tty
        for shard in shards:
            for batch in pq.ParquetFile(shard, memory_map=True).iter_batches(
                batch_size=batch_rows, columns=columns
            ):
                yield shard, batch
                progress.update(batch.num_rows)


def iter_text_docs(cfg: TrainConfig) -> Iterator[str]:
    """Text documents: blank-line-separated blocks of `text_files`, then `text_datasets` (streaming)."""
    for path in cfg.cpt.text_files:
        for block in Path(path).read_text(encoding="utf-8").split("\n\n"):
            if block.strip():
                yield block.strip()
    for spec in cfg.cpt.text_datasets:
        import datasets

        name, config, split = ([*spec.split(":"), "", ""])[:3]
        stream = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
        for i, row in enumerate(stream):
            if i >= cfg.cpt.text_max_docs:
                break
            yield row[cfg.cpt.text_column]


def speech_doc(vocab, codes) -> np.ndarray:
    """`<|speech_start|> ids <|speech_end|>`: `[T + 2]` int64."""
    ids = vocab.codes_to_ids(np.asarray(codes, dtype=np.int64))
    return np.concatenate([[vocab.speech_start_id], ids, [vocab.speech_end_id]])


def build_doc_stores(cfg: TrainConfig, tokenizer, vocab) -> tuple[DocStore, DocStore]:
    """The (train, eval) stores of `cfg.stage`, loaded from the token cache or built and cached.

    Raises `sts.vocab.CodecMismatchError` / `train.contract.CorpusContractError` when the corpus and
    the model disagree on the codec (checked first, cache or not), `train.rows.InvalidCodesError` at
    the first out-of-range code unless `skip_invalid_codes`.
    """
    shards = list_shards(cfg.data.shards)
    check_corpus(
        shards,
        vocab,
        Path(cfg.model) / VOCAB_FILE,
        allow_name_mismatch=cfg.data.allow_codec_name_mismatch,
        allow_unrecorded=cfg.data.allow_unrecorded_codec,
    )
    text_files = [Path(p) for p in cfg.cpt.text_files]
    parts = {
        "stage": cfg.stage,
        "shard_files": shards,
        "text_files": text_files,
        "text_datasets": cfg.cpt.text_datasets,
        "text_max_docs": cfg.cpt.text_max_docs,
        "text_column": cfg.cpt.text_column,
        "eval_fraction": cfg.data.eval_fraction,
        "vocab": vocab.__dict__,
        "tokenizer_len": len(tokenizer),
        "skip_invalid_codes": cfg.data.skip_invalid_codes,
    }
    if cfg.stage == "sft":
        parts.update(
            tasks=sorted(k for k, w in cfg.sft.task_weights.items() if w > 0), loss_mask=cfg.sft.loss_mask
        )
        parts.update(s2st_format=cfg.sft.s2st_format)
        parts.update(seq_len=cfg.data.seq_len, overlong=cfg.data.overlong)
    key = fingerprint(parts)
    paths = [cfg.token_cache_dir / f"{cfg.stage}-{split}-{key}.safetensors" for split in ("train", "eval")]
    remove_stale_temps(cfg.token_cache_dir)  # a killed run's half cache and spilled ids (gone writers only)
    if all(p.is_file() for p in paths):
        log.info("token cache hit: %s", paths[0].parent)
        stores = DocStore.load(paths[0]), DocStore.load(paths[1])
        report_counts(*stores)
        return stores

    header = {
        "stage": cfg.stage,
        "fingerprint": key,
        "vocab_size": vocab.vocab_size,
        "speech_token_offset": vocab.speech_token_offset,
        "num_speech_tokens": vocab.num_speech_tokens,
        "codec": vocab.codec,
        "frame_rate": vocab.frame_rate,
        "base_model": vocab.base_model,
        "model": absolute_if_local(str(cfg.model)),  # recorded paths resolve from anywhere (sts.paths)
        "shards": [str(s.resolve()) for s in shards],
    }
    spill = [temp_path(p.with_suffix(".parts")) for p in paths]  # raw ids while tokenizing
    train_w, eval_w = (DocWriter(with_labels=cfg.stage == "sft", spill_dir=d) for d in spill)
    for writer in (train_w, eval_w):
        writer.counts.update(dict.fromkeys(SKIP_REASONS, 0))
    notes: list[str] = []
    for batch in _tokenized_rows(cfg, tokenizer, vocab, shards):  # in row order, however many workers
        for writer, held_out in ((train_w, False), (eval_w, True)):
            if len(batch.lengths):
                writer.add_many(batch.group_names, *batch.select(batch.is_eval == held_out))
            for reason, n in batch.counts["eval" if held_out else "train"].items():
                writer.counts[reason] = writer.counts.get(reason, 0) + n
        notes += batch.notes[: max(0, 3 - len(notes))]
    if cfg.stage == "cpt":
        eos = tokenizer.eos_token_id
        for i, text in enumerate(iter_text_docs(cfg)):
            ids = tokenizer(text, add_special_tokens=False).input_ids
            if ids:
                writer = eval_w if is_eval_row(f"text-{i}", cfg.data.eval_fraction) else train_w
                writer.add("text", np.array([*ids, eos]))
    writers = [train_w, eval_w]
    for path, writer, split, parts_dir in zip(paths, writers, ("train", "eval"), spill, strict=True):
        store = writer.build({**header, "split": split, "invalid_code_examples": notes})
        store.save(path)
        log.info("tokenized %s %s: %s", cfg.stage, split, store.header["counts"])
        del store
        shutil.rmtree(parts_dir, ignore_errors=True)
    stores = DocStore.load(paths[0]), DocStore.load(paths[1])
    report_counts(*stores)
    return stores


def data_counts(train_store: DocStore, eval_store: DocStore) -> dict[str, int]:
    """Documents kept and events (skips, drops, trims) of both splits added up, for the run's metrics."""
    total: dict[str, int] = {}
    for store in (train_store, eval_store):
        for reason, n in store.header.get("counts", {}).items():
            total[reason] = total.get(reason, 0) + int(n)
    return total


def report_counts(train_store: DocStore, eval_store: DocStore) -> None:
    """Log what tokenization left out; rows skipped for invalid codes as a warning, with examples."""
    counts = data_counts(train_store, eval_store)
    skipped = {k: v for k, v in counts.items() if v and k != "kept"}
    if skipped:
        log.info("left out while tokenizing: %s", skipped)
    if counts.get("skipped_invalid_codes"):
        examples = train_store.header.get("invalid_code_examples", [])
        log.warning(
            "SKIPPED %d corpus row(s) with speech codes outside the model's speech block "
            "(--data.skip-invalid-codes)%s",
            counts["skipped_invalid_codes"],
            "; first: " + "; ".join(examples) if examples else "",
        )


_WORKER: RowTokenizer | None = None


def _init_worker(cfg: TrainConfig) -> None:
    global _WORKER
    _WORKER = RowTokenizer(cfg)


def _run_worker(item) -> TokenizedBatch:
    return _WORKER(*item)


def _tokenized_rows(cfg: TrainConfig, tokenizer, vocab, shards: list[Path]) -> Iterator[TokenizedBatch]:
    """Documents of every row batch, in order; `tokenize_workers` > 1 spreads the batches over processes."""
    columns = CORPUS_COLUMNS if cfg.stage == "sft" else [c for c in CORPUS_COLUMNS if not c.endswith("_text")]
    batches = iter_row_batches(shards, columns=columns)
    if cfg.data.tokenize_workers <= 1:
        tokenize = RowTokenizer(cfg, tokenizer, vocab)
        for shard, batch in batches:
            yield tokenize(shard, batch)
        return

    # spawn: a forked copy of the rust tokenizer would turn its own threads off and warn
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(cfg.data.tokenize_workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        yield from pool.imap(_run_worker, batches, chunksize=1)
