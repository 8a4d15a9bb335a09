"""Scoring of decoded dev items: the per-group metrics, their flat form, the printed line, early stop.

    groups = summarize(items, decoded, texts=texts, transcripts=transcripts)   # {group: {metric: value}}
    flat = flatten(groups)                       # {"gen/s2st:ja-en/loop_rate": ..., ...}
    print(headline(flat))
    early_stop_reason([0.1, 0.2, 0.3], threshold=0.25, patience=2)            # "speech loop rate 0.300 > ..."

The metrics are defined in `train.gen_eval`'s module doc. `SpeechScorer` turns generated codes into
Whisper transcripts (codec + offline ASR) for ASR-chrF++. Pure numpy besides sacreBLEU (chrF++) and
the scorer's codec/ASR, all imported where used.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable

import numpy as np

from sts.asr import SAMPLE_RATE, default_asr
from sts.generation import SPEECH_GUARD, TEXT_GUARD, find_loop
from sts.metrics import asr_bleu, chrf
from sts.optional import load_optional
from train.dev_subset import DevItem

log = logging.getLogger(__name__)

POOLS = {"speech": "speech_out", "text": "text_out"}
"""Pseudo-group names of the metrics pooled over every group of one output modality."""


def has_loop(ids: np.ndarray, output: str) -> bool:
    """Whether `find_loop` finds a loop in `ids` (`[T]`) under the guard of the `output` modality.

    The one place that reads `find_loop`'s answer (a (start, n) tuple today, None for no loop)."""
    return find_loop(ids, SPEECH_GUARD if output == "speech" else TEXT_GUARD) is not None


def summarize(
    items: list[DevItem],
    decoded: list[dict],
    *,
    texts: list[str | None],
    transcripts: list[str | None] | None = None,
    note: Callable[[str], None] = log.warning,
) -> dict[str, dict[str, float]]:
    """Metrics per group and per output-modality pool (see the module doc) from decoded items.

    texts: the parsed text of each text-output item (None for speech); transcripts: the ASR text of
    each speech-output item that has a reference text (None elsewhere), or None when no ASR ran.
    """
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.group, []).append(i)
    for output, pool in POOLS.items():
        members = [i for i, item in enumerate(items) if item.output == output]
        if members:
            groups[pool] = members
    result = {}
    for name, members in groups.items():
        ratios = [len(decoded[i]["body"]) / max(items[i].ref_len, 1) for i in members]
        metrics = {
            "n": len(members),
            "loop_rate": float(np.mean([has_loop(decoded[i]["body"], items[i].output) for i in members])),
            "end_marker_rate": float(np.mean([decoded[i]["ended"] for i in members])),
            "length_ratio_mean": float(np.mean(ratios)),
            "length_ratio_median": float(statistics.median(ratios)),
            "stray_id_rate": sum(decoded[i]["wrong"] for i in members)
            / max(1, sum(decoded[i]["steps"] for i in members)),
        }
        if name not in POOLS.values():
            metrics.update(_chrf_scores(items, members, texts, transcripts, note))
        result[name] = metrics
    for output, pool in POOLS.items():  # headline: the mean over the groups of the pool
        key = "chrf" if output == "text" else "asr_chrf"
        scores = [m[key] for g, m in result.items() if key in m and g not in POOLS.values()]
        if pool in result and scores:
            result[pool][f"{key}_mean"] = float(np.mean(scores))
    return result


def _chrf_scores(items, members, texts, transcripts, note) -> dict[str, float]:

    item = items[members[0]]
    try:
        if item.output == "text":
            refs = [items[i].ref_text or "" for i in members]
            return {"chrf": chrf([texts[i] or "" for i in members], refs).score}
        if transcripts is not None and item.ref_text is not None:
            hyps = [transcripts[i] or "" for i in members]
            scores = asr_bleu(hyps, [items[i].ref_text for i in members], item.lang)
            return {"asr_chrf": next(s.score for s in scores if s.name == "chrF++")}
    except ImportError as err:  # sacrebleu is the `eval` extra
        note(f"chrF++ left out: {err} (pip install 'sts[eval]')")
    return {}


def flatten(groups: dict[str, dict[str, float]]) -> dict[str, float]:
    """`{group: {metric: v}}` -> `{"gen/group/metric": v}`, the form of metrics.jsonl and the loggers."""
    return {f"gen/{group}/{k}": v for group, metrics in groups.items() for k, v in metrics.items()}


