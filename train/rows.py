"""Corpus row batches -> training documents, with the codes read straight from Arrow (no Python lists).

    tokenize = RowTokenizer(cfg, tokenizer, vocab)
    out = tokenize(shard_path, record_batch)      # TokenizedBatch: flat ids, lengths, groups, counts

A code column (`src_codes` / `tgt_codes`, Arrow `list<int32>`) is read as its flat values and row
offsets; the range check, the shift by `speech_token_offset` and (cpt) the whole batch of documents
`<|speech_start|> ids <|speech_end|> <eos>` are vectorized numpy over those buffers. sft rows go through
`sts.tasks.TaskFormatter` with each side's codes as a slice of the values (a view, no copy).

A code outside `[0, num_speech_tokens)` stops tokenization with `InvalidCodesError` naming the shard,
the row id and the value; with `skip_invalid_codes` the row is skipped and counted instead. Counted, by
reason, per split (rows or samples as named): `skipped_invalid_codes` (rows), `skipped_bad_languages`
(sft rows whose languages are not two different ones of `sts.LANGUAGES`, or a monolingual row's one
language not among them), `skipped_missing_side` (a sample or cpt side without the codes or text it
needs), `skipped_special_text` (sft samples whose text
holds special-token strings), `skipped_prompt_not_prefix` (sft samples whose answer merges into the
prompt's last tokens), `dropped_overlong` / `trimmed_overlong` (sft samples longer than `seq_len`).

A monolingual row (`sts.corpus`: no `tgt_lang`) is one side, not a row missing its other side: sft
makes its `asr` and `tts` samples (the tasks that need both sides are simply not drawn from it), cpt
its one speech document, and nothing about the absent target is counted.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sts import LANGUAGES
from sts.errors import InputError
from sts.tasks import (
    IGNORE_INDEX,
    TASK_NAMES,
    TASKS,
    Example,
    MissingFieldError,
    PromptPrefixError,
    SpecialTokenTextError,
    TaskFormatter,
)

SKIP_REASONS = (
    "skipped_invalid_codes",
    "skipped_bad_languages",
    "skipped_missing_side",
    "skipped_special_text",
    "skipped_prompt_not_prefix",
)
"""Counted reasons for leaving a row or sample out (see the module docstring)."""


class RowError(InputError, ValueError):
    """A corpus row that cannot be tokenized, named by shard and row id."""


class InvalidCodesError(RowError):
    """A speech code outside the vocabulary's speech block."""


def is_eval_row(row_id: str, eval_fraction: float) -> bool:
    """Stable held-out split by a hash of the row id."""
    return (zlib.crc32(row_id.encode()) % 10_000) < eval_fraction * 10_000


