"""Where source utterances come from: Emilia (streamed WebDataset), a local manifest, text pairs, or text.

    from corpus_builder.sources import SourceConfig, open_source
    for row in open_source(SourceConfig(source="local", path="clips.jsonl"), num_shards=4, shard_index=1):
        row.id, row.lang, row.text, row.load_audio()          # [N] float32 at 16 kHz (None: text only)

A source yields `SourceRow`s lazily (audio is decoded only when the pipeline asks), in a
deterministic order, so a rerun sees the same rows in the same chunks. `num_shards`/`shard_index`
split the stream: Emilia by `datasets.distributed.split_dataset_by_node` (whole tar files when the
file count divides evenly, else every `num_shards`-th example), the others by row index modulo
`num_shards`. `filter_reason` applies the cheap metadata filters; the pipeline counts its reasons.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from annotated_types import Ge, Gt

from sts import LANGUAGES
from sts.audio import AudioError, AudioLimitError, load_audio
from sts.corpus import CorpusError
from sts.errors import ManifestError
from sts.manifest import Field, read_manifest

EMILIA_REPO = "amphion/Emilia-Dataset"
EMILIA_LANG_DIRS = {"ja": "JA", "en": "EN"}


class SourceError(CorpusError):
    """A source that cannot be read: a missing --path, a missing file, a bad manifest line."""


@dataclass
class SourceConfig:
    """What to read and which rows to keep."""

    source: Literal["emilia", "local", "text-pairs", "text"] = "emilia"
    """emilia: streamed WebDataset tars; local: a JSONL/CSV manifest or a folder; text-pairs: two line-aligned
    text files; text: one text file of sentences in one language (spoken by the TTS; with --mt none a
    monolingual corpus)."""
    path: str = ""
    """emilia: a HF dataset id or a local folder of tars (default amphion/Emilia-Dataset); local: manifest
    (.jsonl/.csv with audio, text, language[, speaker, id, tgt_text, recording]) or a folder of audio files with
    .txt transcripts beside them; text-pairs and text: the source-language text file (one sentence a line)."""
    emilia_subsets: list[str] = field(default_factory=lambda: ["Emilia", "Emilia-YODAS"])
    """Emilia top folders to stream ("Emilia" is CC BY-NC, "Emilia-YODAS" CC BY)."""
    data_files: list[str] = field(default_factory=list)
    """Explicit data_files globs (overrides the subsets x languages default), e.g. "Emilia/JA/*.tar"."""
    tgt_path: str = ""
    """text-pairs: the target-language text file, line-aligned with `path`."""
    folder_lang: str = "ja"
    """local folder (no manifest), text-pairs and text: language of the source side."""
    languages: list[str] = field(default_factory=lambda: list(LANGUAGES))
    """Keep only these source languages."""
    min_duration: Annotated[float, Ge(0)] = 3.0
    """Seconds; shorter clips are dropped ("duration_short")."""
    max_duration: Annotated[float, Gt(0)] = 30.0
    """Seconds; longer clips are dropped ("duration_long")."""
    min_dnsmos: Annotated[float, Ge(0)] = 0.0
    """Drop rows whose source speech has a lower DNSMOS P.835 OVRL ("dnsmos_low"): Emilia's recorded value,
    else computed (`sts.dnsmos`; Emilia keeps >= 3.0); 0 = off."""
    min_chars: Annotated[int, Ge(0)] = 1
    """Drop transcripts shorter than this ("text_short"; empty text is "text_empty")."""
    max_chars: Annotated[int, Ge(1)] = 400
    """Drop transcripts longer than this ("text_long")."""


@dataclass
class SourceRow:
    """One source utterance; audio stays encoded until `load_audio`."""

    id: str
    lang: str
    text: str
    source: str
    audio: bytes | str | None = None
    """Encoded audio bytes, a path, or None for a text-only row (its source side is synthesized)."""
    speaker: str = ""
    duration: float | None = None
    """Seconds as the source's metadata says (None: unknown until decoded)."""
    dnsmos: float | None = None
    tgt_text: str | None = None
    """A reference translation (text-pairs, or a manifest's tgt_text column)."""
    recording: str | None = None
    """The recording (document) this segment belongs to, for context-aware MT; None: unknown."""

    def load_audio(self, max_seconds: float | None = None) -> np.ndarray | None:
        """`[N]` float32 at 16 kHz, or None for text-only rows; raises `AudioError`, and
        `AudioLimitError` for a clip longer than `max_seconds` (or bigger once decoded than
        `sts.audio.decoded_bytes_limit(max_seconds)`), known from its header before it is decoded."""
        if self.audio is None:
            return None
        if isinstance(self.audio, bytes) and len(self.audio) == 0:
            raise AudioError(f"{self.id}: contains no samples (empty file)")
        name = self.id if isinstance(self.audio, bytes) else None
        return load_audio(
            self.audio, name=name, max_seconds=max_seconds, limit_hint="raise it with --max-duration"
        )


