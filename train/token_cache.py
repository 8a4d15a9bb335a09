"""Tokenized documents on disk: one `.safetensors` file per split that says what it holds.

A `DocStore` is a flat run of token ids plus document boundaries:

    tokens:  [N] int32     every document's ids, one after another
    labels:  [N] int32     the loss targets, -100 where no loss (sft only; cpt learns every token)
    offsets: [D + 1] int64 document d is tokens[offsets[d]:offsets[d + 1]]
    groups:  [D] int16     index into the header's `groups` (e.g. "speech_ja", "s2st:ja-en")

The safetensors header (`metadata`) carries the rest as JSON: the dtype, the vocab size, the speech
token offset and size, the codec and its frame rate, the base model, the group names, a fingerprint of
the inputs and the counts (documents kept, dropped, trimmed). A rerun with the same inputs finds the
file by that fingerprint and does not tokenize again; the file is written to a temporary name and
renamed, so a killed run never leaves half a cache. While tokenizing, ids are spilled to raw files
(`DocWriter(spill_dir=...)`, constant memory); `DocStore.load` memory-maps the arrays, so a
multi-billion-token cache opens instantly and its pages are shared between ranks.

    store = DocStore.load("runs/sft/token_cache/sft-train-1a2b3c4d.safetensors")
    store.header["speech_token_offset"], store.num_docs, store.doc(0)
"""

from __future__ import annotations

import array
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sts.errors import CorruptFileError
from sts.io import atomic_open

CACHE_FORMAT = "sts-token-cache/1"


