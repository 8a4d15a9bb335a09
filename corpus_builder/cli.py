"""`sts-build-corpus` and `sts-encode`: flags -> `corpus_builder.build` / `corpus_builder.encode`.

`sts-build-corpus --out-dir DIR --source emilia|local|text-pairs|text --mt hf|vllm|http|reference|none --tts SPEC`.

    sts-build-corpus --out-dir corpus/ja-en --source emilia --languages ja \
        --mt hf --mt-model LiquidAI/LFM2-350M-ENJP-MT --tts llasa:HKUSTAudio/Llasa-1B --device cuda
    sts-build-corpus --out-dir corpus/demo --source text-pairs --path ja.txt --tgt-path en.txt \
        --mt reference --tts offline --checks none
    sts-build-corpus --out-dir corpus/ja-mono --source text --path ja.txt --folder-lang ja \
        --mt none --tts offline          # monolingual: asr/tts rows, no translation side

Flags -> `corpus_builder.build.build_corpus` (or `build_with_ray` with `--ray`); shows a progress
bar (rows/s, hours produced) and a summary. Rerun the same command to resume. Expected failures (a
missing --path, a rerun with other settings, a folder another builder holds, a bad manifest line, a
full disk) print one line `sts-build-corpus: error: ...` and exit 2 (`sts.errors.cli_main`);
`--debug` or STS_TRACEBACK=1 shows the traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from corpus_builder import shards
from corpus_builder.build import BuildConfig, build_corpus, build_with_ray, check_models, prepare_build
from corpus_builder.encode import EncodeConfig, bad_clips, encode_corpus
from sts.cli import parse_cli
from sts.corpus import read_card
from sts.errors import cli_main


def main(args: Sequence[str] | None = None) -> int:
    return cli_main("sts-build-corpus", _main, args)


def _main(args: list[str]) -> int:
    cfg = parse_cli(BuildConfig, args, prog="sts-build-corpus")
    return run(cfg, ["sts-build-corpus", *args])


def run(cfg: BuildConfig, argv: list[str]) -> int:
    from rich.console import Console
    from tqdm import tqdm

    console = Console(stderr=True)
    out_dir = prepare_build(cfg)  # fail on flags, source and settings before any progress bar
    check_models(cfg)  # ... and on a model folder that does not exist
    if not cfg.ray:  # ... on a folder another builder holds (the build takes the lock again), a changed shard
        with shards.worker_lock(out_dir, cfg.shard_index, cfg.num_shards, wait=cfg.wait_for_lock):
            for name in shards.check_chunks(out_dir, shards.worker_prefix(cfg.shard_index, cfg.num_shards)):
                console.print(
                    f"{shards.chunk_path(out_dir, name)}: missing; its chunk is built again", markup=False
                )
    if cfg.ray:
        summaries = build_with_ray(cfg, argv=argv)
        for s in summaries:
            console.print(
                f"shard {s['shard_index']}: {s['chunks']} chunks ({s['skipped']} already done), {s['rows']} rows"
            )
    else:
        totals = {"kept": 0, "hours": 0.0, "skipped_chunks": 0}
        with tqdm(unit="row", desc=f"shard {cfg.shard_index}/{cfg.num_shards}", dynamic_ncols=True) as bar:

            def advance(outcome) -> None:
                if outcome.row is not None:  # the speech made: the target, or a monolingual row's one side
                    totals["kept"] += 1
                    totals["hours"] += (outcome.row["tgt_duration"] or outcome.row["src_duration"]) / 3600
                bar.update(1)
                bar.set_postfix(kept=totals["kept"], hours=f"{totals['hours']:.3f}", refresh=False)

            for chunk in build_corpus(cfg, argv=argv, on_outcome=advance):
                if chunk.skipped:  # done by an earlier run: counted, not processed
                    totals["skipped_chunks"] += 1
                    bar.update(chunk.stats["input_rows"])
                    bar.set_postfix(skipped_chunks=totals["skipped_chunks"], refresh=False)
    _print_summary(console, cfg)
    return 0


def _print_summary(console, cfg: BuildConfig) -> None:

    card = read_card(cfg.out_dir)
    console.print(
        f"{cfg.out_dir}: {card['rows']:,} rows kept of {card['input_rows']:,} read, "
        f"{len(card['shards'])} shard files"
    )
    for direction, d in card["directions"].items():
        console.print(
            f"  {direction}: {d['rows']:,} rows, {d['src_hours']:.3f} h source, {d['tgt_hours']:.3f} h target"
        )
    for lang, m in card.get("monolingual", {}).items():
        console.print(f"  {lang} (monolingual): {m['rows']:,} rows, {m['hours']:.3f} h speech")
    for reason, n in card["drops"].items():
        console.print(f"  dropped {n:,}: {reason}")


def encode_main(args: Sequence[str] | None = None) -> int:
    """`sts-encode CORPUS_DIR`: add src_codes/tgt_codes to a corpus (`corpus_builder.encode`)."""
    return cli_main("sts-encode", _encode, args)


def _encode(args: list[str]) -> int:
    from rich.console import Console
    from tqdm import tqdm

    cfg = parse_cli(EncodeConfig, args, prog="sts-encode")
    console = Console(stderr=True)
    encoded = skipped = rows = 0
    shard_iter = encode_corpus(cfg)  # checks the folder before the progress bar shows
    bad_before = len(bad_clips(Path(cfg.corpus_dir)))
    with tqdm(unit="shard", desc="encode", dynamic_ncols=True) as bar:
        for _name, n, was_done in shard_iter:
            skipped += was_done
            encoded += not was_done
            rows += n
            bar.update(1)
            bar.set_postfix(rows=rows)
    console.print(f"{cfg.corpus_dir}: {encoded} shards encoded, {skipped} already done, {rows:,} rows")
    bad = bad_clips(Path(cfg.corpus_dir))
    if bad:
        console.print(
            f"  {len(bad)} bad clip(s) left with null codes ({len(bad) - bad_before:+d} this run), listed in "
            f"{Path(cfg.corpus_dir) / shards.CARD_NAME} (encode.bad_clips); first: {bad[0]['shard']} row "
            f"{bad[0]['id']} {bad[0]['side']}: {bad[0]['reason']}",
            markup=False,
            soft_wrap=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
