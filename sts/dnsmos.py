"""Naturalness: DNSMOS P.835 (SIG, BAK, OVRL), the one implementation of `sts-eval` and the corpus checks.

    from sts.dnsmos import Dnsmos, summarize
    scorer = Dnsmos()                          # ImportError naming the package when speechmos is missing
    score = scorer.score(wav)                  # [N] float32 16 kHz -> DnsmosScore(sig, bak, ovrl, p808) or None
    summarize([score, ...])                    # {"model", "n", "sig", "bak", "ovrl", "p808"} (means)

DNSMOS P.835 (Reddy et al., "DNSMOS P.835: a non-intrusive perceptual objective speech quality
metric to evaluate noise suppressors", ICASSP 2022) predicts the three ITU-T P.835 ratings of a
clip: SIG (speech signal), BAK (background noise), OVRL (overall quality), each on 1-5, from 9.01 s
windows hopped by 1 s; a clip shorter than a window is repeated until it fills one. The models are
Microsoft's ONNX files that ship inside the `speechmos` wheel (MIT, ~9 MB, published by the DNS/AEC
challenge organizers), so scoring runs offline; `p808` is the P.808 overall MOS from the same
package. We run its `DNSMOS` class with one ONNX thread per session (deterministic, and a shared
CPU gains nothing from more; `threads` changes it).

Emilia's preprocessing keeps clips whose DNSMOS OVRL is at least 3.0 (He et al., "Emilia", 2024)
and records the value with each clip (`EMILIA_MIN_OVRL`); the corpus builder's `--min-dnsmos`
uses that recorded value for Emilia and this scorer for every other source.

Cost, measured by `benchmarks/dnsmos_cost.py` (`benchmarks/RESULTS.md`): a clip of T >= 9.01 s is
floor(T - 9.01) + 1 windows, a shorter one is tiled (doubled) to at least 9.01 s first (2 s and 4 s
become 16 s: 7 windows); on the shared, busy 2-core CPU one window cost 0.3-1.3 s (one ONNX thread),
i.e. about 0.25-0.5 s per second of 15-30 s audio and 2-8 s per clip of 9 s or less.

Needs the `eval` extra (`speechmos`, with onnxruntime and librosa).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MODEL = "DNSMOS P.835 (speechmos 0.0.1.1 ONNX: sig_bak_ovr + P.808 model_v8)"
"""How reports name the predictor."""
SAMPLE_RATE = 16000
"""The only rate the DNSMOS models take."""
EMILIA_MIN_OVRL = 3.0
"""Emilia's own threshold on DNSMOS OVRL (its preprocessing pipeline keeps clips at or above it)."""


@dataclass(frozen=True)
class DnsmosScore:
    """The P.835 ratings of one clip (1-5, higher is better) and the P.808 overall MOS."""

    sig: float
    bak: float
    ovrl: float
    p808: float

    def rounded(self, digits: int = 3) -> dict:
        return {k: round(v, digits) for k, v in asdict(self).items()}


def _import_speechmos():
    try:
        from speechmos import dnsmos
    except ImportError as err:
        raise ImportError(
            f"DNSMOS needs the speechmos package (pip install speechmos, or the eval extra): {err}"
        ) from err
    return dnsmos


class Dnsmos:
    """speechmos' DNSMOS P.835 models, loaded once; ImportError at construction when missing.

    Args:
        threads: ONNX Runtime intra-op threads per session (1: deterministic, best on a busy CPU).
        personalized: the personalized DNSMOS model (speech of other talkers counts as noise).
    """

    def __init__(self, threads: int = 1, *, personalized: bool = False):
        import os

        import onnxruntime as ort

        module = _import_speechmos()
        root = os.path.dirname(module.__file__)
        primary = os.path.join(
            root, "pdnsmos_models" if personalized else "dnsmos_models", "sig_bak_ovr.onnx"
        )
        p808 = os.path.join(root, "dnsmos_models", "model_v8.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1

        class _Sessions(module.DNSMOS):
            def __init__(self):  # the package's own class, with our session options
                self.primary_model_path = primary
                self.onnx_sess = ort.InferenceSession(primary, options, providers=["CPUExecutionProvider"])
                self.p808_onnx_sess = ort.InferenceSession(p808, options, providers=["CPUExecutionProvider"])

        self.personalized = personalized
        self._model = _Sessions()

    @property
    def name(self) -> str:
        return MODEL + (" personalized" if self.personalized else "")

    def score(self, waveform: np.ndarray) -> DnsmosScore | None:
        """`[N]` float32 16 kHz in [-1, 1] -> its ratings; None for an empty clip or non-finite output."""
        wav = np.asarray(waveform, dtype=np.float32)
        if wav.ndim != 1 or len(wav) == 0 or not np.isfinite(wav).all():
            return None
        wav = np.clip(wav, -1.0, 1.0)  # the package refuses anything outside [-1, 1]
        out = self._model(wav, SAMPLE_RATE, self.personalized)
        values = [float(out[k]) for k in ("sig_mos", "bak_mos", "ovrl_mos", "p808_mos")]
        if not all(math.isfinite(v) for v in values):
            return None
        return DnsmosScore(*values)

    def score_many(self, waveforms: Sequence[np.ndarray]) -> list[DnsmosScore | None]:
        return [self.score(w) for w in waveforms]


def summarize(scores: Sequence[DnsmosScore | None], model: str = MODEL) -> dict:
    """Means over the clips that have a score: {"model", "n", "sig", "bak", "ovrl", "p808"}."""
    scored = [s for s in scores if s is not None]
    out: dict = {"model": model, "n": len(scored)}
    for key in ("sig", "bak", "ovrl", "p808"):
        out[key] = round(float(np.mean([getattr(s, key) for s in scored])), 3) if scored else None
    return out