def audio_drop_reason(error: AudioError) -> str:
    """The drop reason of a clip `SourceRow.load_audio` refused: longer than `--max-duration` by its
    header ("duration_long", as when measured after decoding), too big once decoded ("audio_too_large":
    a high rate or many channels), empty ("audio_empty") or undecodable ("audio_undecodable")."""
    if isinstance(error, AudioLimitError):
        return "duration_long" if error.limit == "seconds" else "audio_too_large"
    return "audio_empty" if "no samples" in str(error) else "audio_undecodable"


def filter_reason(row: SourceRow, cfg: SourceConfig) -> str | None:
    """The reason to drop a row on its metadata alone, or None to keep it."""
    if row.lang not in LANGUAGES:
        return "language_unsupported"
    if row.lang not in cfg.languages:
        return "language_filtered"
    text = (row.text or "").strip()
    if not text:
        return "text_empty"
    if len(text) < cfg.min_chars:
        return "text_short"
    if len(text) > cfg.max_chars:
        return "text_long"
    if row.dnsmos is not None and row.dnsmos < cfg.min_dnsmos:
        return "dnsmos_low"
    return duration_reason(row.duration, cfg)


def duration_reason(seconds: float | None, cfg: SourceConfig) -> str | None:
    if seconds is None:
        return None
    if seconds < cfg.min_duration:
        return "duration_short"
    if seconds > cfg.max_duration:
        return "duration_long"
    return None


def check_source(cfg: SourceConfig) -> None:
    """Raise `SourceError` unless the source's paths are given and exist, and (local) every manifest
    line is well-formed (before any work starts).

    `--source local`, `text-pairs` and `text` need `--path` (a local build never falls back to the
    current folder); text-pairs also `--tgt-path`. Emilia's `--path` may be empty (the hub dataset) or a hub id.
    """
    if cfg.source == "emilia":
        return
    needed = [("--path", cfg.path)] + ([("--tgt-path", cfg.tgt_path)] if cfg.source == "text-pairs" else [])
    for flag, value in needed:
        if not value:
            what = "a manifest (.jsonl/.csv) or a folder of clips" if cfg.source == "local" else "a text file"
            raise SourceError(f"--source {cfg.source} needs {flag} ({what})")
        if not Path(value).exists():
            raise SourceError(f"{value}: no such file or folder ({flag})")
    if cfg.source == "text-pairs" and not all(Path(v).is_file() for v in (cfg.path, cfg.tgt_path)):
        raise SourceError(f"--source text-pairs reads two text files, got {cfg.path} and {cfg.tgt_path}")
    if cfg.source == "text" and not Path(cfg.path).is_file():
        raise SourceError(f"--source text reads one text file, got {cfg.path}")
    if cfg.source == "local" and Path(cfg.path).is_file():
        _read_local_manifest(Path(cfg.path))  # every line checked now, before any progress or work


def open_source(cfg: SourceConfig, *, num_shards: int = 1, shard_index: int = 0) -> Iterator[SourceRow]:
    """Rows of this worker's part of the source, in a deterministic order. Raises `SourceError`."""
    if not 0 <= shard_index < num_shards:
        raise SourceError(f"shard_index {shard_index} is outside [0, {num_shards})")
    check_source(cfg)
    if cfg.source == "emilia":
        return iter_emilia(cfg, num_shards=num_shards, shard_index=shard_index)
    readers = {"text-pairs": iter_text_pairs, "text": iter_text, "local": iter_local}
    rows = readers[cfg.source](cfg)
    return (row for i, row in enumerate(rows) if i % num_shards == shard_index)


# ---------------------------------------------------------------------------------------------- Emilia


def emilia_data_files(cfg: SourceConfig) -> list[str]:
    """`data_files` globs inside the Emilia repo: `{subset}/{LANG}/*.tar` for each subset x language."""
    if cfg.data_files:
        return list(cfg.data_files)
    return [
        f"{subset}/{EMILIA_LANG_DIRS[lang]}/*.tar" for subset in cfg.emilia_subsets for lang in cfg.languages
    ]


def emilia_features():
    """Features that keep the mp3 as raw bytes: datasets' Audio would need torchcodec to even encode them."""
    import datasets

    return datasets.Features(
        {
            "__key__": datasets.Value("string"),
            "__url__": datasets.Value("string"),
            "mp3": datasets.Value("binary"),
            "json": {
                "id": datasets.Value("string"),
                "text": datasets.Value("string"),
                "language": datasets.Value("string"),
                "speaker": datasets.Value("string"),
                "duration": datasets.Value("float64"),
                "dnsmos": datasets.Value("float64"),
            },
        }
    )


def iter_emilia(cfg: SourceConfig, *, num_shards: int = 1, shard_index: int = 0) -> Iterator[SourceRow]:
    """Stream Emilia / Emilia-YODAS (or any WebDataset of mp3 + json in Emilia's layout).

    `cfg.path` is a HF dataset id (default `amphion/Emilia-Dataset`, gated: log in first) or a local
    folder of `.tar` files; `data_files` are globs relative to it.
    """
    import datasets
    from datasets.distributed import split_dataset_by_node

    path = cfg.path or EMILIA_REPO
    files = emilia_data_files(cfg)
    if Path(path).is_dir():
        files = [str(Path(path) / pattern) for pattern in files]
        path = "webdataset"
    ds = datasets.load_dataset(
        path, data_files={"train": files}, split="train", streaming=True, features=emilia_features()
    )
    if num_shards > 1:
        ds = split_dataset_by_node(ds, rank=shard_index, world_size=num_shards)
    for example in ds:
        yield emilia_row(example)


