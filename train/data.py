"""Training documents from corpus shards and text: the cpt and sft recipes, tokenized once and cached.

    from train.data import build_doc_stores
    train_store, eval_store = build_doc_stores(cfg, tokenizer, vocab)   # DocStore each

cpt documents: every speech segment of the encoded shards (source and target side) as
`<|speech_start|> s_k ... <|speech_end|> <eos>`, grouped `speech_ja` / `speech_en`, and text documents
(`text_files`, `text_datasets` streamed with `datasets`) as `ids <eos>`, grouped `text`.
sft samples: each shard row gives every enabled task in both directions through `sts.tasks`
(`s2st:ja-en`, `s2st:en-ja`, `asr:ja`, `tts:en`, ...). Rows whose id hashes into `eval_fraction`
go to the eval store. Over-long sft samples are dropped or trimmed (`overlong`) and counted.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sts.tasks import IGNORE_INDEX, Example, TaskFormatter
from train.config import TASK_NAMES, TrainConfig
from train.token_cache import DocStore, DocWriter, fingerprint

log = logging.getLogger(__name__)

CORPUS_COLUMNS = ["id", "src_lang", "tgt_lang", "src_text", "tgt_text", "src_codes", "tgt_codes"]


def list_shards(paths: list[str]) -> list[Path]:
    """Parquet files named directly, the shards of named corpus folders (`sts.corpus.shard_paths`),
    or found (recursively) in other named folders; in the order given, each folder sorted."""
    from sts.corpus import is_corpus_dir, shard_paths

    files: list[Path] = []
    for p in map(Path, paths):
        if is_corpus_dir(p):
            files += shard_paths(p)
        else:
            files += sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"corpus shard(s) not found: {missing}")
    return files


def iter_row_batches(shards: list[Path], batch_rows: int = 256) -> Iterator[list[dict]]:
    """Corpus rows in lists of up to `batch_rows`, with only the text and code columns (the audio
    bytes are never read); a progress bar on a terminal."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    total = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    with tqdm(total=total, desc="tokenizing", unit="row", disable=None) as progress:  # off when not a tty
        for shard in shards:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_rows, columns=CORPUS_COLUMNS):
                rows = batch.to_pylist()
                yield rows
                progress.update(len(rows))


def iter_rows(shards: list[Path]) -> Iterator[dict]:
    """Corpus rows one by one (see `iter_row_batches`)."""
    for rows in iter_row_batches(shards):
        yield from rows


def is_eval_row(row_id: str, eval_fraction: float) -> bool:
    """Stable held-out split by a hash of the row id."""
    return (zlib.crc32(row_id.encode()) % 10_000) < eval_fraction * 10_000


def iter_text_docs(cfg: TrainConfig) -> Iterator[str]:
    """Text documents: blank-line-separated blocks of `text_files`, then `text_datasets` (streaming)."""
    for path in cfg.text_files:
        for block in Path(path).read_text(encoding="utf-8").split("\n\n"):
            if block.strip():
                yield block.strip()
    for spec in cfg.text_datasets:
        import datasets

        name, config, split = ([*spec.split(":"), "", ""])[:3]
        stream = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
        for i, row in enumerate(stream):
            if i >= cfg.text_max_docs:
                break
            yield row[cfg.text_column]


def speech_doc(vocab, codes) -> np.ndarray:
    """`<|speech_start|> ids <|speech_end|>`: `[T + 2]` int64."""
    ids = vocab.codes_to_ids(np.asarray(codes, dtype=np.int64))
    return np.concatenate([[vocab.speech_start_id], ids, [vocab.speech_end_id]])


def sft_examples(row: dict, weights: dict[str, float]) -> Iterator[tuple[str, Example]]:
    """(group, Example) for every enabled task of one parallel row, both directions."""
    sides = [
        (row["src_lang"], row["src_text"], row["src_codes"]),
        (row["tgt_lang"], row["tgt_text"], row["tgt_codes"]),
    ]
    for task in TASK_NAMES:
        if weights.get(task, 0.0) <= 0:
            continue
        for i, (lang, text, codes) in enumerate(sides):
            other_lang, other_text, other_codes = sides[1 - i]
            if task in ("asr", "tts"):
                ex = Example(task, lang, lang, src_text=text, tgt_text=text, src_codes=codes, tgt_codes=codes)
                yield f"{task}:{lang}", ex
            else:
                ex = Example(task, lang, other_lang, src_text=text, tgt_text=other_text)
                ex.src_codes, ex.tgt_codes = codes, other_codes
                yield f"{task}:{lang}-{other_lang}", ex


def _as_codes(codes) -> np.ndarray | None:
    return None if codes is None or len(codes) == 0 else np.asarray(codes, dtype=np.int64)


