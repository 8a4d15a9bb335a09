"""`sts-eval`'s summary: one row per task and target language that says what was measured, by which
protocol and ASR model, and whether it can stand next to published numbers.

    rows = summary_rows(report)            # report.json's "summary"
    summary_markdown(rows)                 # summary.md: the same as a table

A row is comparable with published numbers (SeamlessM4T's protocol, `sts.metrics`) when it was
scored on a whole standard test set (not a manifest, not cut by `--max-items`) and, for speech
output, transcribed by the Whisper checkpoint SeamlessM4T's ASR-BLEU uses for the target language
(`sts.asr.SEAMLESS_WHISPER`: large-v2 for Japanese, medium.en for English). Otherwise `comparable`
is false and `not_comparable` says why, e.g. the offline default Whisper base.
"""

from __future__ import annotations

from pathlib import Path

from sts.asr import SEAMLESS_WHISPER, matches_seamless
from sts.metrics import headline_tokenizer
from sts.tasks import task_spec


def asr_report(asr, langs) -> dict | None:
    """{"name", "models": {lang: model}, "seamless_models": {...}, "matches_seamless": {lang: bool}}."""
    if asr is None:
        return None
    models = {lang: asr.model_for(lang) for lang in sorted(langs)}
    own = asr.name.startswith("sts-checkpoint")
    return {
        "name": asr.name,
        "models": models,
        "seamless_models": {lang: SEAMLESS_WHISPER.get(lang) for lang in models},
        "matches_seamless": {lang: (not own) and matches_seamless(m, lang) for lang, m in models.items()},
    }


def _why_not(report: dict, task: str, lang: str) -> list[str]:
    reasons = []
    test = report.get("test_set")
    if test is None:
        reasons.append("a manifest, not a standard test set")
    elif report.get("max_items") is not None and test["items"] >= report["max_items"]:
        reasons.append(f"the first {report['max_items']} items only (--max-items)")
    if task_spec(task).output == "speech":
        asr = report.get("asr")
        if asr is None:
            reasons.append("no ASR")
        elif not asr["matches_seamless"].get(lang):
            reasons.append(
                f"transcribed by {asr['models'].get(lang)}, not Whisper {SEAMLESS_WHISPER.get(lang)} "
                "(the checkpoint SeamlessM4T's ASR-BLEU uses for this language)"
            )
    return reasons


def summary_rows(report: dict) -> list[dict]:
    """One row per (task, target language) with a score; see the module docstring."""
    test = report.get("test_set") or {}
    rows = []
    for task, summary in report["tasks"].items():
        speech = task_spec(task).output == "speech"
        for key, block in summary.items():
            if key.startswith("to_"):
                lang = key.removeprefix("to_")
                bleu = block["bleu"][headline_tokenizer(lang)]
                metric = "ASR-BLEU" if speech else "BLEU"
                score, extra = (
                    bleu["score"],
                    {"chrf++": block["chrf++"]["score"], "signature": bleu["signature"]},
                )
                protocol = bleu["protocol"]
            elif key in ("ja", "en") and isinstance(block, dict) and "cer" in block:
                lang = key
                metric = "CER" if block["wer"] is None else "WER"
                score = round(100 * (block["cer"] if block["wer"] is None else block["wer"]), 2)
                extra = {}
                protocol = f"{metric} % after the {block['normalizer']}" + (
                    " of Whisper transcripts" if speech else ""
                )
            else:
                continue
            reasons = _why_not(report, task, lang)
            row = {
                "benchmark": test.get("benchmark", "manifest"),
                "split": test.get("split"),
                "direction": test.get("direction"),
                "task": task,
                "target": lang,
                "n": summary["n"],
                "metric": metric,
                "score": score,
                **extra,
                "protocol": protocol,
                "asr_model": (report.get("asr") or {}).get("models", {}).get(lang) if speech else None,
                "comparable": not reasons,
                "not_comparable": reasons,
            }
            if speech and summary.get("dnsmos"):
                row["dnsmos"] = {k: summary["dnsmos"][k] for k in ("sig", "bak", "ovrl")}
            if summary.get("latency"):
                row["latency_ms"] = {f: summary["latency"][f] for f in ("ideal", "computation_aware")}
            rows.append(row)
    return rows


def summary_markdown(rows: list[dict]) -> str:
    """The summary rows as a Markdown table, then why rows are not comparable."""
    lines = [
        "| benchmark | split | direction | task | n | metric | score | chrF++ | ASR model | DNSMOS OVRL "
        "| StartOffset / EndOffset / ATD (ms, computation-aware) | comparable |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for row in rows:
        latency = (row.get("latency_ms") or {}).get("computation_aware") or {}
        lat = " / ".join(str(latency.get(m)) for m in ("StartOffset", "EndOffset", "ATD")) if latency else ""
        lines.append(
            f"| {row['benchmark']} | {row['split'] or ''} | {row['direction'] or ''} | {row['task']} | {row['n']} "
            f"| {row['metric']} | {row['score']} | {row.get('chrf++', '')} | {row['asr_model'] or ''} "
            f"| {(row.get('dnsmos') or {}).get('ovrl', '')} | {lat} | {'yes' if row['comparable'] else 'no'} |"
        )
        why = "comparable" if row["comparable"] else "not comparable: " + "; ".join(row["not_comparable"])
        notes.append(f"- {row['task']} into {row['target']}: {row['protocol']}; {why}")
    return (
        "\n".join(["# sts-eval summary", "", *lines, "", "Protocols and comparability:", "", *notes]) + "\n"
    )


def headline(summary: dict) -> str:
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
    for key in ("rtf", "loops", "unfinished", "speaker_similarity", "speaker_unscored", "skipped"):
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
