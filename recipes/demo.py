"""`sts demo`: the whole pipeline on a laptop CPU with real speech, no hub and no GPU.

    sts demo                      # runs/demo, the default size (about 10 minutes on 2 cores)
    sts demo runs/demo-tiny --size tiny                       # a minute or two (CI runs this)
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

The small LM is trained from scratch for minutes on a few hundred utterances: it can memorize its
training pairs but does not translate unseen sentences. The report says so; it is a pipeline demo,
not a translation model. Rerunning the same command reuses the corpus (the builder resumes).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from sts.audio import load_audio, write_audio
from sts.corpus import read_rows
from sts.errors import UsageError

# pairs for training, pairs held out, SFT steps, sequence length, LM width/depth, codebook size
SIZES: dict[str, dict] = {
    "tiny": dict(train=12, test=4, steps=30, seq_len=512, hidden=64, layers=4, codebook=64),
    "small": dict(train=48, test=8, steps=150, seq_len=1024, hidden=128, layers=4, codebook=128),
    "default": dict(train=48, test=8, steps=240, seq_len=1024, hidden=192, layers=6, codebook=256),
    "large": dict(train=288, test=32, steps=2000, seq_len=1024, hidden=256, layers=8, codebook=512),
}


@dataclass
class DemoConfig:
    """Run the whole pipeline offline on a CPU with real Japanese and English speech; write a report."""

    out_dir: tyro.conf.Positional[Path] = Path("runs/demo")
    """Run folder (data, corpus, codec, models, outputs, report.md)."""
    size: Literal["tiny", "small", "default", "large"] = "default"
    """tiny ~2 min (CI), small ~5 min, default ~10 min, large ~1 h on 2 CPU cores."""
    model: str = ""
    """A local causal LM to extend and fine-tune instead of the small demo LM (e.g. an LFM2-350M dir)."""
    codec: str = ""
    """A local codec dir (XCodec2, or a fitted offline codec) instead of fitting the offline codec."""
    steps: int | None = None
    """SFT steps (default: the size's)."""
    examples: int = 4
    """Held-out and training sentences per direction translated for the report."""
    seed: int = 0


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


def build_corpora(out: Path, train_pairs, test_pairs, log) -> dict[str, Path]:
    """Offline-TTS corpora (ja source, en target) for the training and the test pairs."""
    from corpus_builder.build import BuildConfig, build_corpus

    corpora = {}
    for name, pairs in (("train", train_pairs), ("test", test_pairs)):
        ja, en = _write_pairs(out / "data", name, pairs)
        cfg = BuildConfig(
            out_dir=out / "corpus" / name,
            source="text-pairs",
            path=str(ja),
            tgt_path=str(en),
            folder_lang="ja",
            mt="reference",
            tts="offline",
            checks=["default"],
            max_asr_error=0.5,
            min_duration=0.0,
            rows_per_shard=64,
            batch_size=16,
        )
        from tqdm import tqdm

        with tqdm(total=len(pairs), desc=f"   {name} corpus", unit="pair", leave=False) as bar:
            for chunk in build_corpus(cfg, argv=["sts demo"], on_outcome=lambda _: bar.update(1)):
                if chunk.skipped:  # built by an earlier run of the same command
                    bar.update(chunk.stats["input_rows"])
        card = json.loads((cfg.out_dir / "corpus.json").read_text())
        log(f"   {name}: {card['rows']}/{card['input_rows']} pairs kept, dropped: {card['drops'] or 'none'}")
        corpora[name] = cfg.out_dir
    return corpora


def fit_codec(out: Path, corpus: Path, codebook_size: int, seed: int):
    from sts.codec.melkmeans import MelKMeansCodec
    from sts.fit_codec import iter_waveforms

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


def run_demo(cfg: DemoConfig, log=print) -> dict:
    """Run every step into `cfg.out_dir`; returns the report (also written as report.json / report.md)."""
    import torch

    from corpus_builder.encode import EncodeConfig, encode_corpus, recorded_codec
    from recipes.demo_report import write_report
    from sts.codec import load_codec
    from sts.codec.melkmeans import is_mel_kmeans_dir
    from train.config import TrainConfig
    from train.trainer import train

    size = SIZES[cfg.size]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def step(name: str):
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)

    train_pairs, test_pairs = split_sentences(size["train"], size["test"], cfg.seed)
    log(
        f"1/7 corpus: {len(train_pairs)} training + {len(test_pairs)} held-out pairs, offline TTS + Whisper check"
    )
    corpora = build_corpora(out, train_pairs, test_pairs, log)
    step("corpus")

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
        reencode = fitted or recorded_codec(corpus) not in (None, codec.name)
        list(encode_corpus(EncodeConfig(corpus, codec=str(codec_dir), reencode=reencode), codec=codec))
    step("codec")

    log("3/7 LM: " + (f"extending {cfg.model}" if cfg.model else f"a small LFM2 (hidden {size['hidden']})"))
    texts = [p["ja"] for p in train_pairs] + [p["en"] for p in train_pairs]
    lm_dir = build_lm(out, cfg, size, codec_dir, codec.codebook_size, texts)
    step("lm")

    steps = cfg.steps or size["steps"]
    log(f"4/7 SFT: {steps} steps, tasks s2st (both ways), asr, tts, s2tt, t2tt")
    train_dir = out / "train"
    if train_dir.exists():
        shutil.rmtree(train_dir)  # the LM was rebuilt: an old checkpoint would not match it
    train_cfg = TrainConfig(
        model=str(lm_dir),
        out_dir=train_dir,
        stage="sft",
        shards=[str(corpora["train"])],
        seq_len=size["seq_len"],
        batch_size=4,
        max_steps=steps,
        lr=3e-3,
        warmup_steps=max(1, steps // 20),
        eval_fraction=0.0,
        eval_every=0,
        log_every=max(1, steps // 20),
        save_every=steps,
        keep_last=1,
        logger="none",
        seed=cfg.seed,
    )
    checkpoint = train(train_cfg)
    step("train")

    log("5/7 translating held-out and training sentences, both directions")
    outputs, rtf = translate_examples(out, checkpoint, codec_dir, corpora, cfg.examples)
    step("translate")

    log("6/7 evaluating with offline Whisper and resemblyzer")
    evaluation = evaluate_outputs(out, outputs, codec, corpora["test"]) | {"rtf": round(rtf, 3)}
    step("evaluate")

    log("7/7 writing the report")
    report = {
        "config": {**asdict(cfg), "out_dir": str(cfg.out_dir)},
        "size": size,
        "steps": steps,
        "corpus": {name: json.loads((c / "corpus.json").read_text()) for name, c in corpora.items()},
        "codec": {"dir": str(codec_dir), "type": type(codec).__name__, "codebook_size": codec.codebook_size},
        "model": str(lm_dir),
        "checkpoint": str(checkpoint),
        "losses": read_losses(train_dir),
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


def translate_examples(
    out: Path, checkpoint, codec_dir: Path, corpora: dict[str, Path], n: int
) -> tuple[list[dict], float]:
    """s2st ja->en and en->ja on `n` held-out and `n` training rows; writes wavs.

    Returns one dict per output and the real-time factor of the whole batch (wall time / source audio).
    """
    from infer import Request, Translator

    translator = Translator.from_checkpoint(checkpoint, codec=str(codec_dir))
    items, requests = [], []
    for split in ("test", "train"):
        for row in read_rows(corpora[split])[:n]:
            for src, tgt in (("ja", "en"), ("en", "ja")):
                side = "src" if src == row["src_lang"] else "tgt"
                other = "tgt" if side == "src" else "src"
                items.append(
                    {
                        "split": split,
                        "id": f"{row['id']}-{src}{tgt}",
                        "src_lang": src,
                        "tgt_lang": tgt,
                        "source_text": row[f"{side}_text"],
                        "reference_text": row[f"{other}_text"],
                    }
                )
                requests.append(Request("s2st", src, tgt, wav=load_audio(row[f"{side}_audio"]["bytes"])))
    started = time.perf_counter()
    results = translator.run(requests)
    seconds = time.perf_counter() - started
    audio_dir = out / "outputs"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for item, request, result in zip(items, requests, results, strict=True):
        src_path, out_path = audio_dir / f"{item['id']}.source.wav", audio_dir / f"{item['id']}.output.wav"
        write_audio(src_path, request.wav)  # decoded once, for the request
        waveform = result.waveform if result.waveform is not None else np.zeros(0, np.float32)
        if len(waveform):
            write_audio(out_path, waveform)
        item.update(
            source_wav=str(src_path.relative_to(out)),
            output_wav=str(out_path.relative_to(out)) if len(waveform) else None,
            output_seconds=len(waveform) / 16000,
            source_seconds=result.source_seconds,
            finished=result.finished,
            warnings=list(result.warnings),
        )
    total_audio = sum(i["source_seconds"] for i in items) or 1.0
    return items, seconds / total_audio


def evaluate_outputs(out: Path, items: list[dict], codec, test_corpus: Path) -> dict:
    """ASR-BLEU / ASR-chrF++ of the outputs, speaker similarity source->output, codec round trip of references.

    The same functions as `sts-eval`: `sts.asr` (offline Whisper, greedy, silence -> ""),
    `sts.metrics.asr_bleu` (the SeamlessM4T protocol: normalized, lowercased, `char` for Japanese)
    and `sts.speaker`. Adds `asr_text` (and `speaker_similarity`) to each item. Without
    faster-whisper there is no ASR and the result says so.
    """
    from sts.asr import FasterWhisperASR
    from sts.metrics import asr_bleu, asr_error
    from sts.speaker import ENCODER, SpeakerEncoder

    try:
        asr = FasterWhisperASR(compute_type="int8", beam_size=1)  # the protocol's greedy decoding
    except ImportError:
        asr = None
    try:
        speaker = SpeakerEncoder()
    except ImportError:
        speaker = None
    result: dict = {"asr": asr is not None, "speaker_encoder": ENCODER if speaker is not None else None}
    if asr is None:
        result["note"] = "faster-whisper is not installed: no ASR-based scores (install the offline extra)"
        return result
    for item in items:
        wav = load_audio(out / item["output_wav"]) if item["output_wav"] else np.zeros(0, np.float32)
        item["asr_text"] = asr.transcribe([wav], item["tgt_lang"])[0]
    groups: dict[str, dict] = {}
    for split in ("test", "train"):
        for src, tgt in (("ja", "en"), ("en", "ja")):
            chosen = [i for i in items if i["split"] == split and i["src_lang"] == src]
            if not chosen:
                continue
            hyps, refs = [i["asr_text"] for i in chosen], [i["reference_text"] for i in chosen]
            scores = asr_bleu(hyps, refs, tgt)
            groups[f"{split} {src}->{tgt}"] = {
                "n": len(chosen),
                "scores": {s.name: round(s.score, 2) for s in scores},
                "signatures": {s.name: s.signature for s in scores},
                "protocols": {s.name: s.protocol for s in scores},
                "asr_error_vs_reference": round(
                    float(np.mean([asr_error(r, h, tgt) for r, h in zip(refs, hyps, strict=True)])), 3
                ),
            }
    result["asr_bleu"] = groups
    if speaker is not None:
        sims = []
        for item in items:
            if item["output_wav"] and item["output_seconds"] > 0.5:
                sim = speaker.similarity(
                    load_audio(out / item["source_wav"]), load_audio(out / item["output_wav"])
                )
                if sim is not None:
                    item["speaker_similarity"] = round(sim, 3)
                    sims.append(item["speaker_similarity"])
        result["speaker_similarity_mean"] = round(float(np.mean(sims)), 3) if sims else None
    # What the codec alone costs: ASR error of the test references before and after a round trip.
    rows = read_rows(test_corpus)
    round_trip = {}
    for lang, side in (("ja", "src"), ("en", "tgt")):
        refs = [load_audio(r[f"{side}_audio"]["bytes"]) for r in rows]
        texts = [r[f"{side}_text"] for r in rows]
        decoded = codec.decode(codec.encode(refs))

        def error(waveforms, lang=lang, texts=texts):
            heard = asr.transcribe(list(waveforms), lang)
            return round(
                float(np.mean([asr_error(t, h, lang) for t, h in zip(texts, heard, strict=True)])), 3
            )

        round_trip[lang] = {
            "metric": "CER" if lang == "ja" else "WER",
            "reference_audio": error(refs),
            "codec_round_trip": error(decoded),
        }
    result["codec_round_trip"] = round_trip
    return result


def read_losses(train_dir: Path) -> list[dict]:
    path = train_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(args: Sequence[str] | None = None) -> int:
    from sts.errors import cli_main

    return cli_main("sts demo", _main, args)


def _main(args: list[str]) -> int:
    from sts.config import parse_cli

    run_demo(parse_cli(DemoConfig, args, prog="sts demo"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
