"""Preference pairs for `sts-train dpo`: read, tokenized, split, ordered and batched.

    pairs = load_pairs(["runs/pairs"], tokenizer, vocab, s2st_format="direct", seq_len=2048)
    train_pairs, eval_pairs = pairs.split(eval_fraction=0.02)
    batch = pair_batch(train_pairs, [3, 17], pad_id=0)   # input_ids/labels/position_ids: [2B, L] int64

Two kinds of input, told apart by their columns:

* token pairs (`sts-train dpo-pairs`, `train.pairs`): Parquet with `id`, `prompt_ids`, `chosen_ids`,
  `rejected_ids` (`list<int32>`); the prompt ends where the model starts to answer and the answers
  are what follows (speech answers: codes, end marker, end of turn). A folder written by
  `dpo-pairs` is read through its `pairs/` shards.
* text pairs given by the user (a text MT preference set, say): Parquet or JSON lines with `prompt`,
  `chosen`, `rejected` strings (and `id` if present). With `src_lang` and `tgt_lang` columns they
  become t2tt samples exactly as SFT formats them (`sts.tasks`: the task's system prompt, the prompt
  as the source text); without them a plain user turn under the model's chat template.

A pair whose prompt + longer answer exceeds `seq_len` is dropped and counted (`dropped_overlong`),
and so is one whose chosen and rejected answers are identical (`skipped_identical`). A file that
lacks the columns, a token id outside the model's vocabulary, or a text that holds special-token
strings stops loading with `PairError` naming the file (and row).

Sequence k of a run is pair `pair_index(k)`: epochs of seeded permutations, a pure function of
(seed, number of pairs, k), so a resume needs only the number of pairs consumed.
"""

from __future__ import annotations

import functools
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sts.errors import InputError
from sts.tasks import IGNORE_INDEX, Example, TaskFormatter
from sts.vocab import SpeechVocab

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
TEXT_COLUMNS = ("prompt", "chosen", "rejected")
PAIRS_SUBDIR = "pairs"
"""Where `sts-train dpo-pairs` writes its pair shards inside its output folder."""


class PairError(InputError, ValueError):
    """A pair file that cannot be read as preference pairs (named with its problem)."""


