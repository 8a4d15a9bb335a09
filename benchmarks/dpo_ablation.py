"""SFT vs SFT + DPO, classifier-free guidance off/on, on the demo's real-speech setting (issue 16).

    python benchmarks/dpo_ablation.py --out-dir runs/dpo-ablation --demo runs/demo --seeds 0 1 2 --json out.json

1. The demo run (`sts demo DIR`, `--size` default: Kokoro/Piper speech, the mel k-means codec, a small
   LFM2 trained from scratch by multitask SFT) is reused when `--demo` holds one, else built.
2. Per seed: `sts-train dpo-pairs` from the SFT checkpoint on the training rows (s2st both ways,
   `--samples` answers each at `--pair-temperature`, scored by the package's rules: loop, end marker,
   length, and resemblyzer speaker similarity to the source; `--pair-asr` adds ASR-chrF++, at the
   cost of a Whisper run per answer), then `sts-train dpo` for `--steps` steps of 8 pairs (sigmoid
   loss, frozen reference).
3. Per seed, model (SFT, SFT + DPO) and guidance scale (1 and `--cfg-scale`): the s2st prompts of the
   held-out rows and of the first training rows, both directions, decoded at the same settings
   (`train.gen_eval.decode`: constraint, loop guard, budget 2x the reference + 1 s; temperature
   `--temperature`, top-p 0.95, the seed), and scored:

       loop rate        share of outputs where `detect_loop` (all rules of SPEECH_GUARD) finds a loop
       end rate         share of outputs that reached the speech end marker
       ASR-chrF++       corpus chrF++ of offline-Whisper transcripts of the decoded audio against the
                        reference text (`sts.metrics.asr_bleu`), the mean of the two directions
       speaker sim      mean resemblyzer cosine of each output to its source speech (both through
                        the codec)

The table gives mean +- standard deviation over the seeds (each seed: its own pairs, its own DPO
run, its own decoding draws). Every stage resumes: a rerun reuses the demo, pairs, DPO checkpoints
and the scores already written (`eval.json` per seed). Record the printed table in
`benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import tyro
from annotated_types import Ge, Gt

from sts.cli import parse_cli
from sts.config import ConfigError, make_config
from sts.generation import SPEECH_GUARD, Sampling, detect_loop
from sts.io import write_json_atomic
from sts.tasks import TaskFormatter, load_task_formats
from train.data import list_shards
from train.dev_subset import DevItem, iter_rows, sft_items

METRICS = ("loop_rate", "end_rate", "length_ratio", "asr_chrf", "speaker_sim")


def demo_run(path: Path, size: str, log) -> dict[str, Path]:
    """The demo's SFT checkpoint, codec and corpora; runs `sts demo` first when there is none."""
    found = sorted((path / "train").glob("checkpoint-*"))
    if not found or not (path / "report.json").is_file():
        from recipes.demo import DemoConfig, run_demo

        log(f"building the demo run {path} (size {size})")
        run_demo(DemoConfig(out_dir=path, size=size), log=log)
        found = sorted((path / "train").glob("checkpoint-*"))
    return {
        "sft": found[-1],
        "codec": path / "codec",
        "train": path / "corpus" / "train",
        "test": path / "corpus" / "test",
    }


def s2st_items(corpus: Path, fmt: TaskFormatter, tokenizer, settings, max_rows: int | None) -> list[DevItem]:
    """The s2st prompts (both directions) of the first `max_rows` rows of a corpus."""
    items = []
    for n, row in enumerate(iter_rows(list_shards([str(corpus)]))):
        if max_rows is not None and n >= max_rows:
            break
        items += list(sft_items(row, fmt, tokenizer, {"s2st": 1.0}, settings))
    return items


