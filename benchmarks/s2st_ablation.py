"""The s2st format ablation on the demo's real-speech setting: direct vs text-first vs translation-first,
each decoded with plain sampling and with repetition-aware sampling, over several seeds.

    python benchmarks/s2st_ablation.py --out-dir runs/ablation                     # the default demo size, 3 seeds
    python benchmarks/s2st_ablation.py --out-dir runs/ablation --size small --seeds 0 1
    python benchmarks/s2st_ablation.py --out-dir /tmp/abl --tiny                  # logic check (tests)
    # the closed domain (`sts demo --size domain`, reusing its corpus and codec): seeds, learning curves
    python benchmarks/s2st_ablation.py -o runs/domain-seeds --size domain --data-dir runs/domain \
        --formats text-first --seeds 0 1 2 --decodings default ras-t0.4 plain
    python benchmarks/s2st_ablation.py -o runs/domain-curve --size domain --data-dir runs/domain \
        --formats text-first --seeds 0 --train-pairs 256 512 --decodings ras-t0.4

The setting is `sts demo`'s (`recipes.demo`): sentence pairs from the bundled set spoken by the
offline TTS voices (Kokoro ja, Piper en), checked by offline Whisper, encoded with the demo codec
(k-means over log-mel, Griffin-Lim; not XCodec2), a small LFM2 trained from scratch. Every format gets
the same budget: the same model, optimizer steps, batch, sequence length, learning rate and task
weights; only the s2st answer's layout differs (`sts.tasks`: direct = speech only; text-first =
transcript, translation, speech; translation-first = translation, speech). The corpus and codec are
built once (`--out/data`, reused by a rerun); each format x seed trains its own LM.

Each checkpoint translates `--examples` training and held-out sentences both ways, twice: "plain"
(nucleus sampling, temperature 0.8, top-p 0.95) and "ras" (repetition-aware sampling, CosyVoice's
settings, the package's default for speech). Scored by `recipes.demo_eval` exactly as the demo scores:
ASR-chrF++ (SeamlessM4T protocol with offline Whisper base) on training and held-out sentences, the
codec ceiling, the loop rate and the end-marker rate. The table gives mean +- standard deviation over
seeds. What a CPU-scale run can show: which format lets a small model reproduce (memorize) its
training pairs in a fixed budget, and whether a decoding loops; what it cannot: translation of unseen
sentences, which needs orders of magnitude more data and a real codec.

`--size domain` is the exception: its held-out sentences are new combinations of a closed domain
(`sts.domain`), every one of them scored, with the held-out-voice set beside them; the table then
gives each direction's share of the codec ceiling, the chain's transcript error (hearing) and its
translation chrF++ (translating). `--train-pairs` trains on the first shards of the training corpus
(the domain's pool order, so the sets nest); the text tokenizer and the codec stay those of the whole
training corpus. `--eval-steps` also scores intermediate checkpoints (a curve against steps). The
`sts demo` run named by `--data-dir` is the arm it trained (its seed, text-first, its steps): scored
from its checkpoint, not trained again; a rerun with another `--decodings` scores the checkpoints
already trained.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import tyro
from annotated_types import Ge

from sts.cli import parse_cli
from sts.config import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMATS = ("direct", "text-first", "translation-first")
MAX_SAVES = 20  # checkpoints an --eval-steps arm keeps (every gcd(eval steps, steps) steps)
DECODINGS = ("plain", "ras")


def run_one(out: Path, data: dict, size: dict, arm: Arm, log, done: dict | None = None) -> dict:
    """Train one format x seed (x training-set size) and score each decoding, at the end and at each
    of `arm.eval_steps`; returns {"train_seconds", "scores": {decoding: metrics}, "by_step"}. `done`:
    this arm's stored result; when its checkpoints are still on disk, only what it lacks is scored
    (a rerun with another --decodings does not train again)."""
    import torch

    from recipes.demo import DemoConfig, build_lm, train_sft
    from recipes.demo_eval import evaluate_outputs, translate_examples

    run = out / arm.name
    shards = training_shards(data["corpora"]["train"], arm.train_pairs)
    found = demo_run_arm(data["data_dir"], arm)
    final = found[0] if found else run / "train" / f"checkpoint-{arm.steps:07d}"
    needed = [final] + [final.parent / f"checkpoint-{s:07d}" for s in arm.eval_steps if s != arm.steps]
    if done and all(trained_as(c, arm, shards) for c in needed):
        checkpoint, train_seconds = final, done["train_seconds"]
        scores, by_step = dict(done["scores"]), dict(done.get("by_step", {}))
        if curve_decoding(done) != arm.decodings[0]:
            by_step = {}  # the curve is one decoding's: another first --decodings scores it again
        log(f"{arm.name}: trained by an earlier run; scoring what it lacks")
    elif found:
        (checkpoint, train_seconds), scores, by_step = found, {}, {}
        log(f"{arm.name}: the `sts demo` run in {data['data_dir']} trained this arm; scoring {checkpoint}")
    else:
        torch.manual_seed(arm.seed)
        started = time.perf_counter()
        lm = build_lm(
            run,
            DemoConfig(run, seed=arm.seed),
            size,
            data["codec_dir"],
            data["codec"].codebook_size,
            data["texts"],
        )
        save_every = (
            math.gcd(*arm.eval_steps, arm.steps) if arm.eval_steps else None
        )  # checked by Args: <= 20 saves
        checkpoint = train_sft(
            lm, run / "train", shards, size, steps=arm.steps, s2st_format=arm.fmt, seed=arm.seed,
            save_every=save_every,
        )  # fmt: skip
        train_seconds, scores, by_step = time.perf_counter() - started, {}, {}

    def score(checkpoint: Path, decoding: str, tag: str) -> dict:
        items, _ = translate_examples(
            run, checkpoint, data["codec_dir"], data["corpora"], data["examples"], decoding=decoding,
            seed=arm.seed, audio_dir=f"outputs-{tag}",
        )  # fmt: skip
        ev = evaluate_outputs(run, items, data["codec"], data["corpora"]["test"], speaker=False)
        log(f"{arm.name} {tag}: {json.dumps(summarize(ev))}")
        return summarize(ev)

    for decoding in arm.decodings:
        if decoding not in scores:
            scores[decoding] = score(checkpoint, decoding, decoding)
    for step in arm.eval_steps:
        if step != arm.steps and str(step) not in by_step:
            by_step[str(step)] = score(
                checkpoint.parent / f"checkpoint-{step:07d}", arm.decodings[0], f"step{step}"
            )
    return {"train_seconds": round(train_seconds, 1), "scores": scores, "by_step": by_step,
            "curve_decoding": arm.decodings[0]}  # fmt: skip


def curve_decoding(done: dict) -> str:
    """The decoding a stored arm's intermediate steps were scored with (the first of its --decodings;
    an arm stored before the key existed: its first stored decoding)."""
    return done.get("curve_decoding") or next(iter(done["scores"]))


def trained_as(checkpoint: Path, arm: Arm, shards: Path | list[Path]) -> bool:
    """Whether `checkpoint` is a step of the SFT run `arm` describes: its recorded seed, s2st format,
    steps and training shards (a folder left by another arm or setting is not reused)."""
    import yaml

    recorded = checkpoint / "train_config.yaml"
    if not recorded.is_file():
        return False
    cfg = yaml.safe_load(recorded.read_text())
    wanted = [Path(p).resolve() for p in ([shards] if isinstance(shards, Path) else shards)]
    return (
        cfg.get("seed") == arm.seed
        and cfg.get("sft", {}).get("s2st_format") == arm.fmt
        and cfg.get("optim", {}).get("max_steps") == arm.steps
        and [Path(p).resolve() for p in cfg.get("data", {}).get("shards", [])] == wanted
    )


def eval_steps_problem(eval_steps: list[int], steps: int) -> str | None:
    """Why `eval_steps` cannot be scored in a run of `steps` steps (None: they can): a step past the end,
    or steps whose common divisor would keep more than MAX_SAVES checkpoints."""
    if any(s > steps for s in eval_steps):
        return f"must lie in [1, {steps}]"
    if eval_steps and steps // math.gcd(*eval_steps, steps) > MAX_SAVES:
        return (f"their common divisor with {steps} would keep every checkpoint between (more than "
                f"{MAX_SAVES}); pick multiples of one step")  # fmt: skip
    return None


def data_config(data_dir: Path, size: str):
    """The DemoConfig whose data `data_dir` holds: a `sts demo` run folder's own (its seed and codec, from
    report.json; refused when its size differs), else the size's with seed 0."""
    from recipes.demo import DemoConfig

    report = data_dir / "report.json"
    if not report.is_file():
        return DemoConfig(data_dir, size=size, seed=0)
    recorded = json.loads(report.read_text())["config"]
    if recorded.get("size") != size:
        raise ConfigError(
            f"{data_dir} holds a `sts demo --size {recorded.get('size')}` run, not {size}", key="data_dir"
        )
    return DemoConfig(data_dir, size=size, seed=recorded.get("seed", 0), codec=recorded.get("codec") or "")