def emilia_row(example: dict) -> SourceRow:
    """One WebDataset example (`{"__key__", "mp3": bytes, "json": {...}}`) as a `SourceRow`."""
    meta = example.get("json") or {}
    return SourceRow(
        id=meta.get("id") or example["__key__"],
        lang=(meta.get("language") or "").lower(),
        text=meta.get("text") or "",
        source="emilia",
        audio=example.get("mp3") or b"",
        speaker=meta.get("speaker") or "",
        duration=meta.get("duration"),
        dnsmos=meta.get("dnsmos"),
        recording=emilia_recording(meta.get("id") or example["__key__"]),
    )


def emilia_recording(segment_id: str) -> str | None:
    """The recording of an Emilia segment id: "JA_B00001_S00042_W000007" -> "JA_B00001_S00042".

    Emilia names a segment `{LANG}_B{batch}_S{source recording}_W{segment}`; ids of another shape
    give None (no context).
    """
    head, sep, tail = segment_id.rpartition("_W")
    return head if sep and head and tail.isdigit() else None


# ---------------------------------------------------------------------------------------------- local


def iter_local(cfg: SourceConfig) -> Iterator[SourceRow]:
    """A manifest (`.jsonl` / `.csv`; audio paths relative to it) or a folder of clips with `.txt` beside them."""
    path = Path(cfg.path)
    if path.is_dir():
        for audio in sorted(
            p for p in path.rglob("*") if p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg")
        ):
            txt = audio.with_suffix(".txt")
            text = txt.read_text(encoding="utf-8").strip() if txt.exists() else ""
            rel = audio.relative_to(path).with_suffix("").as_posix()
            yield SourceRow(id=rel, lang=cfg.folder_lang, text=text, source="local", audio=str(audio))
        return
    for line, record in enumerate(row.values for row in _read_local_manifest(path)):
        audio = record["audio"] or ""
        audio_path = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        yield SourceRow(
            id=record["id"] or Path(audio).with_suffix("").as_posix() or f"line{line}",
            lang=(record["language"] or "").lower(),
            text=record["text"] or "",
            source="local",
            audio=str(audio_path),
            speaker=record["speaker"] or "",
            duration=float(record["duration"]) if record["duration"] is not None else None,
            tgt_text=record["tgt_text"] or None,
            recording=record["recording"],
        )


LOCAL_MANIFEST_FIELDS = {
    "id": Field("id"),
    "audio": Field("str", aliases=("audio_path",)),  # kept as written: the default id is its stem
    "language": Field("str", aliases=("lang",)),  # any string: unsupported languages are dropped and counted
    "text": Field("str"),
    "speaker": Field("id"),
    "duration": Field("number"),
    "tgt_text": Field("str"),
    "recording": Field("id"),
}
"""A local manifest's fields (`sts.manifest`): a wrong type or bad line stops the build before any work."""


def _read_local_manifest(path: Path):
    try:
        return read_manifest(path, LOCAL_MANIFEST_FIELDS)
    except ManifestError as err:
        raise SourceError(str(err)) from err


# ---------------------------------------------------------------------------------------------- text pairs


def iter_text_pairs(cfg: SourceConfig) -> Iterator[SourceRow]:
    """Line-aligned `path` (source language `folder_lang`) and `tgt_path`; both sides get synthesized."""
    src_lines = Path(cfg.path).read_text(encoding="utf-8").splitlines()
    tgt_lines = Path(cfg.tgt_path).read_text(encoding="utf-8").splitlines()
    if len(src_lines) != len(tgt_lines):
        raise SourceError(f"{cfg.path} has {len(src_lines)} lines but {cfg.tgt_path} has {len(tgt_lines)}")
    stem = Path(cfg.path).stem
    for line, (src, tgt) in enumerate(zip(src_lines, tgt_lines, strict=True)):
        yield SourceRow(
            id=f"{stem}-{line:08d}",
            lang=cfg.folder_lang,
            text=src.strip(),
            source="text-pairs",
            tgt_text=tgt.strip(),
        )


def iter_text(cfg: SourceConfig) -> Iterator[SourceRow]:
    """One sentence per line of `path`, in language `folder_lang`: text-only rows whose speech the TTS
    makes (ids `{stem}-{line:08d}`, as for text pairs; a blank line is a row dropped as `text_empty`)."""
    stem = Path(cfg.path).stem
    for line, text in enumerate(Path(cfg.path).read_text(encoding="utf-8").splitlines()):
        yield SourceRow(id=f"{stem}-{line:08d}", lang=cfg.folder_lang, text=text.strip(), source="text")