@dataclass
class DocStore:
    """Documents as flat token arrays; see the module docstring for the layout."""

    tokens: np.ndarray
    offsets: np.ndarray
    groups: np.ndarray
    group_names: list[str]
    labels: np.ndarray | None = None
    header: dict = field(default_factory=dict)

    @property
    def num_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """`[D]` int64 tokens per document."""
        return np.diff(self.offsets)

    def doc(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and labels of document d, `[L_d]` each (labels = ids when the store has none)."""
        start, stop = self.offsets[d], self.offsets[d + 1]
        ids = self.tokens[start:stop]
        return ids, (ids if self.labels is None else self.labels[start:stop])

    def save(self, path: str | Path) -> Path:
        """Write atomically; the header gets the format, dtype, group names and counts added.

        The arrays are streamed to disk in slices, so a memory-mapped or spilled store of any size
        is written without being read into memory at once.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = dict(self.header)
        header.update(
            format=CACHE_FORMAT,
            dtype="int32",
            groups=self.group_names,
            num_docs=self.num_docs,
            num_tokens=int(len(self.tokens)),
            has_labels=self.labels is not None,
        )
        tensors = {"groups": (self.groups, np.int16), "offsets": (self.offsets, np.int64)}
        tensors["tokens"] = (self.tokens, np.int32)
        if self.labels is not None:
            tensors["labels"] = (self.labels, np.int32)
        with atomic_open(path, "wb") as f:
            _write_safetensors(f, tensors, {"sts": json.dumps(header, ensure_ascii=False)})
        self.header = header
        return path

    @classmethod
    def load(cls, path: str | Path) -> DocStore:
        """Open a cache file; the arrays are memory-mapped (read-only), not read into memory."""
        path = Path(path)
        header, arrays = _read_safetensors_mmap(path)
        if "sts" not in header:
            raise CorruptFileError(f"{path}: not an sts token cache (no 'sts' header)")
        header = json.loads(header["sts"])
        if header.get("format") != CACHE_FORMAT:
            raise CorruptFileError(f"{path}: unknown token cache format {header.get('format')!r}")
        return cls(
            tokens=arrays["tokens"],
            offsets=arrays["offsets"],
            groups=arrays["groups"],
            group_names=list(header["groups"]),
            labels=arrays.get("labels"),
            header=header,
        )


_SAFETENSORS_DTYPES = {"I16": np.int16, "I32": np.int32, "I64": np.int64}


def _read_safetensors_mmap(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, arrays) of a safetensors file, the arrays as read-only memory maps.

    The format is an 8-byte little-endian header size, a JSON header naming each tensor's dtype,
    shape and byte range, then the data; a multi-GB cache opens instantly and is shared between
    processes through the page cache.
    """
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        index = json.loads(f.read(size))
    metadata = index.pop("__metadata__", None) or {}
    arrays = {}
    for name, info in index.items():
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        if end == begin:
            arrays[name] = np.zeros(info["shape"], dtype=dtype)
        else:
            arrays[name] = np.memmap(
                path, dtype=dtype, mode="r", offset=8 + size + begin, shape=tuple(info["shape"])
            )
    return metadata, arrays


_DTYPE_NAMES = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
_SLICE = 1 << 24  # elements per write


def _write_safetensors(f, tensors: dict[str, tuple[np.ndarray, type]], metadata: dict[str, str]) -> None:
    """Write 1-D `tensors` ({name: (array, dtype)}) in the safetensors layout, slice by slice."""
    index, begin = {}, 0
    for name, (values, dtype) in tensors.items():
        size = len(values) * np.dtype(dtype).itemsize
        index[name] = {
            "dtype": _DTYPE_NAMES[np.dtype(dtype)],
            "shape": [len(values)],
            "data_offsets": [begin, begin + size],
        }
        begin += size
    blob = json.dumps({"__metadata__": metadata, **index}, ensure_ascii=False).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    f.write(len(blob).to_bytes(8, "little"))
    f.write(blob)
    for values, dtype in tensors.values():
        for start in range(0, len(values), _SLICE):
            f.write(np.ascontiguousarray(values[start : start + _SLICE], dtype=dtype).tobytes())


class DocWriter:
    """Collects documents, then builds a `DocStore`.

    In memory by default; with `spill_dir` the token ids (and labels) go to raw files there as they
    come, so a corpus of billions of tokens is tokenized in constant memory (8 + 2 bytes per
    document stay in memory), and `build` returns a store memory-mapped from those files.
    """

    def __init__(self, with_labels: bool, spill_dir: str | Path | None = None):
        self.with_labels = with_labels
        self.ids: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.lengths = array.array("q")
        self.groups = array.array("h")
        self.group_names: list[str] = []
        self._group_ids: dict[str, int] = {}
        self.counts: dict[str, int] = {"kept": 0, "dropped_overlong": 0, "trimmed_overlong": 0}
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._files = {}
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            names = ["tokens", "labels"] if with_labels else ["tokens"]
            self._files = {n: open(self.spill_dir / f"{n}.bin", "wb") for n in names}  # noqa: SIM115

    def add(self, group: str, ids: np.ndarray, labels: np.ndarray | None = None) -> None:
        """One document: `ids` `[L]` (and `labels` `[L]`, default the ids) in `group`."""
        ids = np.asarray(ids, dtype=np.int32)
        self.add_many([group], np.zeros(1, np.int16), ids, np.array([len(ids)]), labels)

    def add_many(
        self,
        group_names: list[str],
        group_index: np.ndarray,
        ids: np.ndarray,
        lengths: np.ndarray,
        labels: np.ndarray | None = None,
    ) -> None:
        """Documents one after another: `ids` `[N]`, `lengths` `[D]` (summing to N), document d in group
        `group_names[group_index[d]]`; `labels` `[N]` (default the ids) when the store has labels."""
        lookup = np.array([self._group_id(name) for name in group_names] or [0], dtype=np.int16)
        self.groups.frombytes(lookup[np.asarray(group_index, dtype=np.int64)].tobytes())
        self.lengths.frombytes(np.asarray(lengths, dtype=np.int64).tobytes())
        ids = np.asarray(ids, dtype=np.int32)
        labels = np.asarray(ids if labels is None else labels, dtype=np.int32) if self.with_labels else None
        if self._files:
            self._files["tokens"].write(ids.tobytes())
            if labels is not None:
                self._files["labels"].write(labels.tobytes())
        else:
            self.ids.append(ids)
            if labels is not None:
                self.labels.append(labels)
        self.counts["kept"] += len(lengths)

    def _group_id(self, name: str) -> int:
        if name not in self._group_ids:
            self._group_ids[name] = len(self.group_names)
            self.group_names.append(name)
        return self._group_ids[name]

    def build(self, header: dict) -> DocStore:
        lengths = np.frombuffer(self.lengths, dtype=np.int64) if self.lengths else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if self._files:
            for f in self._files.values():
                f.close()
            n = int(offsets[-1])
            tokens, labels = (self._spilled(name, n) for name in ("tokens", "labels"))
        else:
            cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int32)  # noqa: E731
            tokens, labels = cat(self.ids), (cat(self.labels) if self.with_labels else None)
        return DocStore(
            tokens=tokens,
            offsets=offsets,
            groups=np.frombuffer(self.groups, dtype=np.int16).copy(),
            group_names=list(self.group_names),
            labels=labels if self.with_labels else None,
            header={**header, "counts": dict(self.counts)},
        )

    def _spilled(self, name: str, n: int) -> np.ndarray | None:
        path = self.spill_dir / f"{name}.bin"
        if not path.is_file():
            return None
        return np.memmap(path, dtype=np.int32, mode="r", shape=(n,)) if n else np.zeros(0, np.int32)


def fingerprint(parts: dict) -> str:
    """A short stable hash of the inputs that decide a cache's contents (files by size and mtime)."""
    resolved = {}
    for key, value in sorted(parts.items()):
        if key.endswith("files"):
            value = [(str(p), os.path.getsize(p), int(os.path.getmtime(p))) for p in value]
        resolved[key] = value
    blob = json.dumps(resolved, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
