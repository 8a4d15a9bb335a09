"""The SFT and CPT data paths at speed, naive vs ours in one run, on one CPU core.

    python benchmarks/data_path.py --json data_path.json        # full: about a minute on this CPU
    python benchmarks/data_path.py --tiny                       # seconds (tests/test_data_path_benchmark.py)

(1) s2st samples per second of `TaskFormatter.build` on synthetic codes of 5-15 s a side (250-750 codes
at 50 per second): naive renders the chat template and tokenizes it per sample (`cache_templates=False`,
the path before the cache), ours splices the codes into the layout rendered once (`sts.task_templates`).
(2) cpt documents (`<|speech_start|> ids <|speech_end|> <eos>`, one per side) per second from a Parquet
shard of encoded rows: the Llasa-style path reads the rows as Python lists, formats every code as an
`<|s_k|>` string and tokenizes the strings (one tokenizer call per record batch); ours is
`train.rows.RowTokenizer` on the Arrow buffers. Each pair is checked to give identical ids first; each
rate is the best of `--repeats` timed runs. One core: torch, OpenMP and the tokenizers' Rayon pool get one
thread each.

No hub: the tokenizer is the tiny byte-level BPE of `sts.testing` (LFM2's chat template and specials)
extended with 65,536 speech tokens, the real block size (`--tiny`: 1,024), unless `--model` names an
extended model folder. The real LFM2 tokenizer has a 65,536-token text vocabulary; s2st samples hold no
text and the speech tokens are added tokens either way, so the shape that matters here is the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge

from sts.cli import parse_cli

for _name in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM"):  # before the libraries load
    os.environ.setdefault(_name, "false" if _name == "TOKENIZERS_PARALLELISM" else "1")

import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

SIZES = {
    "full": dict(speech_tokens=65_536, naive_samples=1_500, ours_samples=30_000, rows=3_000, naive_rows=600),
    "tiny": dict(speech_tokens=1_024, naive_samples=60, ours_samples=600, rows=200, naive_rows=100),
}


def best_rate(run, items: int, repeats: int) -> float:
    """Items per second of `run()` (which handles `items` items), best of `repeats` after a warm-up."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return items / min(times)


def build_model(workdir: Path, speech_tokens: int) -> Path:
    from sts.testing import save_tiny_lfm2
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    base = save_tiny_lfm2(workdir / "lm")
    out = workdir / "lm-speech"
    extend_tokenizer(ExtendConfig(str(base), out, num_speech_tokens=speech_tokens))
    return out


def synthetic_codes(rng, count: int, num_codes: int) -> list[np.ndarray]:
    """`count` code arrays of 5-15 s at 50 per second, int32."""
    return [rng.integers(0, num_codes, int(rng.integers(250, 751)), dtype=np.int32) for _ in range(count)]


def s2st_rates(tokenizer, vocab, size: dict, repeats: int) -> dict:
    from sts.tasks import Example, TaskFormatter

    rng = np.random.default_rng(0)
    n = size["ours_samples"]
    sources, targets = (
        synthetic_codes(rng, n, vocab.num_speech_tokens),
        synthetic_codes(rng, n, vocab.num_speech_tokens),
    )
    examples = [
        Example("s2st", *(("ja", "en") if i % 2 else ("en", "ja")), src_codes=s, tgt_codes=t)
        for i, (s, t) in enumerate(zip(sources, targets, strict=True))
    ]
    naive = TaskFormatter(tokenizer, vocab, cache_templates=False)
    ours = TaskFormatter(tokenizer, vocab)
    for example in examples[:20]:
        a, b = naive.build(example), ours.build(example)
        assert all(np.array_equal(a[k], b[k]) for k in a), "the two paths disagree"
    few = examples[: size["naive_samples"]]
    rates = {
        "naive": best_rate(lambda: [naive.build(e) for e in few], len(few), repeats),
        "ours": best_rate(lambda: [ours.build(e) for e in examples], len(examples), repeats),
    }
    assert ours.rendered_in_full == 0
    return {**rates, "speedup": rates["ours"] / rates["naive"]}