@dataclass
class PairSet:
    """Tokenized pairs, in file order."""

    ids: list[str] = field(default_factory=list)
    prompts: list[np.ndarray] = field(default_factory=list)
    """`[P_i]` int64 prompt ids per pair."""
    chosen: list[np.ndarray] = field(default_factory=list)
    """`[C_i]` int64 ids of the preferred answer (after the prompt)."""
    rejected: list[np.ndarray] = field(default_factory=list)
    """`[R_i]` int64 ids of the dispreferred answer."""
    counts: dict[str, int] = field(default_factory=dict)
    """kept, dropped_overlong, skipped_identical (summed over the files)."""

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, pair_id: str, prompt, chosen, rejected, seq_len: int) -> None:
        prompt, chosen, rejected = (np.asarray(x, dtype=np.int64).ravel() for x in (prompt, chosen, rejected))
        if np.array_equal(chosen, rejected):
            self._count("skipped_identical")
        elif len(prompt) + max(len(chosen), len(rejected)) > seq_len or not len(chosen) or not len(rejected):
            self._count("dropped_overlong" if len(chosen) and len(rejected) else "skipped_empty")
        else:
            self.ids.append(pair_id)
            self.prompts.append(prompt)
            self.chosen.append(chosen)
            self.rejected.append(rejected)
            self._count("kept")

    def _count(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def subset(self, index: list[int]) -> PairSet:
        out = PairSet(counts=dict(self.counts))
        for i in index:
            out.ids.append(self.ids[i])
            out.prompts.append(self.prompts[i])
            out.chosen.append(self.chosen[i])
            out.rejected.append(self.rejected[i])
        return out

    def split(self, eval_fraction: float) -> tuple[PairSet, PairSet]:
        """(train, eval): a pair is held out when a hash of its id falls in `eval_fraction`."""
        held = [_held_out(i, eval_fraction) for i in self.ids]
        return (
            self.subset([i for i, h in enumerate(held) if not h]),
            self.subset([i for i, h in enumerate(held) if h]),
        )

    def fingerprint(self) -> str:
        """A hash of every pair's ids (what a precomputed reference belongs to)."""
        crc = 0
        for parts in zip(self.prompts, self.chosen, self.rejected, strict=True):
            for part in parts:
                crc = zlib.crc32(part.astype(np.int64).tobytes(), crc)
        return f"{len(self)}-{crc:08x}"


def _held_out(pair_id: str, eval_fraction: float) -> bool:
    return (zlib.crc32(pair_id.encode()) % 10_000) < eval_fraction * 10_000


def pair_files(paths: list[str]) -> list[Path]:
    """Pair files: named files, the `pairs/` shards of a `dpo-pairs` folder, or every .parquet /
    .jsonl under another folder (sorted). FileNotFoundError when a path or a folder's files are missing."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"preference pairs not found: {p}")
        root = p / PAIRS_SUBDIR if (p / PAIRS_SUBDIR).is_dir() else p
        found = sorted(
            f for f in root.rglob("*") if f.suffix in (".parquet", ".jsonl") and not f.name.startswith(".")
        )
        if not found:
            raise FileNotFoundError(f"{p}: no pair files (.parquet, .jsonl) in this folder")
        files += found
    return files


def load_pairs(
    paths: list[str], tokenizer, vocab: SpeechVocab, *, s2st_format: str = "direct", seq_len: int = 4096
) -> PairSet:
    """Every pair of `paths` (see the module doc), tokenized; raises PairError / FileNotFoundError."""
    pairs = PairSet()
    fmt, special = None, None
    for path in pair_files(paths):
        rows = _read_rows(path)
        if not rows:
            continue
        columns = set(rows[0])
        if set(TOKEN_COLUMNS) <= columns:
            for i, row in enumerate(rows):
                parts = [np.asarray(row[c], dtype=np.int64) for c in TOKEN_COLUMNS]
                if any(len(x) and (x.min() < 0 or x.max() >= vocab.vocab_size) for x in parts):
                    raise PairError(
                        f"{path}: row {i}: token ids outside the model's vocabulary [0, {vocab.vocab_size}) "
                        "(pairs sampled from another model?)"
                    )
                pairs.add(str(row.get("id", f"{path.stem}-{i}")), *parts, seq_len)
        elif set(TEXT_COLUMNS) <= columns:
            if fmt is None:
                fmt = TaskFormatter(tokenizer, vocab, s2st_format=s2st_format)
                special = special_token_ids(tokenizer, vocab)
            for i, row in enumerate(rows):
                try:
                    prompt, chosen, rejected = text_pair_ids(row, fmt, special)
                except ValueError as err:
                    raise PairError(f"{path}: row {i}: {err}") from err
                pairs.add(str(row.get("id") or f"{path.stem}-{i}"), prompt, chosen, rejected, seq_len)
        else:
            raise PairError(
                f"{path}: expected columns {list(TOKEN_COLUMNS)} (sts-train dpo-pairs) or {list(TEXT_COLUMNS)} "
                f"(text pairs), found {sorted(columns)}"
            )
    return pairs


def special_token_ids(tokenizer, vocab: SpeechVocab) -> np.ndarray:
    """`[K]` int64 text-vocabulary ids of special tokens (added ones marked special included)."""
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    ids = {i for i in set(tokenizer.all_special_ids) | added if i < vocab.text_vocab_size}
    return np.array(sorted(ids), dtype=np.int64)


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        try:
            return [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        except (OSError, json.JSONDecodeError) as err:
            raise PairError(f"{path}: not JSON lines ({err})") from err
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (OSError, ValueError) as err:
        raise PairError(f"{path}: not a readable Parquet file ({err})") from err


def text_pair_ids(
    row: dict, fmt: TaskFormatter, special_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt `[P]`, chosen `[C]`, rejected `[R]`) int64 ids of one text pair; ValueError when a
    field is empty or holds special-token strings (ids in `special_ids` `[K]`, or speech ids)."""
    prompt = row["prompt"]
    answers = [row["chosen"], row["rejected"]]
    if not all(isinstance(t, str) and t.strip() for t in (prompt, *answers)):
        raise ValueError("prompt, chosen and rejected must be non-empty strings")
    if row.get("src_lang") and row.get("tgt_lang"):  # a translation pair: the t2tt sample of SFT
        example = Example("t2tt", row["src_lang"], row["tgt_lang"], src_text=prompt)
        prompt_ids = fmt.prompt(example)
        fulls = []
        for answer in answers:
            example.tgt_text = answer
            fulls.append(fmt.build(example)["input_ids"])  # raises SpecialTokenTextError (a ValueError)
        return _answers(prompt_ids, fulls, fmt.end_of_turn_id)
    tok = fmt.tokenizer
    for text in (prompt, *answers):
        ids = np.asarray(tok(text, add_special_tokens=False).input_ids, dtype=np.int64)
        if len(ids) and (ids.max() >= fmt.vocab.text_vocab_size or np.isin(ids, special_ids).any()):
            raise ValueError(f"text holds special-token strings: {text[:80]!r}")
    messages = [{"role": "user", "content": prompt}]  # a plain user turn: no system prompt
    prompt_ids = _ids(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    fulls = [
        _ids(tok.apply_chat_template([*messages, {"role": "assistant", "content": a}], tokenize=True))
        for a in answers
    ]
    return _answers(prompt_ids, fulls, fmt.end_of_turn_id)


def _answers(prompt_ids, fulls, end_of_turn_id: int):
    """(prompt, chosen, rejected): each full rendering after the prompt, up to its end-of-turn token
    (what the template writes after it is not the answer, as in SFT's labels)."""
    prompt_ids = np.asarray(prompt_ids, dtype=np.int64)
    out = []
    for full in fulls:
        full = np.asarray(full, dtype=np.int64)
        if not np.array_equal(full[: len(prompt_ids)], prompt_ids):
            raise ValueError("the formatted prompt is not a prefix of the prompt with its answer")
        rest = full[len(prompt_ids) :]
        ends = np.flatnonzero(rest == end_of_turn_id)
        out.append(rest[: ends[0] + 1] if len(ends) else rest)
    return prompt_ids, out[0], out[1]


def _ids(rendered) -> list[int]:
    """apply_chat_template's ids (a list, or a BatchEncoding in recent transformers)."""
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def pair_index(k: int, num_pairs: int, seed: int) -> int:
    """The pair drawn k-th in a run: epoch k // n is a permutation seeded by (seed, epoch)."""
    epoch, at = divmod(k, num_pairs)
    return int(_permutation(num_pairs, seed, epoch)[at])


@functools.lru_cache(maxsize=2)
def _permutation(num_pairs: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_pairs)


def pair_batch(pairs: PairSet, index: list[int], pad_id: int) -> dict[str, np.ndarray]:
    """The chosen then the rejected sequence of each pair in `index` (B pairs -> 2B rows), right-padded.

    Returns input_ids, labels (-100 on the prompt and the padding), position_ids: `[2B, L]` int64, and
    `index` `[B]` int64. Right padding needs no attention mask: a causal model never looks ahead.
    """
    seqs, labels = [], []
    for part in (pairs.chosen, pairs.rejected):
        for i in index:
            prompt, answer = pairs.prompts[i], part[i]
            seqs.append(np.concatenate([prompt, answer]))
            labels.append(np.concatenate([np.full(len(prompt), IGNORE_INDEX), answer]))
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    lab = np.full((len(seqs), width), IGNORE_INDEX, dtype=np.int64)
    for r, (s, y) in enumerate(zip(seqs, labels, strict=True)):
        ids[r, : len(s)], lab[r, : len(y)] = s, y
    positions = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
    return {"input_ids": ids, "labels": lab, "position_ids": positions, "index": np.asarray(index, np.int64)}
