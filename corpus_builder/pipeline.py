"""Source rows -> filters -> MT -> TTS -> checks -> shard rows (`sts.corpus`).

    from corpus_builder.pipeline import PipelineConfig, process_rows
    for outcome in process_rows(source_rows, mt=mt, tts=tts, checks=checks, cfg=PipelineConfig()):
        outcome.row or outcome.drop_reason        # a shard row dict, or why the utterance was dropped
        outcome.drop                              # a dropped row's drop-log record: reason and evidence

Rows are processed in batches of `batch_size` (MT and TTS each see the whole batch, grouped by
language pair); every input row yields exactly one `Outcome`, in input order. With `mt=None` the rows
are monolingual (`sts.corpus`: no translation side): a clip keeps its transcript, a text-only row is
spoken by the TTS (which is then all it needs), and the checks score that synthesized speech against
its text (`src_asr_error`; a recorded clip is not checked). Nothing about one bad
row is fatal: undecodable audio, silent source audio (`silent_audio`, `sts.audio.is_silent`), empty
text, an empty translation, a TTS that never stops or says nothing audible (`tts_silent`) or a
failed check each become a drop reason. Audio is stored as FLAC bytes: the source at 16 kHz (what
the codec reads), the target at the TTS's own rate. A row a check cannot score (no source clip to
compare voices with, too little voice) passes it as unscored: the column is null and
`Outcome.unscored` names the check, which the corpus card counts.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr

from corpus_builder.interfaces import Check, CheckInput, TTSBackend, TTSRequest
from corpus_builder.sources import SourceConfig, SourceRow, audio_drop_reason, duration_reason, filter_reason
from sts.audio import SAMPLE_RATE, AudioError, is_silent, peak_dbfs, rms_dbfs
from sts.corpus import MT_NONE
from sts.mt import MTBackend, ReferenceMT, translate_in_context


@dataclass
class PipelineConfig:
    """How rows are batched and synthesized."""

    batch_size: int = 32
    """Rows per MT/TTS batch."""
    voice_preserving: bool = False
    """Prompt the TTS with the source clip and its transcript so the target keeps the speaker's voice."""
    filters: SourceConfig = field(default_factory=SourceConfig)
    """The source config whose filter fields (languages, durations, DNSMOS, text length) apply."""
    mt_context: int = 0
    """Translate each row with the previous N (source, translation) pairs of its recording (0: off)."""
    mt_keep_truncated: bool = False
    """Keep translations that hit the MT token budget without ending (default: drop, `mt_truncated`)."""


@dataclass
class Outcome:
    id: str
    row: dict | None = None
    """A shard row (`corpus_features()` columns), or None when dropped."""
    drop_reason: str | None = None
    src_lang: str = ""
    tgt_lang: str = ""
    drop: dict | None = None
    """A dropped row's drop-log record (`sts.corpus.drop_features()` columns): why, and the evidence."""
    unscored: list[str] = field(default_factory=list)
    """Names of the checks that ran on this row but could not score it (it passed them as unscored)."""


@dataclass
class _Work:
    src: SourceRow
    tgt_lang: str | None
    """None: a monolingual row (no translation side)."""
    src_audio: np.ndarray | None = None  # [N] float32 16 kHz
    tgt_text: str | None = None
    tgt_audio: np.ndarray | None = None  # [N] float32 at tgt_rate
    tgt_rate: int = SAMPLE_RATE
    scores: dict = field(default_factory=dict)
    drop: str | None = None
    detail: str | None = None  # what the drop rests on, in words (an error message, a level)
    evidence: dict = field(default_factory=dict)  # what the checks saw (e.g. asr_text), for the drop log
    unscored: list[str] = field(default_factory=list)  # checks that ran but could not score this row


def other_language(lang: str) -> str:
    return "en" if lang == "ja" else "ja"


