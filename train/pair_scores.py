"""Scoring sampled answers with the package's own metrics, and choosing preference pairs from them.

    score = Scoring().score(CandidateScore(loop="", ended=True, length_ratio=1.1, chrf=62.0, speaker_sim=0.8))
    pairs = select_pairs(candidates, Scoring(), pairs_per_prompt=1)    # [(chosen, rejected)] by index
    summary = distribution([0.1, 0.5, 0.9])       # {"n": 3, "mean": ..., "p50": ..., "hist": {...}}
    card_body = summarize_scores(score_rows, pair_rows)   # counts, rates per group, distributions

One answer's score (`Scoring.score`), higher is better:

    content      chrF++ / 100 against the reference: of the text (text output, raw text as the gen
                 eval scores it) or of the Whisper transcript (speech output, both sides through
                 `sts.metrics.normalize`, the ASR-chrF++ protocol); 0 when there is no scorer
  + speaker_weight * speaker similarity (speech output; resemblyzer cosine to the source speech, or
                 to the reference speech, `sts.speaker`), counted only when every answer of the
                 prompt has one (`score_all`)
  - loop_penalty        when `detect_loop` finds a loop under the output's guard (all four rules of
                        `sts.generation.loops` for speech)
  - unfinished_penalty  when the answer did not reach its end marker (budget or loop guard)
  - length_penalty * max(0, |ln(length / reference length)| - ln(length_tolerance))

The defaults put the rules first: a loop (1) outweighs any content difference (at most 1), an
unfinished answer (0.5) half of it; so the pairs teach "no loop, stop, right length" first and
"right content, same voice" among answers that pass the rules (Koel-TTS rewards ASR error and
speaker similarity; the rule penalties are this package's loop and end-marker metrics).

No speaker score. `sts.speaker` gives none for a clip with less voice than `MIN_VOICED_SECONDS` (a
truncated answer, a short source); on such clips different voices score as high as the same one. An
answer without a score must neither gain nor lose by it against its rivals, so when any answer of a
prompt has none, the speaker term is left out of every answer of that prompt (`speaker_counted`
False; the card counts the answers per group whose score includes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from annotated_types import Ge

from sts.config import WhenOff


@dataclass
class CandidateScore:
    """What was measured of one sampled answer."""

    loop: str
    """Kind of loop `detect_loop` found (exact, approximate, long_repeat, low_diversity), "" for none."""
    ended: bool
    """The answer reached its end marker."""
    length_ratio: float
    """Generated length / reference length (speech codes or text tokens, without the end id)."""
    chrf: float | None = None
    """Sentence chrF++ (0-100) against the reference text; None when not measured."""
    speaker_sim: float | None = None
    """Speaker similarity (cosine) to the voice reference; None when not measured or not scorable
    (too little voice on either side, `sts.speaker.MIN_VOICED_SECONDS`)."""
    score: float = 0.0
    """`Scoring.score` of the above, filled by `score_all`."""
    speaker_counted: bool = False
    """The speaker term is part of `score` (every answer of the prompt has a similarity)."""


@dataclass(frozen=True)
class Scoring:
    """Weights of the answer score (module doc); the defaults of `sts-train dpo-pairs`."""

    loop_penalty: Annotated[float, Ge(0)] = 1.0
    """Subtracted when the answer loops."""
    unfinished_penalty: Annotated[float, Ge(0)] = 0.5
    """Subtracted when the answer did not reach its end marker."""
    length_penalty: Annotated[float, Ge(0)] = 0.5
    """Times the log length ratio beyond the tolerance band."""
    length_tolerance: Annotated[float, Ge(1)] = 1.5
    """Length ratios within [1 / tolerance, tolerance] of the reference cost nothing."""
    speaker_weight: Annotated[float, Ge(0)] = 0.25
    """Weight of the speaker similarity (speech output)."""
    min_margin: Annotated[float, Ge(0)] = 0.1
    """A pair needs chosen score - rejected score >= this."""
    require_clean_chosen: Annotated[
        bool, WhenOff("the best-scoring answer is chosen even if it loops or is unfinished")
    ] = True
    """The chosen answer must be loop-free and ended (else the prompt gives no pair)."""

    def score(self, c: CandidateScore, *, speaker: bool = True) -> float:
        """The answer's score (module doc); `speaker=False` leaves the speaker term out."""
        sim = c.speaker_sim if speaker and c.speaker_sim is not None else 0.0
        value = (c.chrf or 0.0) / 100.0 + self.speaker_weight * max(sim, 0.0)
        value -= self.loop_penalty * bool(c.loop) + self.unfinished_penalty * (not c.ended)
        excess = abs(math.log(max(c.length_ratio, 1e-3))) - math.log(self.length_tolerance)
        return value - self.length_penalty * max(0.0, excess)


