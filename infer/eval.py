"""`sts-eval`: score a checkpoint on a test manifest; writes a JSON report, per-utterance rows and a plot.

    sts-eval test.jsonl --model runs/sft -o reports/sft --tasks s2st s2tt asr tts

The manifest is JSONL, one utterance per line (paths relative to the manifest):

    {"id": "u1", "audio": "ja/u1.wav", "src_lang": "ja", "tgt_lang": "en",
     "src_text": "駅はどこですか", "tgt_text": "Where is the station?", "tgt_audio": "en/u1.wav"}

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

ASR (`--asr`): `auto` is `sts.asr` (faster-whisper with the offline Whisper base where installed,
else a Hugging Face Whisper id), greedy at temperature 0 as the protocol decodes, silence -> "";
`self` is the checkpoint's own `asr` task; `none` skips ASR-based scores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from sts.audio import load_audio, write_audio
from sts.errors import ManifestError, UsageError, cli_main
from sts.io import remove_stale_temps, write_text_atomic
from sts.manifest import Field
from sts.manifest import read_manifest as read_manifest_rows
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
from sts.paths import absolute_if_local
from sts.speaker import ENCODER as SPEAKER_ENCODER
from sts.tasks import TaskName, task_spec


@dataclass
class EvalItem:
    """One manifest row."""

    id: str
    src_lang: str
    tgt_lang: str
    audio: Path | None = None
    """Source speech."""
    src_text: str | None = None
    tgt_text: str | None = None
    tgt_audio: Path | None = None
    """Reference target speech (used by `codec_roundtrip`)."""


MANIFEST_FIELDS = {
    "id": Field("id"),
    "src_lang": Field("lang", required=True),
    "tgt_lang": Field("lang"),
    "audio": Field("path", exists=True),
    "tgt_audio": Field("path", exists=True),
    "src_text": Field("str"),
    "tgt_text": Field("str"),
}
"""The test manifest's fields (`sts.manifest`): each line checked before the model loads."""


def read_manifest(path: str | Path) -> list[EvalItem]:
    """Rows of a JSONL test manifest; audio paths resolved against the manifest's folder.

    Raises `sts.errors.ManifestError` (`FILE:LINE: problem`) for a line that is not a JSON object, a
    field of the wrong type, a language outside ja/en, an audio file that is not there, an id that
    is not a plain file name (generated audio is written as `audio/TASK/ID.wav`) or that an earlier
    line already has.
    """
    from infer.batch import check_output_id

    path = Path(path)
    items, lines = [], {}
    for row in read_manifest_rows(path, MANIFEST_FIELDS):
        values = row.values
        item_id = values["id"] or f"{row.line:06d}"
        try:
            check_output_id(item_id, f"{path}:{row.line}")
        except UsageError as err:
            raise ManifestError(path, row.line, str(err).split(": ", 1)[1]) from err
        if item_id in lines:
            raise ManifestError(path, row.line, f"id {item_id!r} is also the id of line {lines[item_id]}")
        lines[item_id] = row.line
        tgt_lang = values["tgt_lang"] or ("en" if values["src_lang"] == "ja" else "ja")
        known = EvalItem.__dataclass_fields__
        fields = {k: v for k, v in values.items() if k in known and k not in ("id", "tgt_lang")}
        items.append(EvalItem(id=item_id, tgt_lang=tgt_lang, **fields))
    return items


def _task_input(item: EvalItem, task: str):
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
        request = Request(task, item.src_lang, tgt, wav=load_audio(item.audio), id=item.id)
    else:
        request = Request(task, item.src_lang, tgt, text=item.src_text, id=item.id)
    return request, ref, tgt


def evaluate_task(
    translator, items: Sequence[EvalItem], task: str, *, asr=None, speaker=None, audio_dir=None
):
    """Run one task over the items that support it; returns (summary dict, per-utterance rows).

    The summary counts the outputs per rule that cut them (`cut_by`: none, budget, and each loop rule).
    """
    from infer.translate import CUT_RULES

    spec = task_spec(task)
    inputs = [x for x in (_task_input(item, task) for item in items) if x is not None]
    if not inputs:
        return {"n": 0, "skipped": "no manifest row has the fields this task needs"}, []
    started = time.perf_counter()
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

    summary: dict = {"n": len(rows), "wall_seconds": round(elapsed, 3)}
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
    seconds = sum(r.get("source_seconds" if spec.input == "speech" else "output_seconds", 0.0) for r in rows)
    summary["rtf"] = round(elapsed / seconds, 4) if seconds else None
    summary["loops"] = sum(r["cut"] in CUT_RULES[2:] for r in rows)
    summary["unfinished"] = sum(not r["finished"] for r in rows)
    summary["cut_by"] = {rule: sum(r["cut"] == rule for r in rows) for rule in CUT_RULES}
    chain = _chain_scores(items, results, rows)
    if chain:
        summary["chain"] = chain
    return summary, rows