def write_shard(path: Path, rows: int, num_codes: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    src, tgt = synthetic_codes(rng, rows, num_codes), synthetic_codes(rng, rows, num_codes)
    list_type = pa.list_(pa.int32())
    table = pa.table(
        {
            "id": [f"row-{i}" for i in range(rows)],
            "src_lang": ["ja", "en"] * (rows // 2) + ["ja"] * (rows % 2),
            "tgt_lang": ["en", "ja"] * (rows // 2) + ["en"] * (rows % 2),
            "src_text": ["テキスト"] * rows,
            "tgt_text": ["text"] * rows,
            "src_codes": pa.array([c.tolist() for c in src], type=list_type),
            "tgt_codes": pa.array([c.tolist() for c in tgt], type=list_type),
        }
    )
    pq.write_table(table, path)
    return path


def llasa_docs(tokenizer, vocab, shard: Path, max_rows: int) -> list[list[int]]:
    """Documents the Llasa way: codes as Python lists, formatted as `<|s_k|>` strings, tokenized."""
    import pyarrow.parquet as pq

    eos = tokenizer.eos_token_id
    docs, seen = [], 0
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=256, columns=["src_codes", "tgt_codes"]):
        texts = []
        for row in batch.to_pylist()[: max_rows - seen]:
            for side in ("src_codes", "tgt_codes"):
                body = "".join(vocab.speech_token_format.format(k) for k in row[side])
                texts.append(f"{vocab.speech_start_token}{body}{vocab.speech_end_token}")
        seen += len(texts) // 2
        docs += [ids + [eos] for ids in tokenizer(texts, add_special_tokens=False).input_ids]
        if seen >= max_rows:
            break
    return docs


def cpt_rates(tokenizer, vocab, model: Path, size: dict, workdir: Path, repeats: int) -> dict:
    from sts.config import make_config
    from train.config import TrainConfig
    from train.data import CORPUS_COLUMNS, iter_row_batches
    from train.rows import RowTokenizer

    shard = write_shard(workdir / "shard.parquet", size["rows"], vocab.num_speech_tokens)
    cfg = make_config(TrainConfig, stage="cpt", model=str(model), data__eval_fraction=0.0)
    tokenize = RowTokenizer(cfg, tokenizer, vocab)

    columns = [c for c in CORPUS_COLUMNS if not c.endswith("_text")]  # what cpt reads

    def ours():
        return [tokenize(s, b) for s, b in iter_row_batches([shard], columns=columns)]

    reference = llasa_docs(tokenizer, vocab, shard, size["naive_rows"])
    ids = np.concatenate([b.ids for b in ours()])
    assert np.array_equal(ids[: sum(map(len, reference))], np.concatenate(reference)), (
        "the two paths disagree"
    )
    rates = {
        "naive": best_rate(
            lambda: llasa_docs(tokenizer, vocab, shard, size["naive_rows"]), 2 * size["naive_rows"], repeats
        ),
        "ours": best_rate(ours, 2 * size["rows"], repeats),
    }
    return {**rates, "speedup": rates["ours"] / rates["naive"]}


@dataclass
class Args:
    """Tokenizing corpus rows: ours against the straightforward way (see the module docstring)."""

    tiny: bool = False
    """Small sizes, 1,024 speech tokens (seconds)."""
    model: str | None = None
    """An extended model folder instead of building the tiny one."""
    repeats: Annotated[int, Ge(1)] = 3
    """Timed repeats."""
    json: Path | None = None
    """Also write the result here."""


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/data_path.py")
    import pyarrow
    import torch
    from transformers import AutoTokenizer

    from sts.vocab import SpeechVocab

    torch.set_num_threads(1)
    arrow_threads = pyarrow.cpu_count()
    pyarrow.set_cpu_count(1)
    size = SIZES["tiny" if args.tiny else "full"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = Path(args.model) if args.model else build_model(workdir, size["speech_tokens"])
        tokenizer, vocab = AutoTokenizer.from_pretrained(model), SpeechVocab.load(model)
        result = {
            "mode": "tiny" if args.tiny else "full",
            "tokenizer": f"{model.name}: {len(tokenizer)} ids, {vocab.num_speech_tokens} speech tokens",
            "threads": 1,
            "s2st_samples_per_s": s2st_rates(tokenizer, vocab, size, args.repeats),
            "cpt_docs_per_s": cpt_rates(tokenizer, vocab, model, size, workdir, args.repeats),
        }
    pyarrow.set_cpu_count(arrow_threads)
    print(f"tokenizer {result['tokenizer']}, one core")
    print(f"{'measure':<28} {'naive':>12} {'ours':>12} {'speedup':>9}")
    for key, label in (
        ("s2st_samples_per_s", "s2st samples/s (build)"),
        ("cpt_docs_per_s", "cpt docs/s (Parquet)"),
    ):
        r = result[key]
        print(f"{label:<28} {r['naive']:>12,.0f} {r['ours']:>12,.0f} {r['speedup']:>8.1f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
