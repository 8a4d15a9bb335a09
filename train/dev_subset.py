"""The fixed dev subset that `train.gen_eval` decodes at every eval: built once, deterministic.

    items = build_dev_subset(cfg, tokenizer, vocab)    # [DevItem]: up to `eval.samples` per group

sft: every corpus row gives one example per task and direction (`train.rows.sft_examples`), the
prompt exactly as `sts-infer` writes it (`TaskFormatter.prompt`: chat template, source speech
spliced in, the speech start marker prefilled for speech output). The first `eval.samples`
examples of each group (`s2st:ja-en`, `asr:en`, ...) are kept, taken from rows of the eval split
(`train.rows.is_eval_row`) when the scan found any, else from the first rows of the shards.
cpt: speech continuation of every clip (groups `continue:speech_ja`, `continue:speech_en`): the
prompt is `<|speech_start|>` and the first half of the clip's codes, the reference the second half.

Budgets are relative to the reference (`row_budget`): twice its length plus a margin (1 s of speech,
16 text tokens), capped at `eval.max_new_tokens`. Examples a trained model could not finish
inside the cap (reference + margin over it) or that training would have dropped (prompt + reference
over `seq_len`) are skipped, so an unfinished output always means the model did not stop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from sts.tasks import TaskFormatter, task_spec
from sts.vocab import SpeechVocab
from train.config import TrainConfig
from train.data import iter_row_batches, list_shards
from train.rows import is_eval_row, row_sides, sft_examples

log = logging.getLogger(__name__)

TEXT_MARGIN = 16
"""Text tokens added to every text budget (a short reference's own length)."""
SCAN_ROWS = 20_000
"""At most this many corpus rows are read to fill the subset (it is usually full after a few hundred)."""
CONTINUE = "continue"
"""The `task` of a cpt continuation item."""


@dataclass(eq=False)
class DevItem:
    """One prompt of the dev subset and what its output is compared with (compared by identity)."""

    group: str
    """Task group as in the eval loss (`s2st:ja-en`, `asr:en`, `continue:speech_ja`)."""
    task: str
    """`sts.tasks` task name, or `continue` (cpt)."""
    output: str
    """Output modality: "speech" or "text"."""
    lang: str
    """Language of the output."""
    prompt: np.ndarray
    """`[L]` int64 input ids, ending where the model starts to answer."""
    ref_len: int
    """Reference length: speech codes (speech output) or text tokens (text output), no end id."""
    ref_text: str | None
    """Reference text (text output; the transcript of the reference speech for ASR-chrF), None in cpt."""
    max_new_tokens: int
    """Budget of the output, its end id included."""
    row_id: str = ""
    """Id of the corpus row the item comes from."""
    src_codes: np.ndarray | None = None
    """`[S]` int source speech codes (speech-input tasks), for speaker similarity (`train.pairs`)."""
    ref_codes: np.ndarray | None = None
    """`[T]` int reference speech codes (speech-output tasks)."""


def row_budget(ref_len: int, output: str, frame_rate: float, cap: int) -> int | None:
    """`min(2 * ref_len + margin, cap)`; None when the reference + margin does not fit under `cap`.

    margin: 1 s of speech (`frame_rate` codes) for speech output, `TEXT_MARGIN` tokens for text.
    Twice the reference leaves room for slow speech and wordy translations; an output that neither
    ends nor loops stops at the budget and reads as a length ratio of about 2.
    """
    margin = math.ceil(frame_rate) if output == "speech" else TEXT_MARGIN
    if ref_len + margin > cap:
        return None
    return min(2 * ref_len + margin, cap)


def gen_eval_tasks(cfg: TrainConfig) -> list[str]:
    """The sft tasks decoded: `eval.tasks`, or every task with a positive `sft.task_weights` entry."""
    if cfg.eval.tasks is not None:
        return list(cfg.eval.tasks)
    return [t for t, w in cfg.sft.task_weights.items() if w > 0]


def build_dev_subset(
    cfg: TrainConfig, tokenizer, vocab: SpeechVocab, *, scan_rows: int = SCAN_ROWS
) -> list[DevItem]:
    """Up to `cfg.eval.samples` items per group, in corpus order (the same list on every call).

    Raises FileNotFoundError for a missing shard (`train.data.list_shards`).
    """
    rows = iter_rows(list_shards(cfg.data.shards))
    if cfg.stage != "cpt":  # sft, and dpo decoding the tasks it was tuned on
        weights = {task: 1.0 for task in gen_eval_tasks(cfg)}
        make = partial(
            sft_items,
            fmt=TaskFormatter(tokenizer, vocab, s2st_format=cfg.sft.s2st_format),
            tokenizer=tokenizer,
            weights=weights,
            cfg=cfg,
        )
    else:
        make = partial(_continuation_items, vocab=vocab, cfg=cfg)
    held_out, first, scanned = _fill(rows, make, cfg, scan_rows)
    items, source = (held_out, "the eval split") if held_out else (first, "the first corpus rows")
    groups = sorted({i.group for i in items})
    log.info("gen eval: %d prompts in %d groups %s from %s (%d rows read)",
             len(items), len(groups), groups, source, scanned)  # fmt: skip
    return items


def iter_rows(shards) -> Iterator[dict]:
    """Corpus rows as dicts (text and code columns only), shard by shard: the subset reads a few hundred."""
    for _, batch in iter_row_batches(shards):
        yield from batch.to_pylist()


def _fill(rows: Iterator[dict], make, cfg: TrainConfig, scan_rows: int):
    """Read rows until every group seen has `eval.samples` held-out items (without an eval split:
    first-rows items), or `scan_rows` rows were read."""
    n = cfg.eval.samples
    held_out: dict[str, list[DevItem]] = {}
    first: dict[str, list[DevItem]] = {}
    scanned = 0
    for row in rows:
        scanned += 1
        pool = held_out if is_eval_row(row["id"], cfg.data.eval_fraction) else first
        for item in make(row):
            bucket = pool.setdefault(item.group, [])
            if len(bucket) < n:
                bucket.append(item)
        seen = set(held_out) | set(first)
        if (
            scanned >= scan_rows
            or _full(held_out, seen, n)
            or (cfg.data.eval_fraction <= 0 and _full(first, seen, n))
        ):
            break
    rows.close()
    return _flatten(held_out), _flatten(first), scanned


def _full(pool: dict[str, list[DevItem]], groups: set[str], n: int) -> bool:
    """Whether `pool` has `n` items of every group in `groups` (an empty pool never is)."""
    return bool(pool) and all(len(pool.get(g, [])) >= n for g in groups)


def _flatten(groups: dict[str, list[DevItem]]) -> list[DevItem]:
    return [item for group in sorted(groups) for item in groups[group]]


def _codes(codes) -> np.ndarray | None:
    return None if codes is None or len(codes) == 0 else np.asarray(codes, dtype=np.int64)


def sft_items(row: dict, fmt: TaskFormatter, tokenizer, weights: dict, cfg: TrainConfig) -> Iterable[DevItem]:
    """The items of one corpus row (a dict of its text and code columns) for the tasks of `weights`
    (> 0), both directions, with budgets from `cfg` (`eval.max_new_tokens`, `data.seq_len`); rows a
    task cannot use are left out, as training leaves them out."""
    row = {**row, "src_codes": _codes(row["src_codes"]), "tgt_codes": _codes(row["tgt_codes"])}
    sides = row_sides(
        *[(row[f"{side}_lang"], row[f"{side}_text"], row[f"{side}_codes"]) for side in ("src", "tgt")]
    )
    for group, example in sft_examples(sides or [], weights):  # a monolingual row: its asr and tts only
        try:
            example.check()
            prompt = fmt.prompt(example)
        except ValueError:  # a missing side, or text holding special-token strings: training skips it too
            continue
        output = task_spec(example.task).output
        if output == "speech":
            ref_len = len(example.tgt_codes)
        else:
            ref_len = len(tokenizer(example.tgt_text, add_special_tokens=False).input_ids)
        budget = row_budget(ref_len, output, fmt.vocab.frame_rate, cfg.eval.max_new_tokens)
        if budget is None or len(prompt) + ref_len + 1 > cfg.data.seq_len:
            continue
        spec = task_spec(example.task)
        yield DevItem(
            group,
            example.task,
            output,
            example.tgt_lang,
            prompt,
            ref_len,
            example.tgt_text,
            budget,
            row["id"],
            src_codes=example.src_codes if spec.input == "speech" else None,
            ref_codes=example.tgt_codes if output == "speech" else None,
        )


def _continuation_items(row: dict, vocab: SpeechVocab, cfg: TrainConfig) -> Iterable[DevItem]:
    for side in ("src", "tgt"):
        codes = _codes(row[f"{side}_codes"])
        if codes is None or len(codes) < 2:
            continue
        half = len(codes) // 2
        prompt = np.concatenate([[vocab.speech_start_id], vocab.codes_to_ids(codes[:half])])
        ref_len = len(codes) - half
        budget = row_budget(ref_len, "speech", vocab.frame_rate, cfg.eval.max_new_tokens)
        if budget is None or len(codes) + 2 > cfg.data.seq_len:
            continue
        lang = row[f"{side}_lang"]
        yield DevItem(
            f"{CONTINUE}:speech_{lang}", CONTINUE, "speech", lang, prompt, ref_len, None, budget, row["id"]
        )
