"""The offline demo's report: `report.md` with the numbers, audio players and links, and plots.

    from recipes.demo_report import write_report
    write_report(Path("runs/demo"), report)     # `report` as `recipes.demo.run_demo` builds it

Plots (`loss.png`, `corpus.png`) need matplotlib (the `eval` extra); without it the report has none.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from recipes.demo_eval import describe_decoding
from sts.corpus import read_rows

EXAMPLES_SHOWN = 8


def plot_figures(out: Path, report: dict) -> list[str]:
    """loss.png and corpus.png (durations, check scores) next to the report; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    losses = [m for m in report["losses"] if m.get("kind", "train") == "train" and "loss" in m]
    if losses:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot([m["step"] for m in losses], [m["loss"] for m in losses], marker="o", markersize=3)
        ax.set(xlabel="step", ylabel="SFT loss (assistant tokens)", title="Training loss")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=110)
        plt.close(fig)
        written.append("loss.png")

    rows = read_rows(out / "corpus" / "train")
    if rows:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        axes[0].hist([r["src_duration"] for r in rows], bins=20, alpha=0.7, label="ja (source)")
        axes[0].hist([r["tgt_duration"] for r in rows], bins=20, alpha=0.7, label="en (target)")
        axes[0].set(xlabel="seconds", ylabel="utterances", title="Corpus durations")
        axes[0].legend()
        errors = [e for r in rows if isinstance(e := r.get("tgt_asr_error"), float) and e == e]
        axes[1].hist(errors, bins=20, color="tab:green")
        axes[1].set(xlabel="Whisper WER of the English target", ylabel="utterances", title="ASR check")
        fig.tight_layout()
        fig.savefig(out / "corpus.png", dpi=110)
        plt.close(fig)
        written.append("corpus.png")
    return written


def learned_summary(evaluation: dict, domain: bool = False) -> str:
    """What the model learned, in numbers: training vs held-out ASR-chrF++ against the codec's ceiling."""
    groups = evaluation.get("asr_bleu") or {}
    if not groups:
        return "Without ASR there is no measure of what the model learned."
    lines = []
    for key, g in groups.items():
        score, ceiling = g["scores"].get("chrF++"), g.get("ceiling", {}).get("chrF++")
        if score is not None and ceiling is not None:
            lines.append(f"{key} {score:.1f} (ceiling {ceiling:.1f})")
    train = [g for k, g in groups.items() if k.split(" ")[0] == "train"]
    gaps = [g.get("ceiling", {}).get("chrF++", 0.0) - g["scores"].get("chrF++", 0.0) for g in train]
    text = (
        "ASR-chrF++ of the output speech by direction, next to its ceiling (the reference target speech "
        "after the codec round trip, heard by the same Whisper): " + "; ".join(lines) + "."
    )
    if train and all(gap <= 10 for gap in gaps):
        text += (
            " The model reproduces its training pairs in both directions, within 10 points of the ceiling."
        )
    elif train:
        text += f" The model does not yet reproduce all its training pairs (up to {max(gaps):.1f} points below the ceiling)."
    for split, what in (
        ("test", "held-out sentences"),
        ("test-voice", "held-out sentences in unheard voices"),
    ):
        shares = [
            s for k, g in groups.items() if k.split(" ")[0] == split and (s := held_out_share(g)) is not None
        ]
        if shares:
            text += f" On {what} it reaches {100 * min(shares):.0f}-{100 * max(shares):.0f} % of the ceiling"
            if domain and split == "test":  # the recipe's target (issue: 70 % of the ceiling both ways)
                text += ": the target of 70 % " + ("is met." if min(shares) >= 0.7 else "is not met.")
            else:
                text += "."
    if not domain:
        text += (
            " A model this small, trained for minutes on tens of sentences, is a pipeline demo, not a translation "
            "model; `sts demo --size domain` measures translation of unseen sentences (held-out combinations of a "
            "closed domain)."
        )
    return text


def held_out_share(group: dict) -> float | None:
    """A group's ASR-chrF++ as a share of its ceiling (None without both)."""
    score, ceiling = group["scores"].get("chrF++"), group.get("ceiling", {}).get("chrF++")
    return score / ceiling if score is not None and ceiling else None


