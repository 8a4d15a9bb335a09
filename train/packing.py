"""Weighted mixture and packing: a deterministic, resumable stream of fixed-length sequences.

    stream = PackedStream(store, weights={"speech_ja": 1, "text": 1}, seq_len=4096, seed=0)
    batch = stream.batch(start=0, size=8)   # sequences 0..7 of the stream
    batch["input_ids"], batch["labels"], batch["position_ids"]   # [B, L] int64 each

Sequence `i` of the stream is a pure function of (store, weights, seq_len, seed, i), so resuming is
"start at the number of sequences already consumed" and needs no iterator state. Each epoch draws
`num_docs` documents with replacement, document d with probability proportional to
`weight[group(d)] / docs_in_group` (a group's share of documents is its weight), then packs them in
that order. Position ids restart at 0 for every document: with no KV cache (`train.loss` passes
use_cache=False) transformers reads that as packed sequences and builds a block-diagonal causal mask
(varlen for flash-attention), so attention stays inside a document. LFM2's short-conv layers (kernel 3)
are kept apart too when the causal-conv1d kernel is installed (`seq_idx`); its PyTorch fallback lets them
see the previous document's last two tokens, which is why every document ends with an end token. The first label of every
document is -100: nothing predicts it from the document before.
cpt documents (no labels in the store) are cut at sequence ends and continue in the next sequence;
sft samples are never split (a sample that does not fit starts the next sequence, the rest is padded).
"""

from __future__ import annotations

import array
from typing import NamedTuple

import numpy as np

from sts.config import ConfigError
from sts.errors import InputError
from sts.tasks import IGNORE_INDEX
from train.token_cache import DocStore


class _EpochPlan(NamedTuple):
    order: np.ndarray  # [D] int64 documents of the epoch, drawn by weight
    cum: np.ndarray  # [D + 1] int64 token offsets of those documents, one after another
    starts: np.ndarray | None  # [S + 1] greedy packing: sequence j holds order[starts[j]:starts[j + 1]]
    num: int  # sequences in the epoch


class PackedStream:
    """Fixed-length training sequences from a `DocStore`; see the module docstring."""

    def __init__(
        self,
        store: DocStore,
        weights: dict[str, float] | None,
        seq_len: int,
        seed: int,
        *,
        pack: bool = True,
        pad_id: int = 0,
        groups: list[str] | None = None,
    ):
        if store.num_docs == 0:
            raise InputError("no documents to train on (empty token cache: check the shards and weights)")
        self.store, self.seq_len, self.seed, self.pack, self.pad_id = store, seq_len, seed, pack, pad_id
        self.split_docs = store.labels is None
        names = store.group_names
        keep = set(groups) if groups is not None else set(names)
        group_w = np.array(
            [(1.0 if weights is None else float(weights.get(n, 0.0))) if n in keep else 0.0 for n in names]
        )
        counts = np.bincount(store.groups, minlength=len(names)).astype(np.float64)
        per_doc = np.where(counts > 0, group_w / np.maximum(counts, 1), 0.0)[store.groups]
        if per_doc.sum() <= 0:
            raise ConfigError(f"all document groups have weight 0: groups {names}, weights {weights}")
        self.doc_probs = per_doc / per_doc.sum()
        self._plan_cache: tuple[int, _EpochPlan] | None = None  # one epoch in memory
        self._epoch_starts = [0]  # first stream index of each planned epoch

    def _plan(self, epoch: int) -> _EpochPlan:
        if self._plan_cache is None or self._plan_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.choice(self.store.num_docs, size=self.store.num_docs, p=self.doc_probs)
            lengths = self.store.lengths[order]
            if not self.split_docs or not self.pack:
                lengths = np.minimum(lengths, self.seq_len)  # (sft samples are already <= seq_len)
            cum = np.concatenate([[0], np.cumsum(lengths)])
            if self.split_docs and self.pack:  # cpt: the concatenated documents cut every seq_len tokens
                num = -(-int(cum[-1]) // self.seq_len)
                starts = None
            elif not self.pack:
                num, starts = len(order), None
            else:  # greedy: the next sample that does not fit starts a new sequence
                first = array.array("q")
                i = 0
                while i < len(order):
                    first.append(i)
                    i = int(np.searchsorted(cum, cum[i] + self.seq_len, side="right")) - 1
                starts = np.append(np.frombuffer(first, dtype=np.int64), len(order))
                num = len(starts) - 1
            self._plan_cache = (epoch, _EpochPlan(order, cum, starts, num))
        return self._plan_cache[1]

    def _spans(self, plan: _EpochPlan, j: int) -> list[tuple[int, int, int]]:
        """Sequence j of an epoch as (doc, start, stop) spans."""
        order, cum = plan.order, plan.cum
        if not self.pack:
            return [(int(order[j]), 0, int(cum[j + 1] - cum[j]))]
        if plan.starts is not None:
            return [
                (int(order[k]), 0, int(cum[k + 1] - cum[k]))
                for k in range(plan.starts[j], plan.starts[j + 1])
            ]
        begin, end = j * self.seq_len, (j + 1) * self.seq_len
        spans = []
        k = int(np.searchsorted(cum, begin, side="right")) - 1
        while k < len(order) and cum[k] < end:
            lo, hi = max(begin, int(cum[k])), min(end, int(cum[k + 1]))
            spans.append((int(order[k]), lo - int(cum[k]), hi - int(cum[k])))
            k += 1
        return spans

    def _locate(self, index: int) -> tuple[int, int]:
        while index >= self._epoch_starts[-1]:
            epoch = len(self._epoch_starts) - 1
            self._epoch_starts.append(self._epoch_starts[-1] + self._plan(epoch).num)
        epoch = int(np.searchsorted(self._epoch_starts, index, side="right")) - 1
        return epoch, index - self._epoch_starts[epoch]

    def sequence(self, index: int) -> dict[str, np.ndarray]:
        """Sequence `index`: input_ids, labels, position_ids, each `[seq_len]` int64."""
        epoch, j = self._locate(index)
        spans = self._spans(self._plan(epoch), j)
        ids = np.full(self.seq_len, self.pad_id, dtype=np.int64)
        labels = np.full(self.seq_len, IGNORE_INDEX, dtype=np.int64)
        positions = np.zeros(self.seq_len, dtype=np.int64)
        at = 0
        for d, start, stop in spans:
            doc_ids, doc_labels = self.store.doc(d)
            n = stop - start
            ids[at : at + n] = doc_ids[start:stop]
            labels[at : at + n] = doc_labels[start:stop]
            positions[at : at + n] = np.arange(n)
            labels[at] = IGNORE_INDEX  # the first token of a span is not predicted from the previous one
            at += n
        positions[at:] = np.arange(self.seq_len - at) + (positions[at - 1] + 1 if at else 0)
        return {"input_ids": ids, "labels": labels, "position_ids": positions}

    def batch(self, start: int, size: int, stride: int = 1) -> dict[str, np.ndarray]:
        """Sequences start, start + stride, ... (`size` of them) stacked: `[size, seq_len]` each."""
        rows = [self.sequence(start + k * stride) for k in range(size)]
        return {key: np.stack([r[key] for r in rows]) for key in rows[0]}