def _chain_scores(items: Sequence[EvalItem], results, rows: list[dict]) -> dict:
    """A text-first / translation-first s2st answer's own texts, scored as text: the translation it
    wrote before its speech (raw-text BLEU/chrF++ against `tgt_text`: the s2tt quality of the chain)
    and its transcript (CER/WER against `src_text`). {} when the outputs hold no such texts."""
    by_id = {item.id: item for item in items}
    out: dict = {}
    for field, ref_field, lang_field in (
        ("translation", "tgt_text", "tgt_lang"),
        ("transcript", "src_text", "src_lang"),
    ):
        pairs: dict[str, list[tuple[str, str]]] = {}
        for row, result in zip(rows, results, strict=True):
            text, item = getattr(result, field), by_id.get(row["id"])
            if text is None or item is None or not getattr(item, ref_field):
                continue
            row[field] = text
            pairs.setdefault(getattr(item, lang_field), []).append((text, getattr(item, ref_field)))
        for lang, group in sorted(pairs.items()):
            hyps, refs = [h for h, _ in group], [r for _, r in group]
            if field == "translation":
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


def codec_roundtrip(codec, items: Sequence[EvalItem], asr) -> dict:
    """ASR error of the reference audio as is and after codec encode->decode, per language."""
    pairs = [(load_audio(i.audio), i.src_text, i.src_lang) for i in items if i.audio and i.src_text]
    pairs += [(load_audio(i.tgt_audio), i.tgt_text, i.tgt_lang) for i in items if i.tgt_audio and i.tgt_text]
    if not pairs:
        return {"n": 0, "skipped": "no reference audio with its text"}
    out: dict = {"asr": asr.name}
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


def plot_report(rows: list[dict], path: Path) -> Path | None:
    """Per task, the per-utterance chrF++ (translation) or CER (asr/tts) as a histogram; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tasks = sorted({r["task"] for r in rows if r.get("hyp") is not None})
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        key = "chrf++" if task_spec(task).translates else "cer"
        ax.hist([r[key] for r in rows if r["task"] == task and key in r], bins=20)
        ax.set_title(f"{task}: per-utterance {key}")
        ax.set_xlabel(key)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclass
class EvalConfig:
    """Score an sts checkpoint on a JSONL test manifest."""

    manifest: tyro.conf.Positional[Path]
    """JSONL test manifest (see `infer.eval`)."""
    model: str = "runs/sft"
    """Checkpoint directory or Hugging Face id (with `sts_vocab.json`)."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("reports/eval")
    """Folder for report.json, rows.jsonl, report.png and the generated audio."""
    tasks: tuple[TaskName, ...] = ("s2st",)
    """Tasks to score; each uses the manifest rows that have the fields it needs."""
    codec: str | None = None
    """Codec id/path; default: the one `sts_vocab.json` records."""
    asr: str = "auto"
    """auto | self | none | a faster-whisper model name/dir."""
    codec_roundtrip: bool = True
    """Score the reference audio before and after a codec round trip (needs ASR)."""
    speaker_similarity: bool = True
    """Source<->output speaker similarity for s2st (needs resemblyzer)."""
    backend: Literal["transformers", "vllm"] = "transformers"
    """Generation engine; vllm needs the GPU extra."""
    device: str = "auto"
    """"auto": cuda when available, else cpu."""
    dtype: str = "auto"
    """"auto": bfloat16 on cuda, float32 on cpu."""
    fast: bool | None = None
    """Static KV cache + CUDA graphs (transformers backend); default: on for cuda."""
    batch_size: int = 8
    """Inputs generated together."""
    greedy: bool = True
    """Greedy decoding for every task (reproducible scores); --no-greedy samples with the task defaults."""
    limit: int | None = None
    """Only the first N manifest rows."""
    max_new_tokens: int | None = None
    """Hard cap on every output's length, on top of the per-input budget (quick smoke runs)."""
    seed: int = 0
    """Sampling seed (with --no-greedy)."""