def demo_run_arm(data_dir: Path, arm: Arm) -> tuple[Path, float] | None:
    """The checkpoint and training seconds of the `sts demo` run in `data_dir` when it trained exactly
    `arm` (its seed, format and steps, the small demo LM, the whole training corpus; an arm that also
    scores intermediate steps needs checkpoints the demo did not keep), else None."""
    from sts.paths import resolve_recorded

    path = data_dir / "report.json"
    if arm.train_pairs or arm.eval_steps or not path.is_file():
        return None
    report = json.loads(path.read_text())
    checkpoint = Path(resolve_recorded(report["checkpoint"], data_dir))
    trained = (
        report["config"].get("seed", 0),
        report["s2st_format"],
        report["steps"],
        report["config"].get("model"),
    )
    if trained != (arm.seed, arm.fmt, arm.steps, "") or not checkpoint.is_dir():
        return None
    return checkpoint, report["timings_s"]["train"]


def covers(done: dict | None, arm: Arm) -> bool:
    """Whether a stored run already holds every decoding and intermediate step `arm` asks for, its
    curve scored with the arm's first decoding (else `run_one` scores what is missing, on the stored
    checkpoints when they are still there)."""
    if not done:
        return False
    steps = {str(s) for s in arm.eval_steps if s != arm.steps}
    return (
        set(arm.decodings) <= set(done["scores"])
        and steps <= set(done.get("by_step", {}))
        and (not steps or curve_decoding(done) == arm.decodings[0])
    )