def score_all(candidates: list[CandidateScore], scoring: Scoring) -> None:
    """Fill the `score` and `speaker_counted` of the answers of ONE prompt (the ones `select_pairs`
    compares): the speaker term counts only when every answer has a similarity, else for none."""
    speaker = all(c.speaker_sim is not None for c in candidates)
    for c in candidates:
        c.score = scoring.score(c, speaker=speaker)
        c.speaker_counted = speaker


def select_pairs(
    candidates: list[CandidateScore], scoring: Scoring, *, pairs_per_prompt: int = 1, same=None
) -> list[tuple[int, int]]:
    """(chosen, rejected) indices into the candidates of one prompt: the best against the worst,
    then the next worst, ... (`pairs_per_prompt`), each with a margin of at least `min_margin`.

    Ties keep the earlier sample. `same(i, j)` says two candidates are the same answer (skipped).
    None when the best one is not clean and `require_clean_chosen`.
    """
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].score, i))
    if not order:
        return []
    best = order[0]
    if scoring.require_clean_chosen and (candidates[best].loop or not candidates[best].ended):
        return []
    pairs = []
    for worst in reversed(order[1:]):
        if len(pairs) >= pairs_per_prompt:
            break
        if candidates[best].score - candidates[worst].score < scoring.min_margin:
            break
        if same is not None and same(best, worst):
            continue
        pairs.append((best, worst))
    return pairs


def distribution(values, bins: int = 10) -> dict:
    """n, mean, std, min, p10, p50, p90, max and a `bins`-bin histogram of the finite `values`."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not len(x):
        return {"n": 0}
    counts, edges = np.histogram(x, bins=bins)
    q = np.percentile(x, [10, 50, 90])
    return {
        "n": len(x),
        "mean": round(float(x.mean()), 4),
        "std": round(float(x.std()), 4),
        "min": round(float(x.min()), 4),
        "p10": round(float(q[0]), 4),
        "p50": round(float(q[1]), 4),
        "p90": round(float(q[2]), 4),
        "max": round(float(x.max()), 4),
        "hist": {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()},
    }


def summarize_scores(scores: list[dict], pairs: list[dict]) -> dict:
    """Counts, rates per group and distributions of scored answers (rows of `scores/`) and of the pairs
    made of them (rows of `pairs/`): the body of the `dpo-pairs` card."""
    groups = {}
    for group in sorted({r["group"] for r in scores}):
        mine = [r for r in scores if r["group"] == group]
        groups[group] = {
            "prompts": len({r["prompt_id"] for r in mine}),
            "answers": len(mine),
            "pairs": sum(p["group"] == group for p in pairs),
            "loop_rate": round(float(np.mean([bool(r["loop"]) for r in mine])), 4),
            "end_marker_rate": round(float(np.mean([r["ended"] for r in mine])), 4),
            "chrf_mean": distribution([r["chrf"] for r in mine]).get("mean"),
            "speaker_sim_mean": distribution([r["speaker_sim"] for r in mine]).get("mean"),
            "speaker_unscored": sum(r["speaker_sim"] is None for r in mine),
            "speaker_counted": sum(bool(r.get("speaker_counted")) for r in mine),
        }

    def column(rows: list[dict], key: str) -> list:
        return [r[key] for r in rows]

    return {
        "answers": len(scores),
        "pairs": len(pairs),
        "groups": groups,
        "distributions": {
            "score": {
                "all": distribution(column(scores, "score")),
                "chosen": distribution(column(pairs, "chosen_score")),
                "rejected": distribution(column(pairs, "rejected_score")),
            },
            "margin": distribution([p["chosen_score"] - p["rejected_score"] for p in pairs]),
            "chrf": distribution(column(scores, "chrf")),
            "speaker_sim": distribution(column(scores, "speaker_sim")),
            "length_ratio": distribution(column(scores, "length_ratio")),
        },
        "loops": {
            kind: column(scores, "loop").count(kind) for kind in sorted(set(column(scores, "loop")) - {""})
        },
    }