@dataclass
class CodeColumn:
    """One `list<int32>` code column of a record batch as numpy buffers (no per-row objects)."""

    values: np.ndarray
    """`[N]` int32: every row's codes one after another (the Arrow child array, zero-copy)."""
    offsets: np.ndarray
    """`[R + 1]` int64: row r's codes are `values[offsets[r]:offsets[r + 1]]`."""
    present: np.ndarray
    """`[R]` bool: the row has codes (not null, not empty)."""

    @classmethod
    def of(cls, batch, name: str) -> CodeColumn:
        array = batch.column(name)
        offsets = array.offsets.to_numpy().astype(np.int64)
        values = array.values.to_numpy(zero_copy_only=False)
        present = ~array.is_null().to_numpy(zero_copy_only=False) & (np.diff(offsets) > 0)
        return cls(values, offsets, present)

    def row(self, r: int) -> np.ndarray | None:
        """`[T]` int32 codes of row r (a view), or None when it has none."""
        return self.values[self.offsets[r] : self.offsets[r + 1]] if self.present[r] else None

    def bad_rows(self, num_codes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows `[K]`, first bad value `[K]`, its index within the row `[K]`) for the rows holding a code
        outside `[0, num_codes)`; vectorized over the whole column."""
        lo, hi = int(self.offsets[0]), int(self.offsets[-1])
        bad = np.flatnonzero((self.values[lo:hi] < 0) | (self.values[lo:hi] >= num_codes)) + lo
        if not len(bad):
            return (np.zeros(0, np.int64),) * 3
        rows = np.searchsorted(self.offsets, bad, side="right") - 1
        rows, first = np.unique(rows, return_index=True)  # the first bad code of each row
        return rows, self.values[bad[first]], bad[first] - self.offsets[rows]


@dataclass
class TokenizedBatch:
    """The documents of one row batch, in row order, with the events counted per split."""

    ids: np.ndarray
    """`[N]` int32: every document's ids, one after another."""
    lengths: np.ndarray
    """`[D]` int64 ids per document."""
    group_names: list[str]
    """The batch's group names (`speech_ja`, `s2st:ja-en`, ...)."""
    group_index: np.ndarray
    """`[D]` int16 index into `group_names`."""
    is_eval: np.ndarray
    """`[D]` bool: the document's row is held out."""
    labels: np.ndarray | None = None
    """`[N]` int32 loss targets (sft; -100 outside the loss)."""
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {"train": {}, "eval": {}})
    """Events per split: {"train": {"skipped_missing_side": 2, ...}, "eval": {...}}."""
    notes: list[str] = field(default_factory=list)
    """What was skipped for invalid codes (shard, row id, value), for the summary."""

    def count(self, split_is_eval: bool, reason: str, n: int = 1) -> None:
        counts = self.counts["eval" if split_is_eval else "train"]
        counts[reason] = counts.get(reason, 0) + n

    def select(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(group_index, ids, lengths, labels) of the documents where `keep` `[D]` is True."""
        if keep.all():
            return self.group_index, self.ids, self.lengths, self.labels
        tokens = np.repeat(keep, self.lengths)
        labels = None if self.labels is None else self.labels[tokens]
        return self.group_index[keep], self.ids[tokens], self.lengths[keep], labels


class RowTokenizer:
    """Corpus record batches -> `TokenizedBatch` of one stage; one per worker process."""

    def __init__(self, cfg, tokenizer=None, vocab=None):
        if tokenizer is None:  # in a worker: load what the main process was given
            from transformers import AutoTokenizer

            from sts.vocab import SpeechVocab

            tokenizer, vocab = AutoTokenizer.from_pretrained(cfg.model), SpeechVocab.load(cfg.model)
        self.cfg, self.vocab, self.eos = cfg, vocab, tokenizer.eos_token_id
        self.fmt = (
            TaskFormatter(tokenizer, vocab, s2st_format=cfg.sft.s2st_format) if cfg.stage == "sft" else None
        )

    def __call__(self, shard: Path, batch) -> TokenizedBatch:
        row_ids = batch.column("id").to_pylist()
        is_eval = np.array([is_eval_row(i, self.cfg.data.eval_fraction) for i in row_ids], dtype=bool)
        columns = [CodeColumn.of(batch, f"{side}_codes") for side in ("src", "tgt")]
        skipped, notes = self._invalid_rows(shard, row_ids, columns)
        if self.fmt is None:
            out = self._cpt(batch, is_eval, columns, skipped)
        else:
            out = self._sft(shard, batch, row_ids, is_eval, columns, skipped)
        for r in np.flatnonzero(skipped):
            out.count(bool(is_eval[r]), "skipped_invalid_codes")
        out.notes = notes
        return out

    def _invalid_rows(self, shard, row_ids, columns) -> tuple[np.ndarray, list[str]]:
        """`[R]` bool rows to skip for out-of-range codes (raises unless `skip_invalid_codes`)."""
        n = self.vocab.num_speech_tokens
        skipped = np.zeros(len(row_ids), dtype=bool)
        notes = []
        for side, column in zip(("src", "tgt"), columns, strict=True):
            rows, values, where = column.bad_rows(n)
            for r, value, at in zip(rows.tolist(), values.tolist(), where.tolist(), strict=True):
                what = f"{shard}: row {row_ids[r]!r}: {side}_codes[{at}] = {value} is outside [0, {n})"
                if not self.cfg.data.skip_invalid_codes:
                    raise InvalidCodesError(
                        f"{what} (num_speech_tokens of {self.cfg.model}/sts_vocab.json); re-encode the "
                        "corpus with the model's codec, or pass --data.skip-invalid-codes to skip such rows"
                    )
                if not skipped[r]:
                    notes.append(what)
                skipped[r] = True
        return skipped, notes

    def _cpt(self, batch, is_eval, columns, skipped) -> TokenizedBatch:
        """Every present side of every row as `<|speech_start|> ids <|speech_end|> <eos>`, row-major."""
        vocab = self.vocab
        lengths = np.stack([np.where(c.present & ~skipped, np.diff(c.offsets), 0) for c in columns], axis=1)
        keep = lengths > 0  # [R, 2] (row, side)
        doc_len = lengths[keep] + 3
        doc_end = np.cumsum(doc_len)
        doc_start = doc_end - doc_len
        ids = np.empty(int(doc_end[-1]) if len(doc_end) else 0, dtype=np.int32)
        rows, sides = np.nonzero(keep)  # row-major: the documents in order
        code_from = np.stack([c.offsets[:-1] for c in columns], axis=1)[rows, sides]
        values = [c.values for c in columns]
        for side, begin, n, at in zip(
            sides.tolist(), code_from.tolist(), (doc_len - 3).tolist(), (doc_start + 1).tolist(), strict=True
        ):  # one slice copy per document
            ids[at : at + n] = values[side][begin : begin + n]
        ids += vocab.speech_token_offset  # codes -> ids in one pass; the markers are written after
        ids[doc_start] = vocab.speech_start_id
        ids[doc_end - 2] = vocab.speech_end_id
        ids[doc_end - 1] = self.eos
        langs = np.stack(
            [batch.column(f"{side}_lang").to_numpy(zero_copy_only=False) for side in ("src", "tgt")], 1
        )
        names, index = np.unique(np.char.add("speech_", langs[keep].astype(str)), return_inverse=True)
        out = TokenizedBatch(
            ids=ids,
            lengths=doc_len.astype(np.int64),
            group_names=names.tolist(),
            group_index=index.astype(np.int16),
            is_eval=np.repeat(is_eval, keep.sum(axis=1)),
        )
        missing = ~np.stack([c.present for c in columns], axis=1) & ~skipped[:, None]
        missing[:, 1] &= ~_monolingual(batch)  # a monolingual row has no target: nothing is missing
        for r in np.nonzero(missing)[0]:  # one count per missing side
            out.count(bool(is_eval[r]), "skipped_missing_side")
        return out

    def _sft(self, shard, batch, row_ids, is_eval, columns, skipped) -> TokenizedBatch:
        cfg = self.cfg
        table = {
            name: batch.column(name).to_pylist() for name in ("src_lang", "tgt_lang", "src_text", "tgt_text")
        }
        ids, labels, groups, doc_eval = [], [], [], []
        out = TokenizedBatch(
            np.zeros(0, np.int32), np.zeros(0, np.int64), [], np.zeros(0, np.int16), np.zeros(0, bool)
        )
        for r, row_id in enumerate(row_ids):
            if skipped[r]:
                continue
            sides = row_sides(
                (table["src_lang"][r], table["src_text"][r], columns[0].row(r)),
                (table["tgt_lang"][r], table["tgt_text"][r], columns[1].row(r)),
            )
            if sides is None:
                out.count(bool(is_eval[r]), "skipped_bad_languages")
                continue
            for group, example in sft_examples(sides, cfg.sft.task_weights):
                try:
                    sample = self.fmt.build(example, loss=cfg.sft.loss_mask)
                except (MissingFieldError, SpecialTokenTextError, PromptPrefixError) as err:
                    out.count(bool(is_eval[r]), _SKIP_REASON[type(err)])
                    continue
                except ValueError as err:
                    raise RowError(f"{shard}: row {row_id!r}: {group}: {err}") from err
                sample_ids, sample_labels = sample["input_ids"], sample["labels"]
                if len(sample_ids) > cfg.data.seq_len:
                    if cfg.data.overlong == "drop":
                        out.count(bool(is_eval[r]), "dropped_overlong")
                        continue
                    out.count(bool(is_eval[r]), "trimmed_overlong")
                    sample_ids, sample_labels = (
                        sample_ids[: cfg.data.seq_len],
                        sample_labels[: cfg.data.seq_len],
                    )
                if (sample_labels != IGNORE_INDEX).any():
                    ids.append(sample_ids)
                    labels.append(sample_labels)
                    groups.append(group)
                    doc_eval.append(is_eval[r])
        if ids:
            names, index = np.unique(np.array(groups), return_inverse=True)
            out.ids = np.concatenate(ids).astype(np.int32)
            out.labels = np.concatenate(labels).astype(np.int32)
            out.lengths = np.array([len(x) for x in ids], dtype=np.int64)
            out.group_names, out.group_index = names.tolist(), index.astype(np.int16)
            out.is_eval = np.array(doc_eval, dtype=bool)
        else:
            out.labels = np.zeros(0, np.int32)
        return out


_SKIP_REASON = {
    MissingFieldError: "skipped_missing_side",
    SpecialTokenTextError: "skipped_special_text",
    PromptPrefixError: "skipped_prompt_not_prefix",
}


def _monolingual(batch) -> np.ndarray:
    """`[R]` bool: the rows of a record batch with no `tgt_lang` (monolingual, `sts.corpus`)."""
    return batch.column("tgt_lang").is_null().to_numpy(zero_copy_only=False)


def row_sides(src: tuple, tgt: tuple) -> list[tuple] | None:
    """The sides of one corpus row for `sft_examples`, each `(lang, text, codes)`: both for a parallel
    row, the source alone for a monolingual one (`tgt` lang None); None when the row's languages are
    unusable (not in `sts.LANGUAGES`, or a parallel row's two the same)."""
    if tgt[0] is None:
        return [src] if src[0] in LANGUAGES else None
    if src[0] == tgt[0] or not {src[0], tgt[0]} <= set(LANGUAGES):
        return None
    return [src, tgt]


def sft_examples(sides, weights: dict[str, float]):
    """(group, Example) for every enabled task of one row, both directions.

    `sides`: `row_sides`' [(lang, text, codes), (lang, text, codes)] for the source and the target
    side of a parallel row, or [(lang, text, codes)] for a monolingual row, which gives the tasks of
    one language (asr, tts) only.
    """
    for task in TASK_NAMES:
        if weights.get(task, 0.0) <= 0:
            continue
        if TASKS[task].translates and len(sides) < 2:
            continue  # a monolingual row: no translation to learn, and nothing to count as skipped
        for i, (lang, text, codes) in enumerate(sides):
            if not TASKS[task].translates:  # asr, tts: one language, both fields from this side
                ex = Example(task, lang, lang, src_text=text, tgt_text=text, src_codes=codes, tgt_codes=codes)
                yield f"{task}:{lang}", ex
            else:
                other_lang, other_text, other_codes = sides[1 - i]
                ex = Example(task, lang, other_lang, src_text=text, tgt_text=other_text)
                ex.src_codes, ex.tgt_codes = codes, other_codes
                yield f"{task}:{lang}-{other_lang}", ex