def headline(flat: dict[str, float]) -> str:
    """The printed line: pooled loop, end-marker, median length ratio, stray rate and chrF++ per modality."""
    parts = []
    for output, pool in POOLS.items():
        m = {k.removeprefix(f"gen/{pool}/"): v for k, v in flat.items() if k.startswith(f"gen/{pool}/")}
        if not m:
            continue
        text = (f"{output} out n {m['n']} loop {m['loop_rate']:.2f} end {m['end_marker_rate']:.2f} "
                f"len {m['length_ratio_median']:.2f} stray {m['stray_id_rate']:.3f}")  # fmt: skip
        for key, label in (("chrf_mean", "chrF++"), ("asr_chrf_mean", "ASR-chrF++")):
            if key in m:
                text += f" {label} {m[key]:.1f}"
        parts.append(text)
    return " | ".join([*parts, f"{flat.get('gen/seconds', 0.0):.1f} s"])


def early_stop_reason(loop_rates: list[float], threshold: float | None, patience: int) -> str | None:
    """Why to stop, or None: the latest speech loop rate is above `threshold` and each of the last
    `patience` evals raised it over the eval before (`patience + 1` values needed)."""
    if threshold is None or len(loop_rates) < patience + 1:
        return None
    recent = loop_rates[-(patience + 1) :]
    if recent[-1] > threshold and all(b > a for a, b in zip(recent, recent[1:], strict=False)):
        trail = " -> ".join(f"{r:.3f}" for r in recent)
        return f"speech loop rate {recent[-1]:.3f} > {threshold} and rising for {patience} evals ({trail})"
    return None


class SpeechScorer:
    """Decoded codes -> audio (`sts.codec.load_codec`) -> Whisper transcripts (`sts.asr.default_asr`).

    Both load on first use; `waves` and `transcribe` raise `RuntimeError` with the reason when the
    codec or the ASR cannot.
    """

    def __init__(self, codec: str, asr: str, device: str):
        self.codec_name, self.asr_name, self.device = codec, asr, device
        self.codec = self.asr = None
        self.failed = False
        """Set once loading or transcribing failed (the evaluator then stops asking)."""

    def waves(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        """Codes `[T_i]` int -> 16 kHz float32 audio `[N_i]` each (empty codes: empty audio)."""
        import soxr

        self._load_codec()
        keep = [i for i, c in enumerate(codes) if len(c)]
        decoded = self.codec.decode([codes[i] for i in keep]) if keep else []
        if self.codec.sample_rate != SAMPLE_RATE:
            decoded = [soxr.resample(w, self.codec.sample_rate, SAMPLE_RATE) for w in decoded]
        out = [np.zeros(0, np.float32)] * len(codes)
        for i, wave in zip(keep, decoded, strict=True):
            out[i] = np.asarray(wave, dtype=np.float32)
        return out

    def transcribe(self, codes: list[np.ndarray], lang: str) -> list[str]:
        """Codes `[T_i]` int -> one transcript each (an empty output is the empty transcript)."""
        return self.transcribe_waves(self.waves(codes), lang)

    def transcribe_waves(self, waves: list[np.ndarray], lang: str) -> list[str]:
        """16 kHz audio `[N_i]` -> one transcript each (empty audio: the empty transcript)."""
        self._load_asr()
        keep = [i for i, w in enumerate(waves) if len(w)]
        texts = [""] * len(waves)
        try:
            for i, text in zip(
                keep, self.asr.transcribe([waves[i] for i in keep], lang) if keep else [], strict=True
            ):
                texts[i] = text
        except (OSError, RuntimeError, ValueError) as err:
            raise RuntimeError(f"ASR failed ({type(err).__name__}: {err})") from err
        return texts

    def _load_codec(self) -> None:
        from sts.codec import load_codec

        if self.codec is None:
            self.codec = load_optional(f"codec {self.codec_name!r}", lambda: load_codec(self.codec_name, device=self.device),
                                       required=True)  # fmt: skip

    def _load_asr(self) -> None:

        if self.asr is None:
            name = None if self.asr_name == "auto" else self.asr_name
            self.asr = load_optional("ASR (Whisper)", lambda: default_asr(name, device=self.device),
                                     install="faster-whisper (the offline extra)", required=True)  # fmt: skip