def training_shards(corpus: Path, pairs: int | None) -> Path | list[Path]:
    """The corpus folder, or its first shards holding exactly `pairs` rows (a learning-curve point: the
    domain's shards follow its seeded pool order, so a prefix is a smaller training set)."""
    if pairs is None:
        return corpus
    import pyarrow.parquet as pq

    from sts.corpus import shard_paths

    chosen, sizes = [], []
    for path in shard_paths(corpus):
        sizes.append((sizes[-1] if sizes else 0) + pq.ParquetFile(path).metadata.num_rows)
        if sizes[-1] <= pairs:
            chosen.append(path)
    if pairs not in sizes:
        raise ConfigError(
            f"{corpus}: no first shards hold exactly {pairs} pairs; possible: {sizes}", key="train_pairs"
        )
    return chosen


def summarize(evaluation: dict) -> dict:
    """Per split (train, test, test-voice), mean over directions: ASR-chrF++, its ceiling, the share
    of the ceiling, loop and end-marker rates, the chain's transcript error and translation chrF++."""
    from recipes.demo_report import held_out_share

    groups = evaluation.get("asr_bleu") or {}
    out = {}
    for split in dict.fromkeys(k.split(" ", 1)[0] for k in groups):
        chosen = {k.split(" ", 1)[1]: g for k, g in groups.items() if k.split(" ", 1)[0] == split}

        def mean(key: str, chosen=chosen):
            values = [g[key] for g in chosen.values() if g.get(key) is not None]
            return float(np.mean(values)) if values else None

        out[split] = {
            "asr_chrf": float(np.mean([g["scores"]["chrF++"] for g in chosen.values()])),
            "ceiling": float(np.mean([g["ceiling"]["chrF++"] for g in chosen.values()])),
            "share_of_ceiling": {d: held_out_share(g) for d, g in chosen.items()},
            "loop_rate": mean("loop_rate"),
            "end_marker_rate": mean("end_marker_rate"),
            "transcript_error": mean("transcript_error"),
            "translation_chrf": mean("translation_chrf++"),
            "speaking_chrf": mean("speech_vs_own_translation_chrf++"),
            "by_direction": {d: g["scores"]["chrF++"] for d, g in chosen.items()},
        }
    return out