def write_report(out: Path, report: dict) -> None:
    """report.md: what ran, the numbers, audio players and links, plots (when matplotlib is installed)."""
    figures = plot_figures(out, report)
    ev = report["evaluation"]
    cfg = report["config"]
    lines = [
        "# sts offline demo",
        "",
        f"Size `{cfg['size']}`, seed {cfg['seed']}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "Everything ran on this machine's CPU with no download: real Japanese (Kokoro) and English (Piper) "
        "speech, checked and scored by offline Whisper, encoded with "
        + (
            "the offline k-means/Griffin-Lim codec (a demo codec, not XCodec2)"
            if report["codec"]["type"] == "MelKMeansCodec"
            else f"the codec at {report['codec']['dir']}"
        )
        + ".",
        "",
        f"**What the model learned.** {learned_summary(ev, bool(report['size'].get('domain')))}",
        "",
        "## Steps and time",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {seconds} |" for name, seconds in report["timings_s"].items()]
    lines += [
        "",
        "## Corpus",
        "",
        "| split | pairs in | rows kept | dropped (reason: count) | hours ja / en |",
        "|---|---|---|---|---|",
    ]
    for name, card in report["corpus"].items():
        drops = ", ".join(f"{k}: {v}" for k, v in card["drops"].items()) or "none"
        d = card["directions"].get("ja-en", {"src_hours": 0.0, "tgt_hours": 0.0})
        lines.append(
            f"| {name} | {card['input_rows']} | {card['rows']} | {drops} | {d['src_hours']:.4f} / {d['tgt_hours']:.4f} |"
        )
    if "corpus.png" in figures:
        lines += ["", "![corpus](corpus.png)"]
    codec = report["codec"]
    lines += [
        "",
        "## Codec",
        "",
        f"`{codec['type']}`, {codec['codebook_size']} codes, 50 per second ({codec['dir']}).",
    ]
    if "codec_round_trip" in ev:
        lines += ["", "| language | metric | reference audio | after codec round trip |", "|---|---|---|---|"]
        for lang, r in ev["codec_round_trip"].items():
            lines.append(
                f"| {lang} | {r['metric']} | {r['reference_audio']:.3f} | {r['codec_round_trip']:.3f} |"
            )
    losses = [m for m in report["losses"] if "loss" in m]
    lines += ["", "## Training", ""]
    if losses:
        lines.append(
            f"{report['steps']} SFT steps; loss {losses[0]['loss']:.3f} at step {losses[0]['step']} -> "
            f"{losses[-1]['loss']:.3f} at step {losses[-1]['step']}. Checkpoint: `{report['checkpoint']}`."
        )
    if "loss.png" in figures:
        lines += ["", "![loss](loss.png)"]
    lines += ["", "## Scores", ""]
    if ev.get("asr_bleu"):
        names: list[str] = []
        for g in ev["asr_bleu"].values():
            names += [n for n in g["scores"] if n not in names]
        lines += [
            "| sentences | n | "
            + " | ".join(f"ASR-{n}" for n in names)
            + " | ceiling ASR-chrF++ | loop rate | end-marker rate | translation chrF++ (text) "
            "| speech vs its own translation (ASR-chrF++) | transcript error (CER ja, WER en) |"
        ]
        lines += ["|---|---|" + "---|" * (len(names) + 6)]
        for key, g in ev["asr_bleu"].items():
            cells = " | ".join(f"{g['scores'][n]:.1f}" if n in g["scores"] else "" for n in names)
            ceiling = g.get("ceiling", {}).get("chrF++")
            lines.append(
                f"| {key} | {g['n']} | {cells} | {'' if ceiling is None else f'{ceiling:.1f}'} | "
                f"{g.get('loop_rate', '')} | {g.get('end_marker_rate', '')} | {g.get('translation_chrf++', '')} | "
                f"{g.get('speech_vs_own_translation_chrf++', '')} | {g.get('transcript_error', '')} |"
            )
        lines += [
            "",
            "The ceiling is the same score for the reference target speech after the codec round trip: "
            "what a model that reproduced its targets exactly would get. Loop rate: outputs a loop rule "
            "cut; end-marker rate: outputs that ended on their own. Decoding: "
            + describe_decoding(report.get("decoding", "default"))
            + ".",
        ]
        signatures = {n: s for g in ev["asr_bleu"].values() for n, s in g["signatures"].items()}
        protocols = {n: p for g in ev["asr_bleu"].values() for n, p in g.get("protocols", {}).items()}
        lines += ["", "Signatures: " + "; ".join(f"{n} `{s}`" for n, s in signatures.items())]
        if protocols:
            lines += ["", "Protocols: " + "; ".join(f"{n}: {p}" for n, p in protocols.items())]
        lines += [
            "",
            f"Speaker similarity source -> output ({ev.get('speaker_encoder') or 'resemblyzer'} cosine, mean): "
            f"{ev.get('speaker_similarity_mean')}"
            + (
                f" over {ev['speaker_scored']} outputs ({ev['speaker_unscored']} unscored: too short or too little voice). "
                if "speaker_unscored" in ev
                else ". "
            )
            + f"Real-time factor of batched translation on this CPU: {ev.get('rtf')}.",
        ]
    else:
        lines.append(ev.get("note", "no scores"))
    lines += ["", "## Translations", ""]
    shown, per_group = [], Counter()
    for item in report["outputs"]:  # the first few of each split and direction; report.json has all
        key = (item["split"], item["src_lang"])
        per_group[key] += 1
        if per_group[key] <= EXAMPLES_SHOWN:
            shown.append(item)
    if len(shown) < len(report["outputs"]):
        lines += [
            f"The first {EXAMPLES_SHOWN} of each split and direction; report.json lists all {len(report['outputs'])}.",
            "",
        ]
    for item in shown:
        lines += [
            f"### {item['split']} {item['src_lang']} -> {item['tgt_lang']}: {item['id']}",
            "",
            f"- source: {item['source_text']}",
            f"- reference: {item['reference_text']}",
            *(
                [f"- transcript the model wrote: {item['transcript']}"]
                if item.get("transcript") is not None
                else []
            ),
            *(
                [f"- translation the model wrote: {item['translation']}"]
                if item.get("translation") is not None
                else []
            ),
            f"- Whisper hears in the output: {item.get('asr_text', '(no ASR)') or '(nothing)'}",
            f"- output {item['output_seconds']:.1f} s, finished: {item['finished']}, "
            f"speaker similarity: {item.get('speaker_similarity', 'n/a')}"
            + (f", warnings: {'; '.join(item['warnings'])}" if item["warnings"] else ""),
            "",
            f'<audio controls src="{item["source_wav"]}"></audio> source ([{item["source_wav"]}]({item["source_wav"]}))',
            "",
        ]
        if item["output_wav"]:
            lines += [
                f'<audio controls src="{item["output_wav"]}"></audio> output ([{item["output_wav"]}]({item["output_wav"]}))',
                "",
            ]
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out / "report.md")