def pairs_and_dpo(run: dict, out: Path, seed: int, args, log, scorer, speaker) -> Path | None:
    """Sample and score pairs from the SFT checkpoint, then DPO; returns the DPO checkpoint, or None
    when no answer beat another by the pair margin (nothing for DPO to learn: recorded as such)."""
    from train.config import TrainConfig
    from train.dpo import train_dpo
    from train.pairs import PairConfig, build_pairs

    started = time.perf_counter()
    card = build_pairs(PairConfig(model=str(run["sft"]), shards=[str(run["train"])], out_dir=out / "pairs",
                                  tasks=["s2st"], samples=args.samples,
                                  sampling=Sampling(temperature=args.pair_temperature, top_p=0.95),
                                  codec=str(run["codec"]), skip_eval_rows=False, seq_len=1024,
                                  max_prompts=args.pair_prompts,
                                  asr="auto" if args.pair_asr else "none", max_new_tokens=1000, fast=True,
                                  seed=seed, device="cpu"), speech_scorer=scorer, speaker=speaker)  # fmt: skip
    log(f"seed {seed}: {card['pairs']} pairs from {card['answers']} answers ({time.perf_counter() - started:.0f} s); "
        f"answer loop rate {sum(card['loops'].values()) / card['answers']:.2f}")  # fmt: skip
    if not card["pairs"]:
        log(f"seed {seed}: no pair reaches the margin, so no DPO run; the SFT model is evaluated alone")
        return None
    started = time.perf_counter()
    checkpoint = train_dpo(make_config(
        TrainConfig, stage="dpo", model=str(run["sft"]), out_dir=out / "dpo", seed=seed, dpo__pairs=[str(out / "pairs")],
        dpo__beta=args.beta, data__seq_len=1024, data__eval_fraction=0.0, optim__batch_size=8, optim__max_steps=args.steps,
        optim__lr=args.lr, optim__warmup_steps=max(1, args.steps // 10), eval__every=0, eval__generate=False,
        log__logger="none", log__every=max(1, args.steps // 5), log__save_every=args.steps, log__keep_last=1,
    ))  # fmt: skip
    log(f"seed {seed}: DPO {args.steps} steps ({time.perf_counter() - started:.0f} s)")
    return checkpoint


def evaluate(
    checkpoint: Path, items: dict[str, list[DevItem]], *, scale: float, seed: int, args, scorer, speaker
) -> dict:
    """Decode every split's items with `checkpoint` and score them: {split: {metric: value}}."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sts.metrics import asr_bleu
    from sts.vocab import SpeechVocab
    from train.config import TrainConfig
    from train.gen_eval import decode

    tokenizer, vocab = AutoTokenizer.from_pretrained(checkpoint), SpeechVocab.load(checkpoint)
    s2st_format = load_task_formats(checkpoint)["s2st"]
    fmt = TaskFormatter(tokenizer, vocab, s2st_format=s2st_format)
    lm = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    # decoded in the checkpoint's own s2st format (a text-first answer: texts, then speech)
    settings = make_config(TrainConfig, model=str(checkpoint), seed=seed, data__seq_len=1024, sft__s2st_format=s2st_format,
                           eval__sampling=Sampling(temperature=args.temperature, top_p=0.95) if args.temperature > 0
                           else Sampling(do_sample=False), eval__fast=True, eval__guidance_scale=scale,
                           eval__batch_size=32)  # fmt: skip
    out = {}
    for split, rows in items.items():
        with torch.no_grad():
            decoded = decode(
                lm, rows, tokenizer=tokenizer, vocab=vocab, pad_id=tokenizer.pad_token_id or 0, cfg=settings
            )
        codes = [fmt.parse(d["ids"], "s2st").codes for d in decoded]
        waves = scorer.waves(codes)
        sources = scorer.waves([r.src_codes for r in rows])
        chrf = []
        for lang in sorted({r.lang for r in rows}):
            mine = [i for i, r in enumerate(rows) if r.lang == lang]
            hyps = scorer.transcribe_waves([waves[i] for i in mine], lang)
            score = asr_bleu(hyps, [rows[i].ref_text for i in mine], lang)
            chrf.append(next(s.score for s in score if s.name == "chrF++"))
        sims = [
            speaker.similarity(s, w) if len(w) > 8000 else None for s, w in zip(sources, waves, strict=True)
        ]
        ratios = [len(d["body"]) / max(r.ref_len, 1) for d, r in zip(decoded, rows, strict=True)]
        out[split] = {
            "n": len(rows),
            "length_ratio": float(np.median(ratios)),
            "loop_rate": float(np.mean([detect_loop(d["body"], SPEECH_GUARD) is not None for d in decoded])),
            "end_rate": float(np.mean([d["ended"] for d in decoded])),
            "asr_chrf": float(np.mean(chrf)),
            **speaker_scores(sims),
        }
    return out


SETTINGS = ("demo", "samples", "pair_temperature", "pair_prompts", "steps", "lr", "beta", "cfg_scale",
            "temperature", "train_rows", "pair_asr")  # fmt: skip
"""The flags a seed's stored pairs, DPO run and scores depend on."""


def scored_settings(args) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k in SETTINGS}


def settings_problem(path: Path, args) -> str | None:
    """Why a seed's stored results (`settings.json`) do not fit `args` (None: they do, or a folder
    from before the file existed)."""
    if not path.is_file():
        return None
    stored, now = json.loads(path.read_text()), scored_settings(args)
    changed = [k for k in SETTINGS if k in stored and stored[k] != now.get(k)]
    if not changed:
        return None
    return "scored with " + ", ".join(f"--{k.replace('_', '-')} {stored[k]}" for k in changed)


def speaker_scores(sims: list[float | None]) -> dict:
    """Mean speaker similarity of the scored outputs (None when none was: JSON null, never NaN), how
    many were scored, and how many were not (`None`: under 0.5 s, or under
    `sts.speaker.MIN_VOICED_SECONDS` of voice on either side)."""
    scored = [s for s in sims if s is not None]
    return {
        "speaker_sim": float(np.mean(scored)) if scored else None,
        "speaker_n": len(scored),
        "speaker_unscored": len(sims) - len(scored),
    }


def table(results: list[dict], scale: float) -> str:
    """Markdown: one line per (split, model, guidance), mean +- std over seeds per metric."""
    lines = [
        "| prompts | model | CFG | loop rate | end-marker rate | length / ref. (median) | ASR-chrF++ | speaker sim |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in ("held-out", "train"):
        for model in ("SFT", "SFT + DPO"):
            for s in (1.0, scale):
                runs = [r[split] for r in results if r["model"] == model and r["scale"] == s]
                cfg = "off" if s == 1.0 else f"{s:g}"
                if not runs:
                    lines.append(
                        f"| {split} | {model} | {cfg} | no run: no seed had a preference pair |" + " |" * 4
                    )
                    continue
                cells = []
                for metric in METRICS:
                    v = np.array([r[metric] for r in runs], dtype=float)  # None (no score) -> NaN
                    if np.isnan(v).all():
                        cells.append("no score")
                        continue
                    fmt = "{:.1f} ± {:.1f}" if metric == "asr_chrf" else "{:.2f} ± {:.2f}"
                    cells.append(fmt.format(np.nanmean(v), np.nanstd(v)))
                lines.append(
                    f"| {split} ({runs[0]['n']}) | {model} ({len(runs)} seeds) | {cfg} | "
                    + " | ".join(cells)
                    + " |"
                )
    return "\n".join(lines)


@dataclass
class Args:
    """SFT vs SFT+DPO, CFG off/on, on the demo's setting (see the module docstring)."""

    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/dpo-ablation")
    """Work folder (pairs, DPO runs, eval.json per seed)."""
    demo: Path = Path("runs/demo")
    """Demo run to reuse or build."""
    size: str = "default"
    """Demo size when it is built."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of the pairs and the DPO runs."""
    samples: Annotated[int, Ge(2)] = 4
    """Answers sampled per training prompt."""
    pair_temperature: Annotated[float, Gt(0)] = 1.0
    """Sampling temperature of the pairs' answers (set it to `--temperature` to keep the pairs on-policy)."""
    pair_prompts: Annotated[int | None, Ge(1)] = None
    """Sample pairs for the first this many s2st prompts of the training corpus (two per row, one per
    direction); None: every row (the domain's 800 rows would be 6,400 answers)."""
    steps: Annotated[int, Ge(1)] = 40
    """DPO steps (8 pairs each)."""
    lr: Annotated[float, Gt(0)] = 2e-4
    """DPO learning rate."""
    beta: Annotated[float, Gt(0)] = 0.1
    """DPO beta."""
    cfg_scale: Annotated[float, Gt(0)] = 2.0
    """Classifier-free guidance scale of the 'CFG on' arm."""
    temperature: Annotated[float, Ge(0)] = 0.8
    """Decoding temperature of the evaluation (0: greedy)."""
    train_rows: Annotated[int, Ge(0)] = 4
    """Training rows decoded besides the held-out ones."""
    pair_asr: bool = False
    """Score the answers of the pairs by ASR-chrF++ too (Whisper per answer)."""
    threads: Annotated[int, Ge(1)] = 1
    """Torch threads."""
    json: Path | None = None
    """Also write the table here."""

    RENAMED_POSITIONALS: ClassVar[tuple[str, ...]] = ("out_dir",)
    """The work folder was a positional argument."""


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/dpo_ablation.py")
    started = time.perf_counter()
    import torch

    torch.set_num_threads(
        args.threads
    )  # a shared CPU: torch's default threading can be 50x slower (docs/background.md)

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    from transformers import AutoTokenizer

    from sts.speaker import SpeakerEncoder
    from sts.vocab import SpeechVocab
    from train.config import TrainConfig
    from train.gen_metrics import SpeechScorer

    run = demo_run(args.demo, args.size, log)
    tokenizer, vocab = AutoTokenizer.from_pretrained(run["sft"]), SpeechVocab.load(run["sft"])
    fmt = TaskFormatter(tokenizer, vocab, s2st_format=load_task_formats(run["sft"])["s2st"])
    settings = make_config(TrainConfig, data__seq_len=1024, eval__max_new_tokens=1000)
    items = {"held-out": s2st_items(run["test"], fmt, tokenizer, settings, None),
             "train": s2st_items(run["train"], fmt, tokenizer, settings, args.train_rows)}  # fmt: skip
    scorer, speaker = SpeechScorer(str(run["codec"]), "auto", "cpu"), SpeakerEncoder()
    results = []
    for seed in args.seeds:
        out = args.out_dir / f"seed-{seed}"
        cache = out / "eval.json"
        done = json.loads(cache.read_text()) if cache.is_file() else []
        if done and (problem := settings_problem(out / "settings.json", args)):
            raise ConfigError(f"{out}: {problem}; rerun with those flags or another --out-dir", key="out_dir")
        if not done:
            dpo = pairs_and_dpo(run, out, seed, args, log, scorer, speaker)
            for model, checkpoint in (("SFT", run["sft"]), ("SFT + DPO", dpo)):
                if checkpoint is None:
                    continue
                for scale in (1.0, args.cfg_scale):
                    begun = time.perf_counter()
                    scores = evaluate(
                        checkpoint, items, scale=scale, seed=seed, args=args, scorer=scorer, speaker=speaker
                    )
                    seconds = round(time.perf_counter() - begun)
                    done.append({"seed": seed, "model": model, "scale": scale, "seconds": seconds, **scores})
                    log(f"seed {seed} {model} CFG {scale:g} ({seconds} s): " + json.dumps(scores))
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / "settings.json", scored_settings(args), indent=1)
            write_json_atomic(cache, done, indent=1)  # the resume point: never half written
        results += done
    text = table(results, args.cfg_scale)
    for seed in args.seeds:
        card = json.loads((args.out_dir / f"seed-{seed}" / "pairs" / "pairs.json").read_text())
        score = card["distributions"]["score"]
        text += (f"\nseed {seed}: {card['pairs']} pairs from {card['answers']} sampled answers "
                 f"(loop rate {sum(card['loops'].values()) / card['answers']:.2f}, end rate "
                 f"{np.mean([g['end_marker_rate'] for g in card['groups'].values()]):.2f}); mean score chosen "
                 f"{score['chosen'].get('mean')} vs rejected {score['rejected'].get('mean')}")  # fmt: skip
    print(text)
    log("done")
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "table": text,
              "seconds": round(time.perf_counter() - started)}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