def flac_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(waveform, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def to_16k(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == SAMPLE_RATE:
        return waveform.astype(np.float32, copy=False)
    return soxr.resample(waveform, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)


def process_rows(
    rows: Iterable[SourceRow],
    *,
    mt: MTBackend | None,
    tts: TTSBackend | None,
    checks: Sequence[Check] = (),
    cfg: PipelineConfig | None = None,
    seen_ids: set[str] | None = None,
    dnsmos=None,
) -> Iterator[Outcome]:
    """One `Outcome` per input row, in order. `seen_ids` (shared across calls) drops duplicate ids.
    `dnsmos` (a `sts.dnsmos.Dnsmos`) rates source speech without a recorded DNSMOS for `min_dnsmos`.

    `mt` None builds monolingual rows; `tts` may then be None when every row has its audio (a text-only
    row is dropped as `tts_missing`).

    With `cfg.mt_context` > 0 the MT context of a recording runs across the batches of one call and
    starts empty in each call: the builder calls once per chunk, so a resumed run translates every
    chunk exactly as an uninterrupted one.
    """
    cfg = cfg or PipelineConfig()
    seen_ids = set() if seen_ids is None else seen_ids
    history: dict[str, list[tuple[str, str]]] = {}
    rows = iter(rows)
    while batch := list(itertools.islice(rows, cfg.batch_size)):
        yield from _process_batch(batch, mt, tts, checks, cfg, seen_ids, history, dnsmos)


def _process_batch(batch, mt, tts, checks, cfg, seen_ids, history, dnsmos=None) -> list[Outcome]:
    work = [_prepare(row, cfg, seen_ids, monolingual=mt is None) for row in batch]
    _check_dnsmos([w for w in work if not w.drop], dnsmos, cfg.filters.min_dnsmos)
    if mt is not None:
        _translate([w for w in work if not w.drop], mt, cfg.mt_context, history, cfg.mt_keep_truncated)
    _synthesize([w for w in work if not w.drop], tts, cfg, dnsmos)
    _check([w for w in work if not w.drop], checks)
    return [_outcome(w, mt, tts) for w in work]


def _prepare(row: SourceRow, cfg: PipelineConfig, seen_ids: set[str], monolingual: bool = False) -> _Work:
    work = _Work(row, None if monolingual else other_language(row.lang))
    if row.id in seen_ids:
        work.drop = "duplicate_id"
        return work
    seen_ids.add(row.id)
    work.drop = filter_reason(row, cfg.filters)
    if work.drop:
        return work
    try:
        # a clip longer than --max-duration is refused from its header, before it is decoded
        work.src_audio = row.load_audio(max_seconds=cfg.filters.max_duration)
    except AudioError as err:
        work.drop, work.detail = audio_drop_reason(err), str(err)
        return work
    if work.src_audio is not None:
        work.drop = duration_reason(len(work.src_audio) / SAMPLE_RATE, cfg.filters)
        if not work.drop and is_silent(work.src_audio):  # a transcript over silence teaches nothing
            work.drop, work.detail = "silent_audio", _level(work.src_audio)
    return work


def _check_dnsmos(work: list[_Work], dnsmos, threshold: float) -> None:
    """Drop ("dnsmos_low") source speech whose DNSMOS OVRL is below `threshold`: rows the source gave a
    value were filtered on it already (`filter_reason`); the others are rated here when there is a scorer."""
    if threshold <= 0 or dnsmos is None:
        return
    for w in work:
        if w.src.dnsmos is None and w.src_audio is not None:
            score = dnsmos.score(w.src_audio)
            if score is not None:
                w.evidence.update({f"dnsmos_{k}": v for k, v in score.rounded().items()})
            if score is not None and score.ovrl < threshold:
                w.drop = "dnsmos_low"
                w.detail = f"DNSMOS OVRL {score.ovrl:.2f} < {threshold:g} (computed)"


def _translate(
    work: list[_Work],
    mt: MTBackend,
    window: int = 0,
    history: dict | None = None,
    keep_truncated: bool = False,
) -> None:
    if isinstance(mt, ReferenceMT):
        for w in work:
            w.tgt_text = (w.src.tgt_text or "").strip() or None
            w.drop = None if w.tgt_text else "reference_missing"
        return
    for (src_lang, tgt_lang), group in _groups(work, lambda w: (w.src.lang, w.tgt_lang)):
        texts = [w.src.text.strip() for w in group]
        if window > 0:
            keys = [w.src.recording for w in group]
            results = translate_in_context(
                mt, texts, keys, src_lang, tgt_lang, window=window, history=history
            )
        else:
            results = mt.translate(texts, src_lang, tgt_lang)
        for w, result in zip(group, results, strict=True):
            w.tgt_text = (result.text or "").strip() or None
            w.drop = None if w.tgt_text else (result.drop_reason or "mt_empty")
            if w.tgt_text and result.truncated and not keep_truncated:
                w.drop, w.detail = (
                    "mt_truncated",
                    "the translation reached --mt-max-new-tokens without ending",
                )


def _synthesize(work: list[_Work], tts: TTSBackend | None, cfg: PipelineConfig, dnsmos=None) -> None:
    for w in work:
        needs = ([w.tgt_lang] if w.tgt_lang else []) + ([w.src.lang] if w.src_audio is None else [])
        if needs and tts is None:
            w.drop = "tts_missing"
        elif any(lang not in tts.languages for lang in needs):
            w.drop = "tts_language_unsupported"
    work = [w for w in work if not w.drop]
    # Text-only rows: the source side is synthesized first, then used like a recorded clip.
    text_only = [w for w in work if w.src_audio is None]
    if text_only:
        results = tts.synthesize([TTSRequest(w.src.text.strip(), w.src.lang) for w in text_only])
        for w, result in zip(text_only, results, strict=True):
            if result.audio is None or len(result.audio) == 0:
                w.drop = "src_" + (result.drop_reason or "tts_empty")
            elif is_silent(result.audio):
                w.drop, w.detail = "src_tts_silent", _level(result.audio, result.sample_rate)
            else:
                w.src_audio = to_16k(result.audio, result.sample_rate)
        _check_dnsmos([w for w in text_only if not w.drop], dnsmos, cfg.filters.min_dnsmos)
    work = [w for w in work if not w.drop and w.tgt_lang]  # monolingual rows have nothing more to say
    requests = [
        TTSRequest(w.tgt_text, w.tgt_lang, w.src_audio, w.src.text.strip())
        if cfg.voice_preserving
        else TTSRequest(w.tgt_text, w.tgt_lang)
        for w in work
    ]
    for w, result in zip(work, tts.synthesize(requests) if requests else [], strict=True):
        if result.audio is None or len(result.audio) == 0:
            w.drop = result.drop_reason or "tts_empty"
        elif not np.isfinite(result.audio).all():
            w.drop = "tts_nonfinite"
        elif is_silent(result.audio):
            w.drop, w.detail = "tts_silent", _level(result.audio, result.sample_rate)
            w.evidence["tgt_duration"] = len(result.audio) / result.sample_rate
        else:
            w.tgt_audio, w.tgt_rate = result.audio.astype(np.float32, copy=False), result.sample_rate


def _check(work: list[_Work], checks: Sequence[Check]) -> None:
    """Score the synthesized speech of each row: a parallel row's target (against the source clip), or
    a monolingual row's source when the TTS made it, by the checks of one clip against its text (those
    whose column is `tgt_*`, stored as `src_*`; a check that compares two voices has nothing to do)."""
    for check in checks:
        mono_too = check.column.startswith("tgt_")
        work = [w for w in work if not w.drop and (w.tgt_lang or (mono_too and w.src.audio is None))]
        if not work:
            continue
        inputs = [
            CheckInput(
                w.src_audio if w.src.audio is not None else None,
                to_16k(w.tgt_audio, w.tgt_rate),
                w.tgt_text,
                w.tgt_lang,
            )
            if w.tgt_lang
            else CheckInput(None, w.src_audio, w.src.text.strip(), w.src.lang)
            for w in work
        ]
        for w, (score, evidence) in zip(work, check.score_with_evidence(inputs), strict=True):
            column = check.column if w.tgt_lang else "src_" + check.column.removeprefix("tgt_")
            w.evidence.update(evidence)
            if score is None or math.isnan(score):  # unscored (a NaN from an older check): kept, counted
                w.scores[column] = None
                w.unscored.append(check.name)
                continue
            w.scores[column] = float(score)
            if not check.passes(float(score)):
                w.drop = f"check_{check.name}"


def _groups(work: list[_Work], key) -> Iterator[tuple]:
    groups: dict = {}
    for w in work:
        groups.setdefault(key(w), []).append(w)
    return iter(groups.items())


def _level(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    return (f"RMS {rms_dbfs(waveform):.1f} dBFS, peak {peak_dbfs(waveform):.1f} dBFS over "
            f"{len(waveform) / sample_rate:.2f} s")  # fmt: skip


def drop_record(w: _Work) -> dict:
    """The drop-log row of a dropped work item (`sts.corpus.drop_features()`): who, why, and the
    evidence the pipeline had when it dropped it (unknown or unmeasured values are null, not NaN)."""
    scores = {k: (None if v is None or math.isnan(v) else v) for k, v in w.scores.items()}
    evidence = {k: v for k, v in w.evidence.items() if k not in ("asr_text", "tgt_duration")}
    tgt_duration = (
        len(w.tgt_audio) / w.tgt_rate if w.tgt_audio is not None else w.evidence.get("tgt_duration")
    )
    return {
        "id": w.src.id,
        "source": w.src.source,
        "src_lang": w.src.lang,
        "tgt_lang": w.tgt_lang or None,  # None: a monolingual row
        "reason": w.drop,
        "detail": w.detail,
        "src_text": w.src.text,
        "tgt_text": w.tgt_text,
        "src_duration": len(w.src_audio) / SAMPLE_RATE if w.src_audio is not None else w.src.duration,
        "tgt_duration": tgt_duration,
        "dnsmos": w.src.dnsmos if w.src.dnsmos is not None else w.evidence.get("dnsmos_ovrl"),
        "asr_text": w.evidence.get("asr_text"),
        "tgt_asr_error": scores.pop("tgt_asr_error", None),
        "src_asr_error": scores.pop("src_asr_error", None),
        "speaker_similarity": scores.pop("speaker_similarity", None),
        "src_audio_path": w.src.audio if isinstance(w.src.audio, str) else None,
        "evidence": json.dumps({**scores, **evidence}, ensure_ascii=False) if scores or evidence else None,
    }


def _outcome(w: _Work, mt: MTBackend | None, tts: TTSBackend | None) -> Outcome:
    if w.drop:
        return Outcome(w.src.id, None, w.drop, w.src.lang, w.tgt_lang or "", drop=drop_record(w))
    if not w.tgt_lang:
        return Outcome(w.src.id, _monolingual_row(w, tts), None, w.src.lang, "", unscored=w.unscored)
    row = {
        "id": w.src.id,
        "src_lang": w.src.lang,
        "tgt_lang": w.tgt_lang,
        "src_text": w.src.text.strip(),
        "tgt_text": w.tgt_text,
        "src_audio": {"bytes": flac_bytes(w.src_audio, SAMPLE_RATE), "path": f"{w.src.id}.src.flac"},
        "tgt_audio": {"bytes": flac_bytes(w.tgt_audio, w.tgt_rate), "path": f"{w.src.id}.tgt.flac"},
        "src_duration": len(w.src_audio) / SAMPLE_RATE,
        "tgt_duration": len(w.tgt_audio) / w.tgt_rate,
        "speaker": w.src.speaker,
        "source": w.src.source,
        "mt_backend": mt.name,
        "tts_backend": tts.name,
        "tgt_asr_error": w.scores.get("tgt_asr_error"),  # None (null): not checked or not scorable
        "speaker_similarity": w.scores.get("speaker_similarity"),
        "src_asr_error": None,  # a parallel row's source is recorded or, from text, not checked
    }
    return Outcome(w.src.id, row, None, w.src.lang, w.tgt_lang, unscored=w.unscored)


def _monolingual_row(w: _Work, tts: TTSBackend | None) -> dict:
    """A shard row with the source side only (`sts.corpus`: the tgt_* columns null)."""
    return {
        "id": w.src.id,
        "src_lang": w.src.lang,
        "tgt_lang": None,
        "src_text": w.src.text.strip(),
        "tgt_text": None,
        "src_audio": {"bytes": flac_bytes(w.src_audio, SAMPLE_RATE), "path": f"{w.src.id}.src.flac"},
        "tgt_audio": None,
        "src_duration": len(w.src_audio) / SAMPLE_RATE,
        "tgt_duration": None,
        "speaker": w.src.speaker,
        "source": w.src.source,
        "mt_backend": MT_NONE,
        "tts_backend": tts.name if w.src.audio is None and tts is not None else MT_NONE,
        "tgt_asr_error": None,
        "speaker_similarity": None,
        "src_asr_error": w.scores.get("src_asr_error"),
    }