def build_doc_stores(cfg: TrainConfig, tokenizer, vocab) -> tuple[DocStore, DocStore]:
    """The (train, eval) stores of `cfg.stage`, loaded from the token cache or built and cached."""
    shards = list_shards(cfg.shards)
    text_files = [Path(p) for p in cfg.text_files]
    parts = {
        "stage": cfg.stage,
        "shard_files": shards,
        "text_files": text_files,
        "text_datasets": cfg.text_datasets,
        "text_max_docs": cfg.text_max_docs,
        "text_column": cfg.text_column,
        "eval_fraction": cfg.eval_fraction,
        "vocab": vocab.__dict__,
        "tokenizer_len": len(tokenizer),
    }
    if cfg.stage == "sft":
        parts.update(tasks=sorted(k for k, w in cfg.task_weights.items() if w > 0), loss_mask=cfg.loss_mask)
        parts.update(seq_len=cfg.seq_len, overlong=cfg.overlong)
    key = fingerprint(parts)
    paths = [cfg.token_cache_dir / f"{cfg.stage}-{split}-{key}.safetensors" for split in ("train", "eval")]
    if all(p.is_file() for p in paths):
        log.info("token cache hit: %s", paths[0].parent)
        return DocStore.load(paths[0]), DocStore.load(paths[1])

    header = {
        "stage": cfg.stage,
        "fingerprint": key,
        "vocab_size": vocab.vocab_size,
        "speech_token_offset": vocab.speech_token_offset,
        "num_speech_tokens": vocab.num_speech_tokens,
        "codec": vocab.codec,
        "frame_rate": vocab.frame_rate,
        "base_model": vocab.base_model,
        "model": str(cfg.model),
        "shards": [str(s) for s in shards],
    }
    spill = [cfg.token_cache_dir / f".{p.stem}.parts" for p in paths]  # raw ids while tokenizing
    train_w, eval_w = (DocWriter(with_labels=cfg.stage == "sft", spill_dir=d) for d in spill)
    for docs in _tokenized_rows(cfg, tokenizer, vocab, shards):  # in row order, however many workers
        for is_eval, group, ids, labels in docs:
            writer = eval_w if is_eval else train_w
            if group.startswith("!"):  # a counted event, not a document
                writer.counts[group[1:]] = writer.counts.get(group[1:], 0) + 1
            else:
                writer.add(group, ids, labels)
    if cfg.stage == "cpt":
        eos = tokenizer.eos_token_id
        for i, text in enumerate(iter_text_docs(cfg)):
            ids = tokenizer(text, add_special_tokens=False).input_ids
            if ids:
                writer = eval_w if is_eval_row(f"text-{i}", cfg.eval_fraction) else train_w
                writer.add("text", np.array([*ids, eos]))
    writers = [train_w, eval_w]
    for path, writer, split, parts_dir in zip(paths, writers, ("train", "eval"), spill, strict=True):
        store = writer.build({**header, "split": split})
        store.save(path)
        log.info("tokenized %s %s: %s", cfg.stage, split, store.header["counts"])
        del store
        shutil.rmtree(parts_dir, ignore_errors=True)
    return DocStore.load(paths[0]), DocStore.load(paths[1])


Doc = tuple[bool, str, np.ndarray | None, np.ndarray | None]
"""(is_eval, group, ids, labels); a group starting with `!` is an event to count (`!dropped_overlong`)."""


class RowTokenizer:
    """Corpus rows -> documents of one stage (`__call__(rows) -> list[Doc]`); one per worker process."""

    def __init__(self, cfg: TrainConfig, tokenizer=None, vocab=None):
        if tokenizer is None:  # in a worker: load what the main process was given
            from transformers import AutoTokenizer

            from sts.vocab import SpeechVocab

            tokenizer, vocab = AutoTokenizer.from_pretrained(cfg.model), SpeechVocab.load(cfg.model)
        self.cfg, self.vocab, self.eos = cfg, vocab, tokenizer.eos_token_id
        self.fmt = TaskFormatter(tokenizer, vocab) if cfg.stage == "sft" else None

    def __call__(self, rows: list[dict]) -> list[Doc]:
        docs: list[Doc] = []
        for row in rows:
            is_eval = is_eval_row(row["id"], self.cfg.eval_fraction)
            row = {**row, "src_codes": _as_codes(row["src_codes"]), "tgt_codes": _as_codes(row["tgt_codes"])}
            for group, ids, labels in self._cpt(row) if self.fmt is None else self._sft(row):
                docs.append((is_eval, group, ids, labels))
        return docs

    def _cpt(self, row):
        for side in ("src", "tgt"):
            codes = row[f"{side}_codes"]
            if codes is not None:
                yield (
                    f"speech_{row[f'{side}_lang']}",
                    np.append(speech_doc(self.vocab, codes), self.eos),
                    None,
                )

    def _sft(self, row):
        cfg = self.cfg
        for group, example in sft_examples(row, cfg.task_weights):
            try:
                sample = self.fmt.build(example, loss=cfg.loss_mask)
            except ValueError:  # a missing side, or text holding special-token strings
                yield "!skipped_invalid", None, None
                continue
            ids, labels = sample["input_ids"], sample["labels"]
            if len(ids) > cfg.seq_len:
                if cfg.overlong == "drop":
                    yield "!dropped_overlong", None, None
                    continue
                yield "!trimmed_overlong", None, None
                ids, labels = ids[: cfg.seq_len], labels[: cfg.seq_len]
            if (labels != IGNORE_INDEX).any():
                yield group, ids, labels


_WORKER: RowTokenizer | None = None


def _init_worker(cfg: TrainConfig) -> None:
    global _WORKER
    _WORKER = RowTokenizer(cfg)


def _run_worker(rows: list[dict]) -> list[Doc]:
    return _WORKER(rows)


def _tokenized_rows(cfg: TrainConfig, tokenizer, vocab, shards: list[Path]) -> Iterator[list[Doc]]:
    """Documents of every row batch, in order; `tokenize_workers` > 1 spreads the batches over processes."""
    batches = iter_row_batches(shards)
    if cfg.tokenize_workers <= 1:
        yield from map(RowTokenizer(cfg, tokenizer, vocab), batches)
        return
    import multiprocessing

    # spawn: a forked copy of the rust tokenizer would turn its own threads off and warn
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(cfg.tokenize_workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        yield from pool.imap(_run_worker, batches, chunksize=1)
