"""Fit the offline/demo codec (k-means over log-mel frames) from audio, in seconds (`sts-fit-codec`).

    sts-fit-codec corpus/demo -o runs/codec --codebook-size 512      # a corpus folder's src/tgt audio
    sts-fit-codec clips/ more.wav -o runs/codec                       # audio files and folders
    codec, clips, seconds = fit_codec(FitCodecConfig([Path("clips")], out_dir=Path("runs/codec")))

Inputs are audio files (wav/flac/mp3/ogg), folders searched recursively for them, and corpus folders
written by `sts-build-corpus` (both `src_audio` and `tgt_audio` of every `part-*.parquet`). The
result is a directory that `sts.codec.load_codec` opens as `MelKMeansCodec`; `sts-encode --codec
DIR` and every other stage take it where they take XCodec2. It is the offline demo's codec, not a
replacement for XCodec2 (see `sts.codec.melkmeans`). Expected failures (a missing input, a clip that
cannot be decoded, too little audio) are one line and exit status 2 (`sts.errors.cli_main`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import tyro
from annotated_types import Ge, Gt

from sts.audio import DEFAULT_MAX_AUDIO_SECONDS, load_audio
from sts.codec.melkmeans import MelKMeansCodec
from sts.corpus import shard_paths
from sts.errors import UsageError, writing

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


@dataclass
class FitCodecConfig:
    """Fit the offline/demo codec (k-means units over 50 Hz log-mel frames) from audio."""

    inputs: tyro.conf.Positional[list[Path]]
    """Audio files, folders of audio, or corpus folders (part-*.parquet)."""
    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/codec")
    """Output folder (codec.json + centroids.npy)."""
    codebook_size: Annotated[int, Ge(2)] = 512
    """Number of codes (speech tokens)."""
    max_seconds: Annotated[float, Gt(0)] = 3600.0
    """Use at most this much audio (the first files found); one clip longer than this is refused from its header."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the k-means initialisation."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"out": "out_dir"}
    """Old names, for old files and flags."""


def iter_waveforms(
    inputs: Sequence[Path], max_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS
) -> Iterator[np.ndarray]:
    """16 kHz mono float32 waveforms from files, folders and corpus folders, in a stable order.

    A clip longer than `max_seconds` (or bigger once decoded, `sts.audio.load_audio`), as its header
    says, is refused before it is decoded: `AudioLimitError` naming it (raise it with --max-seconds)."""
    load = functools.partial(load_audio, max_seconds=max_seconds, limit_hint="raise it with --max-seconds")
    for path in inputs:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(2, "no such file or folder", str(path))
        shards = shard_paths(path) if path.is_dir() else []
        if shards:
            import pyarrow.parquet as pq

            for shard in shards:
                table = pq.read_table(shard, columns=["id", "src_audio", "tgt_audio"])
                for row in table.to_pylist():
                    for side in ("src_audio", "tgt_audio"):
                        if row[side] is None:  # a monolingual row has no target side
                            continue
                        yield load(row[side]["bytes"], name=f"{shard.name}:{row['id']}:{side}")
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
                yield load(file)
        else:
            yield load(path)


def fit_codec(cfg: FitCodecConfig) -> tuple[object, int, float]:
    """Fit the codec on the first `cfg.max_seconds` of audio and save it to `cfg.out_dir`; returns
    (the `MelKMeansCodec`, clips used, seconds used). Too little audio for the codebook is a
    `UsageError` naming the inputs."""

    waveforms, seconds = [], 0.0
    for waveform in iter_waveforms(cfg.inputs, cfg.max_seconds):  # no one clip beyond the whole budget
        waveforms.append(waveform)
        seconds += len(waveform) / MelKMeansCodec.sample_rate
        if seconds >= cfg.max_seconds:
            break
    try:
        codec = MelKMeansCodec.fit(waveforms, codebook_size=cfg.codebook_size, seed=cfg.seed)
    except ValueError as err:  # too little audio for the codebook: the input's fault
        raise UsageError(f"{', '.join(map(str, cfg.inputs))}: {err}") from err
    with writing(cfg.out_dir):
        codec.save(cfg.out_dir)
    return codec, len(waveforms), seconds
