"""`sts demo`: the whole pipeline on a laptop CPU with real speech, no hub and no GPU.

    sts demo                      # runs/demo, the default size (about 10 minutes on 2 cores)
    sts demo -o runs/demo-tiny --size tiny                       # a minute or two (CI runs this)
    sts demo --model ~/models/LFM2-350M --codec ~/models/xcodec2-hf   # real local checkpoints instead

What it does, with every stage's real code:

1. picks sentence pairs from the bundled set (`sts/data/sentences.tsv`), most for training and a few
   held out;
2. builds a corpus with `corpus_builder` (text pairs, reference MT, the offline TTS: Kokoro for
   Japanese, Piper for English; checked by offline Whisper), for the training and the test pairs;
3. fits the offline codec (`sts.codec.melkmeans`: k-means over log-mel, Griffin-Lim) on the
   training audio, or takes `--codec`, and adds codes to both corpora (`sts-encode`'s code);
4. builds a small LFM2 with a BPE tokenizer trained on the sentences (or takes `--model`) and adds
   the codec's speech tokens (`tokenizer_ext`);
5. trains multitask SFT (`train`) for a fixed number of steps;
6. translates held-out and training sentences in both directions (`infer`);
7. evaluates: ASR-BLEU/chrF++ of the output speech with offline Whisper (`sts.asr`,
   `sts.metrics.asr_bleu`: the SeamlessM4T protocol), speaker similarity (`sts.speaker`),
   the codec round trip on the references, real-time factor; and writes `report.md` (audio links,
   plots) and `report.json`.

The small LM is trained from scratch for minutes on tens of sentences: it can memorize its
training pairs but does not translate unseen sentences. The report says so; it is a pipeline demo,
not a translation model. `--size domain` (recipes/domain.py) is the one that measures translation of
unseen sentences: 800 pairs of a closed domain, every held-out combination scored. Rerunning the
same command reuses the corpus (the builder resumes).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import tyro
from annotated_types import Ge

from corpus_builder.build import BuildConfig, build_corpus
from corpus_builder.encode import EncodeConfig, encode_corpus, recorded_codec
from recipes.corpus_spec import CorpusSpec
from recipes.demo_eval import evaluate_outputs, translate_examples
from recipes.demo_report import write_report
from sts.codec.fit import iter_waveforms
from sts.codec.melkmeans import MelKMeansCodec, is_mel_kmeans_dir
from sts.config import config_to_dict, make_config
from sts.corpus import read_rows
from sts.errors import UsageError
from sts.paths import record_path, same_location
from train.config import TrainConfig

ALL_TASKS = {"s2st": 1.0, "asr": 0.5, "tts": 0.5, "s2tt": 0.25, "t2tt": 0.25}
S2ST_ONLY = {"s2st": 1.0}

# pairs for training and held out; SFT steps, sequence length, learning rate and task weights; LM
# width/depth; codebook size; the s2st format. The default and small sizes are set to reproduce their
# training pairs within their time (text-first s2st; benchmarks/s2st_ablation.py, RESULTS.md).
SIZES: dict[str, dict] = {
    "tiny": dict(train=12, test=4, steps=30, seq_len=512, lr=3e-3, tasks=ALL_TASKS, hidden=64, layers=4,
                 codebook=64, s2st_format="text-first"),
    "small": dict(train=24, test=8, steps=300, seq_len=1024, lr=3e-3, tasks=S2ST_ONLY, hidden=128, layers=4,
                  codebook=256, s2st_format="text-first"),
    "default": dict(train=48, test=8, steps=400, seq_len=1024, lr=3e-3, tasks=S2ST_ONLY, hidden=128, layers=4,
                    codebook=256, s2st_format="text-first"),
    "large": dict(train=288, test=32, steps=3000, seq_len=1024, lr=2e-3, tasks=ALL_TASKS, hidden=256, layers=8,
                  codebook=512, s2st_format="text-first"),
    # the closed domain (recipes/domain.py): held-out combinations, every one of them evaluated
    # decoding: repetition-aware sampling at temperature 0.4, greedy texts (held-out ASR-chrF++ ja->en / en->ja
    # 46.5 / 14.3 vs 38.4 / 9.3 with the package defaults, seeds 0-2; benchmarks/RESULTS.md)
    "domain": dict(domain=True, train=800, test=120, voice_test=40, steps=3000, seq_len=512, lr=3e-3,
                   tasks=ALL_TASKS, hidden=128, layers=4, codebook=512, s2st_format="text-first",
                   batch_size=8, decoding="ras-t0.4"),
}  # fmt: skip


@dataclass
class DemoConfig:
    """Run the whole pipeline offline on a CPU with real Japanese and English speech; write a report."""

    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/demo")
    """Run folder (data, corpus, codec, models, outputs, report.md)."""
    size: Literal["tiny", "small", "default", "large", "domain"] = "default"
    """tiny ~2 min (CI), small ~5 min, default ~10 min, large ~1 h on 2 CPU cores; domain: unseen
    sentences of a closed domain (recipes/domain.py), 85 min on 2 busy cores."""
    model: str = ""
    """A local causal LM to extend and fine-tune instead of the small demo LM (e.g. an LFM2-350M dir)."""
    codec: str = ""
    """A local codec dir (XCodec2, or a fitted offline codec) instead of fitting the offline codec."""
    steps: Annotated[int | None, Ge(1)] = None
    """SFT steps (default: the size's)."""
    s2st_format: Literal["direct", "text-first", "translation-first"] | None = None
    """What the s2st answer writes before its speech (`sts.tasks`); default: the size's, chosen by
    `benchmarks/s2st_ablation.py` (see benchmarks/RESULTS.md)."""
    examples: Annotated[int, Ge(1)] = 4
    """Held-out and training sentences per direction translated for the report."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the sentence split, the models and the training."""

    RENAMED_POSITIONALS: ClassVar[tuple[str, ...]] = ("out_dir",)
    """`sts demo RUN_DIR` (the old form) reads as `--out-dir RUN_DIR`."""


def load_sentences() -> list[dict]:
    """The bundled pairs: dicts with id, category, ja, en."""
    with files("sts.data").joinpath("sentences.tsv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def split_sentences(n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded shuffle, stratified by nothing: the first `n_train` pairs train, the next `n_test` test."""
    pairs = load_sentences()
    if n_train + n_test > len(pairs):
        raise UsageError(f"{n_train} + {n_test} pairs asked, the bundled set has {len(pairs)}")
    random.Random(seed).shuffle(pairs)
    return pairs[:n_train], pairs[n_train : n_train + n_test]


def _write_pairs(folder: Path, name: str, pairs: Sequence[dict]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ja, en = folder / f"{name}.ja", folder / f"{name}.en"
    ja.write_text("".join(p["ja"] + "\n" for p in pairs), encoding="utf-8")
    en.write_text("".join(p["en"] + "\n" for p in pairs), encoding="utf-8")
    return ja, en


def _voice_kwargs(spec: CorpusSpec) -> dict:
    default = CorpusSpec(())
    return {k: getattr(spec, k) for k in ("ja_voice", "en") if getattr(spec, k) != getattr(default, k)}


def build_corpora(out: Path, specs: dict[str, CorpusSpec], log) -> dict[str, Path]:
    """Offline-TTS corpora (ja source, en target), one per spec, under `out/corpus/<name>`."""

    from tqdm import tqdm

    corpora = {}
    for name, spec in specs.items():
        ja, en = _write_pairs(out / "data", name, spec.pairs)
        cfg = BuildConfig(
            out_dir=out / "corpus" / name,
            source="text-pairs",
            path=str(ja),
            tgt_path=str(en),
            folder_lang="ja",
            mt="reference",
            tts="offline",
            # only what differs from the default voices: a folder built before voices were chosen resumes
            tts_kwargs=json.dumps(_voice_kwargs(spec)),
            checks=list(spec.checks),
            max_asr_error=0.5,
            min_duration=0.0,
            rows_per_shard=64,
            batch_size=16,
            wait_for_lock=True,  # ablations sharing one --data-dir: wait for the one building, then resume
        )
        with tqdm(total=len(spec.pairs), desc=f"   {name} corpus", unit="pair", leave=False) as bar:
            for chunk in build_corpus(cfg, argv=["sts demo"], on_outcome=lambda _: bar.update(1)):
                if chunk.skipped:  # built by an earlier run of the same command
                    bar.update(chunk.stats["input_rows"])
        card = json.loads((cfg.out_dir / "corpus.json").read_text())
        log(f"   {name}: {card['rows']}/{card['input_rows']} pairs kept, dropped: {card['drops'] or 'none'}")
        corpora[name] = cfg.out_dir
    return corpora


def fit_codec(out: Path, corpus: Path, codebook_size: int, seed: int):

    codec = MelKMeansCodec.fit(list(iter_waveforms([corpus])), codebook_size=codebook_size, seed=seed)
    codec.save(out / "codec")
    return out / "codec"


def build_lm(out: Path, cfg: DemoConfig, size: dict, codec_dir: Path, codebook_size: int, texts) -> Path:
    """The LM to train: `--model` or a small LFM2 with a BPE on `texts`, extended with the speech tokens."""
    from sts.testing import save_tiny_lfm2
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    base = cfg.model
    if not base:
        base = str(
            save_tiny_lfm2(
                out / "models" / "demo-lfm2",
                seed=cfg.seed,
                texts=list(texts),
                tokenizer_vocab_size=1024,
                extra_vocab_rows=0,
                hidden_size=size["hidden"],
                intermediate_size=size["hidden"] * 2,
                num_hidden_layers=size["layers"],
                num_attention_heads=4,
                num_key_value_heads=2,
                layer_types=["conv" if i % 2 == 0 else "full_attention" for i in range(size["layers"])],
            )
        )
    lm_dir = out / "models" / "demo-lfm2-speech"
    extend_tokenizer(
        ExtendConfig(base, lm_dir, num_speech_tokens=codebook_size, codec=str(codec_dir), overwrite=True)
    )
    return lm_dir


def prepare_data(out: Path, cfg: DemoConfig, size: dict, log=print):
    """Steps 1-2: the offline-TTS corpora (reused by a rerun) and the codec, corpora encoded with it.

    Returns (train pairs, corpora {"train", "test"[, "test-voice"]}, codec dir, codec).
    """
    from sts.codec import load_codec

    if size.get("domain"):
        from recipes.domain import domain_specs

        specs = domain_specs(size, cfg.seed, log)
    else:
        train_pairs, test_pairs = split_sentences(size["train"], size["test"], cfg.seed)
        specs = {"train": CorpusSpec(train_pairs), "test": CorpusSpec(test_pairs)}
    held_out = " + ".join(f"{len(s.pairs)} {name}" for name, s in specs.items() if name != "train")
    log(f"1/7 corpus: {len(specs['train'].pairs)} training + {held_out} held-out pairs, offline TTS")
    corpora = build_corpora(out, specs, log)
    train_pairs = specs["train"].pairs
    codebook = size["codebook"]
    fitted = False
    if cfg.codec:
        codec_dir = Path(cfg.codec)
        log(f"2/7 codec: {codec_dir} (given)")
    elif is_mel_kmeans_dir(out / "codec") and load_codec(out / "codec").codebook_size == codebook:
        codec_dir = out / "codec"
        log(f"2/7 codec: {codec_dir} (fitted by an earlier run of this command)")
    else:
        log(f"2/7 codec: fitting the offline codec ({codebook} codes) on the training audio")
        codec_dir, fitted = fit_codec(out, corpora["train"], codebook, cfg.seed), True
    codec = load_codec(codec_dir)
    for corpus in corpora.values():
        # A codec fitted now, or another one, replaces the codes: a refit k-means need not give the
        # same codes, and stale codes would teach the model ids that inference never produces.
        recorded = recorded_codec(corpus)
        reencode = fitted or (recorded is not None and not same_location(recorded, codec.name))
        list(encode_corpus(EncodeConfig(corpus, codec=str(codec_dir), reencode=reencode), codec=codec))
    return train_pairs, corpora, codec_dir, codec


def scored_examples(size: dict, corpora: dict[str, Path], n: int) -> int | dict[str, int]:
    """What `translate_examples` translates: `n` held-out and `n` training rows, or for the domain every
    held-out row of each held-out corpus and `n` training ones to compare."""
    if not size.get("domain"):
        return n
    counts = {name: len(read_rows(path, columns=["id"])) for name, path in corpora.items() if name != "train"}
    return counts | {"train": n}


def train_sft(
    lm_dir: Path,
    train_dir: Path,
    corpus: Path | Sequence[Path],
    size: dict,
    *,
    steps: int,
    s2st_format: str,
    seed: int,
    save_every: int | None = None,
):
    """Step 4: multitask SFT of `lm_dir` on `corpus` (a corpus folder, or shard files) with the
    size's tasks; returns the last checkpoint. `save_every`: also keep a checkpoint every that many
    steps (a learning curve against steps)."""
    from train.trainer import train

    if train_dir.exists():
        shutil.rmtree(train_dir)  # the LM was rebuilt: an old checkpoint would not match it
    train_cfg = make_config(
        TrainConfig,
        model=str(lm_dir),
        out_dir=train_dir,
        stage="sft",
        seed=seed,
        data__shards=[str(corpus)] if isinstance(corpus, (str, Path)) else [str(c) for c in corpus],
        data__seq_len=size["seq_len"],
        data__eval_fraction=0.0,
        sft__task_weights=dict(size["tasks"]),
        sft__s2st_format=s2st_format,
        optim__batch_size=size.get("batch_size", 4),
        optim__max_steps=steps,
        optim__lr=size["lr"],
        optim__warmup_steps=max(1, steps // 20),
        eval__every=0,
        eval__generate=False,
        log__every=max(1, steps // 20),
        log__save_every=save_every or steps,
        log__keep_last=0 if save_every else 1,
        log__logger="none",
    )
    return train(train_cfg)


def run_demo(cfg: DemoConfig, log=print) -> dict:
    """Run every step into `cfg.out_dir`; returns the report (also written as report.json / report.md)."""
    import torch

    size = SIZES[cfg.size]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def step(name: str):
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)

    train_pairs, corpora, codec_dir, codec = prepare_data(out, cfg, size, log)
    step("corpus + codec")

    log("3/7 LM: " + (f"extending {cfg.model}" if cfg.model else f"a small LFM2 (hidden {size['hidden']})"))
    texts = [p["ja"] for p in train_pairs] + [p["en"] for p in train_pairs]
    lm_dir = build_lm(out, cfg, size, codec_dir, codec.codebook_size, texts)
    step("lm")

    steps = cfg.steps or size["steps"]
    s2st_format = cfg.s2st_format or size["s2st_format"]
    tasks = ", ".join(f"{t} {w:g}" for t, w in size["tasks"].items())
    log(f"4/7 SFT: {steps} steps, s2st {s2st_format} (both ways); task weights {tasks}")
    checkpoint = train_sft(
        lm_dir, out / "train", corpora["train"], size, steps=steps, s2st_format=s2st_format, seed=cfg.seed
    )
    step("train")

    log("5/7 translating held-out and training sentences, both directions")
    examples = scored_examples(size, corpora, cfg.examples)
    decoding = size.get("decoding", "default")
    outputs, rtf = translate_examples(
        out, checkpoint, codec_dir, corpora, examples, decoding=decoding, seed=cfg.seed
    )
    step("translate")

    log("6/7 evaluating with offline Whisper and resemblyzer")
    evaluation = evaluate_outputs(out, outputs, codec, corpora["test"]) | {"rtf": round(rtf, 3)}
    step("evaluate")

    log("7/7 writing the report")
    report = {
        "config": config_to_dict(cfg),  # path options absolute (sts.paths)
        "size": size,
        "steps": steps,
        "s2st_format": s2st_format,
        "decoding": decoding,
        "corpus": {name: json.loads((c / "corpus.json").read_text()) for name, c in corpora.items()},
        # paths relative to this report's folder (absolute when outside it): found from anywhere
        "codec": {
            "dir": record_path(codec_dir, out),
            "type": type(codec).__name__,
            "codebook_size": codec.codebook_size,
        },
        "model": record_path(lm_dir, out),
        "checkpoint": record_path(checkpoint, out),
        "losses": read_losses(out / "train"),
        "outputs": outputs,
        "evaluation": evaluation,
        "timings_s": timings,
    }
    for name in ("train", "test"):  # keep the card's headline numbers only
        card = report["corpus"][name]
        report["corpus"][name] = {k: card[k] for k in ("input_rows", "rows", "drops", "directions")}
    timings["total"] = round(time.perf_counter() - started, 1)
    write_report(out, report)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=float) + "\n")
    log(f"done in {timings['total']:.0f} s: {out / 'report.md'}")
    return report


def read_losses(train_dir: Path) -> list[dict]:
    path = train_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