def _stat(values: list[float], digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if values else ""


def _values(runs: list[dict], split: str, key: str, direction: str | None = None) -> list[float]:
    """One metric of `split` from each run's summary (`summarize`), per direction when given."""
    found = [r[split].get(key) for r in runs if split in r]  # None: a run scored before the key existed
    if direction is not None:
        found = [v.get(direction) for v in found if v is not None]
    return [v for v in found if v is not None]


def _held_out(runs: list[dict], direction: str) -> str:
    scores = _stat(_values(runs, "test", "by_direction", direction))
    shares = _stat([100 * v for v in _values(runs, "test", "share_of_ceiling", direction)], 0)
    return f"{scores} ({shares} %)"


def table(results: dict) -> list[str]:
    """Markdown rows: arm (format, training pairs) x decoding, mean ± sd over seeds. Held-out columns
    per direction with the share of the ceiling; the chain's transcript error (hearing) and its
    translation chrF++ (translating) beside them."""
    rows = [
        "| format | pairs | decoding | train ASR-chrF++ | held-out ja→en (share of ceiling) | held-out en→ja (share) "
        "| held-out voice ja→en / en→ja | held-out transcript error | held-out translation chrF++ "
        "| held-out speech vs own translation "
        "| loop rate | end-marker rate | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, by_seed in results.items():
        if arm.startswith("_"):  # "_setting"
            continue
        fmt, _, pairs = arm.partition("@")
        for decoding in dict.fromkeys(d for r in by_seed.values() for d in r["scores"]):
            runs = [r["scores"][decoding] for r in by_seed.values() if decoding in r["scores"]]
            voice = " / ".join(
                _stat(_values(runs, "test-voice", "by_direction", d)) for d in ("ja->en", "en->ja")
            )
            loops = [np.mean([r[s]["loop_rate"] for s in r]) for r in runs]
            ends = [np.mean([r[s]["end_marker_rate"] for s in r]) for r in runs]
            rows.append(
                f"| {fmt} | {pairs or 'all'} | {decoding} | {_stat(_values(runs, 'train', 'asr_chrf'))} | "
                f"{_held_out(runs, 'ja->en')} | {_held_out(runs, 'en->ja')} | "
                f"{voice if any('test-voice' in r for r in runs) else ''} | "
                f"{_stat(_values(runs, 'test', 'transcript_error'), 3)} | "
                f"{_stat(_values(runs, 'test', 'translation_chrf'))} | {_stat(_values(runs, 'test', 'speaking_chrf'))} | {_stat(loops, 2)} | {_stat(ends, 2)} | {len(runs)} |"
            )
    return rows


def curve_rows(results: dict) -> list[str]:
    """Held-out ASR-chrF++ against SFT steps (the arms' `--eval-steps`), mean ± sd over seeds."""
    rows = ["| format | pairs | decoding | step | held-out ja→en | held-out en→ja | transcript error | seeds |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, by_seed in results.items():
        if arm.startswith("_"):
            continue
        fmt, _, pairs = arm.partition("@")
        final = results["_setting"]["steps"]
        steps = sorted({int(s) for r in by_seed.values() for s in r.get("by_step", {})} | {final})
        for step in steps:
            chosen = [r for r in by_seed.values() if step == final or str(step) in r.get("by_step", {})]
            runs = [
                r["by_step"][str(step)] if step != final else r["scores"][curve_decoding(r)] for r in chosen
            ]
            decodings = ", ".join(dict.fromkeys(curve_decoding(r) for r in chosen))
            runs = [r for r in runs if "test" in r]
            rows.append(
                f"| {fmt} | {pairs or 'all'} | {decodings} | {step} | {_stat(_values(runs, 'test', 'by_direction', 'ja->en'))} | "
                f"{_stat(_values(runs, 'test', 'by_direction', 'en->ja'))} | "
                f"{_stat(_values(runs, 'test', 'transcript_error'), 3)} | {len(runs)} |"
            )
    return rows


@dataclass(frozen=True)
class Arm:
    """One trained model: s2st format, seed, training pairs (None: all), steps, decodings scored."""

    fmt: str
    seed: int
    train_pairs: int | None
    steps: int
    decodings: tuple[str, ...]
    eval_steps: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return self.fmt + (f"@{self.train_pairs}" if self.train_pairs else "")

    @property
    def name(self) -> str:
        return f"{self.fmt}-seed{self.seed}" + (f"-n{self.train_pairs}" if self.train_pairs else "")


@dataclass
class Args:
    """The s2st answer formats at an equal budget (see the module docstring)."""

    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/ablation")
    """Work folder (one run per arm and seed, ablation.json)."""
    size: Literal["tiny", "small", "default", "large", "domain"] = "default"
    """Demo size (domain: held-out combinations of `sts demo --size domain`)."""
    data_dir: Path | None = None
    """Corpus and codec folder, shared by several work folders (default: OUT_DIR/data); a finished
    `sts demo` run folder of the same size, read with its own seed and codec."""
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    """Formats compared (direct, text-first, translation-first)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds per format."""
    train_pairs: list[int] = field(default_factory=list)
    """Training-set sizes (a learning curve: the first shards of the training corpus); default all."""
    steps: Annotated[int | None, Ge(1)] = None
    """SFT steps (default: the size's)."""
    eval_steps: list[int] = field(default_factory=list)
    """Also score the checkpoints at these steps (a learning curve against steps)."""
    decodings: list[str] = field(default_factory=lambda: list(DECODINGS))
    """Decodings scored (plain, ras, default, greedy, ras-t<temperature>; recipes.demo_eval)."""
    examples: Annotated[int, Ge(1)] = 8
    """Sentences per split translated both ways (domain: every held-out pair, this many training ones)."""
    tiny: bool = False
    """Size tiny, 1 seed, 4 steps, 1 example (logic check)."""
    threads: Annotated[int | None, Ge(1)] = None
    """Torch threads (default: torch's; 1 on a shared machine)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out": "out_dir"}
    """`--out` was the work folder's flag."""

    def __post_init__(self):
        if set(self.formats) - set(FORMATS):
            raise ConfigError(f"must be among {list(FORMATS)}, got {self.formats}", key="formats")
        for key in ("train_pairs", "eval_steps"):
            if any(v < 1 for v in getattr(self, key)):
                raise ConfigError(f"must be at least 1, got {getattr(self, key)}", key=key)
        if self.steps and (problem := eval_steps_problem(self.eval_steps, self.steps)):
            raise ConfigError(f"{problem}, got {self.eval_steps}", key="eval_steps")
        from recipes.demo_eval import decoding_problem

        if not self.decodings:
            raise ConfigError("must name one", key="decodings")
        for decoding in self.decodings:
            if problem := decoding_problem(decoding):
                raise ConfigError(problem, key="decodings")


def main(argv: list[str] | None = None) -> dict:
    args = parse_cli(Args, argv, prog="benchmarks/s2st_ablation.py")
    if args.tiny:
        args.size, args.seeds, args.steps, args.examples = "tiny", args.seeds[:1], 4, 1

    import torch

    from recipes.demo import SIZES, prepare_data, scored_examples
    from sts.io import write_json_atomic

    if args.threads:  # another busy process on the cores slows torch's default threading many times over
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    steps = args.steps or size["steps"]
    if problem := eval_steps_problem(args.eval_steps, steps):  # the size's steps, known only now
        raise SystemExit(f"error: --eval-steps {args.eval_steps}: {problem}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log = print
    data_dir = args.data_dir or args.out_dir / "data"
    train_pairs, corpora, codec_dir, codec = prepare_data(
        data_dir, data_config(data_dir, args.size), size, log
    )
    examples = scored_examples(size, corpora, args.examples)
    data = {
        "data_dir": data_dir,
        "corpora": corpora,
        "codec_dir": codec_dir,
        "codec": codec,
        "texts": [p["ja"] for p in train_pairs] + [p["en"] for p in train_pairs],
        "examples": examples,
    }
    results_path = args.out_dir / "ablation.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    setting = {"size": args.size, "steps": steps, "examples": examples, "tasks": size["tasks"], "lr": size["lr"],
               "hidden": size["hidden"], "layers": size["layers"], "codebook": size["codebook"],
               "codec": str(Path(codec_dir).resolve())}  # fmt: skip
    stored = results.get("_setting", {})
    if changed := [k for k, v in json.loads(json.dumps(setting)).items() if k in stored and stored[k] != v]:
        log(f"{results_path}: scored under another {', '.join(changed)}; starting over")
        results = {}  # another setting: its scores are not comparable
    for pairs in args.train_pairs or [None]:
        for fmt in args.formats:
            for seed in args.seeds:
                arm = Arm(fmt, seed, pairs, steps, tuple(args.decodings), tuple(args.eval_steps))
                done = results.get(arm.key, {}).get(str(seed))
                if covers(done, arm):
                    continue  # done by an earlier run of this command
                results.setdefault(arm.key, {})[str(seed)] = run_one(args.out_dir, data, size, arm, log, done)
                results["_setting"] = setting
                write_json_atomic(results_path, results)  # the resume point: never half written
    rows = table(results)
    curve = curve_rows(results) if args.eval_steps else []
    command = "python benchmarks/s2st_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n{command}  ({time.strftime('%Y-%m-%d')}, setting {json.dumps(setting)})\n")
    print("\n".join(rows + ([""] + curve if curve else [])))
    return {"setting": setting, "results": results, "table": rows, "curve": curve}


if __name__ == "__main__":
    main()