def run(cfg: EvalConfig, log=print) -> dict:
    """Evaluate, write report.json / rows.jsonl / report.png into `cfg.output`; returns the report."""
    from infer.batch import check_writable_folder
    from infer.cli import load_translator

    items = read_manifest(cfg.manifest)[: cfg.limit]
    check_writable_folder(cfg.output)  # before the model loads
    audio = cfg.output / "audio"
    for folder in [cfg.output, audio, *(sorted(audio.iterdir()) if audio.is_dir() else [])]:
        remove_stale_temps(folder)  # what a killed evaluation left half-written (gone writers only)
    translator = load_translator(
        cfg.model,
        codec=cfg.codec,
        device=cfg.device,
        dtype=cfg.dtype,
        backend=cfg.backend,
        fast=cfg.fast,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        greedy=cfg.greedy,
        max_new_tokens=cfg.max_new_tokens,
    )
    asr = _load_asr(cfg.asr, translator, log)
    speaker = _load_speaker(log) if cfg.speaker_similarity else None
    report: dict = {  # recorded paths absolute: they resolve from anywhere (sts.paths)
        "model": absolute_if_local(cfg.model),
        "manifest": absolute_if_local(str(cfg.manifest)),
        "items": len(items),
        "tasks": {},
    }
    rows: list[dict] = []
    for task in cfg.tasks:
        log(f"{task}: generating")
        summary, task_rows = evaluate_task(
            translator, items, task, asr=asr, speaker=speaker, audio_dir=cfg.output / "audio"
        )
        report["tasks"][task] = summary
        rows += task_rows
        log(f"{task}: {_headline(summary)}")
    if cfg.codec_roundtrip and asr is not None:
        report["codec_roundtrip"] = codec_roundtrip(translator.codec, items, asr)
    cfg.output.mkdir(parents=True, exist_ok=True)
    _write(cfg.output / "rows.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    plot = plot_report(rows, cfg.output / "report.png")
    report["plot"] = str(plot) if plot else None
    _write(cfg.output / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {cfg.output / 'report.json'}")
    return report


def _headline(summary: dict) -> str:
    """One log line: each score with its protocol and signature, then the counts."""
    parts = [f"n={summary['n']}"]
    for key, value in summary.items():
        if key.startswith("to_"):
            for score in [*value["bleu"].values(), value["chrf++"]]:
                if "score" in score:
                    parts.append(f"[{key}] {score['protocol']} {score['score']} ({score['signature']})")
        elif key in ("ja", "en"):
            parts.append(
                f"CER[{key}] {value['cer']}" + (f" WER {value['wer']}" if value["wer"] is not None else "")
            )
    for key in ("rtf", "loops", "unfinished", "speaker_similarity", "skipped"):
        if summary.get(key) is not None:
            parts.append(f"{key}={summary[key]}")
    for key, value in summary.get("chain", {}).get("translation", {}).items():
        parts.append(f"chain translation[{key}] chrF++ {value['chrf++'].get('score')} (raw text)")
    for key, value in summary.get("chain", {}).get("transcript", {}).items():
        parts.append(f"chain transcript CER[{key}] {value['cer']}")
    cut = {rule: n for rule, n in summary.get("cut_by", {}).items() if n and rule != "none"}
    if cut:
        parts.append("cut by " + " ".join(f"{rule}={n}" for rule, n in cut.items()))
    return ", ".join(parts)


def _load_asr(name: str, translator, log):
    from infer.self_asr import CheckpointASR
    from sts.asr import default_asr

    if name == "none":
        return None
    if name == "self":
        return CheckpointASR(translator)
    try:
        return default_asr(None if name == "auto" else name, beam_size=1)  # the protocol: greedy
    except (ImportError, OSError, ValueError) as err:
        log(
            f"warning: no ASR ({err}); ASR-based scores are skipped (install faster-whisper or use --asr self)"
        )
        return None


def _load_speaker(log):
    from sts.speaker import SpeakerEncoder

    try:
        return SpeakerEncoder()
    except ImportError as err:
        log(f"warning: no speaker encoder ({err}); speaker similarity is skipped (install resemblyzer)")
        return None


def _write(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main("sts-eval", _main, argv)


def _main(args: list[str]) -> int:
    from sts.config import parse_cli

    run(parse_cli(EvalConfig, args, prog="sts-eval"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
