"""The corpus folder contract: where a corpus's shards and card are, read by every stage.

    from sts.corpus import shard_paths, read_card, read_rows
    shard_paths("corpus/ja-en")            # [Path] of data/part-*.parquet, sorted
    read_card("corpus/ja-en")["encode"]    # what sts-encode recorded (codec, frame rate, codebook)
    read_rows("corpus/ja-en", columns=["id", "src_text"])   # [dict], small corpora and tests only
    check_shards("corpus/ja-en")           # CorpusError naming each shard the card records that is missing or changed
    duration_ratios(shard_paths("corpus/ja-en"))   # {"ja-en": {"n", "p50", "p90", "p99", "max"}, "en-ja": ...}

Layout of a corpus folder (the way Hugging Face `datasets` lays out a Parquet dataset repository):

    corpus/ja-en/
        README.md       dataset card: YAML front matter (configs -> data/*.parquet, features), then prose
        corpus.json     the card as data: counts, hours, drops, models, versions, command, config, encode
        data/part-00000-of-00004-000012.parquet    the rows (chunk 12 of worker 0 of 4)
        drops/part-00000-of-00004-000012.parquet   the rows that chunk dropped: reason, evidence
        .progress/      the builder's resume state and locks (hidden: readers skip it)

so `datasets.load_dataset("corpus/ja-en")`, `pandas.read_parquet("corpus/ja-en/data")` and
`pyarrow.dataset.dataset("corpus/ja-en/data")` open it as it is (the folder itself also holds
README.md and corpus.json, which pandas/pyarrow would try to read as Parquet: point them at `data/`).
Folders written before the `data/` layout (shards beside corpus.json) are still read, and the builder
keeps writing such a folder the old way (`shard_dir`).

`sts-build-corpus` writes the folder (`corpus_builder.shards`), `sts-encode` adds code columns,
`sts-train`, `sts-fit-codec` and the recipes read it. Only this module knows the layout.

A shard is a Parquet file that `datasets.load_dataset("parquet", data_files=...)` opens with the
features of `corpus_features()` (the `huggingface` schema metadata carries them). Audio columns are
`datasets.Audio` structs `{"bytes": <flac or wav file bytes>, "path": <name>}`, stored at their own
rate; open them with `Audio(decode=False)` and `sts.audio.load_audio(row["src_audio"]["bytes"])`
(datasets 5.x decodes audio only through torchcodec/FFmpeg). `sts-encode` adds the code columns
(`encoded_features()`).

Monolingual rows (`sts-build-corpus --mt none`: transcribed speech, or text spoken by a TTS, in one
language) have no translation side: `tgt_lang`, `tgt_text`, `tgt_audio`, `tgt_duration` (and after
encoding `tgt_codes`) are null, and `mt_backend` is "none". `tgt_lang` null is what marks such a row
(`is_monolingual`); the card says how many there are (`corpus.json` `kind` and `monolingual`). They
serve the one-language tasks (`asr`, `tts`, cpt speech); a task that needs both sides does not use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sts.errors import InputError
from sts.io import read_json

CARD_NAME = "corpus.json"
"""The card beside the shards: counts, hours, drops, models, versions, command, `duration_ratio`,
`shards` (each shard's path, rows, size, footer hash and SHA-256: `shard_record`; what
`shard_problems` checks), and `encode`."""
README_NAME = "README.md"
"""The dataset card `datasets` reads: YAML front matter with `configs` and `features`, then prose."""
SHARD_DIR = "data"
"""Subfolder of the shards (`datasets`' convention for a repository's data files)."""
MT_NONE = "none"
"""`mt_backend` of a monolingual row (`sts-build-corpus --mt none`)."""
DURATION_RATIO_PERCENTILES = (50, 90, 99)
"""Percentiles of the target/source duration ratio a card records (with n and max)."""
SHARD_GLOB = "part-*.parquet"
DROPS_DIR = "drops"
"""Subfolder of the drop log: one Parquet file per chunk, named like its shard (`drop_features()`)."""


class CorpusError(InputError, ValueError):
    """A corpus folder, source or build that cannot go on; the message names the folder or file."""


def shard_dir(corpus_dir: str | Path) -> Path:
    """The folder new shards of `corpus_dir` go to: `corpus_dir/data`, except in a folder written
    before that layout (shards at the top, no `data/`), which keeps its layout."""
    corpus_dir = Path(corpus_dir)
    if not (corpus_dir / SHARD_DIR).is_dir() and any(corpus_dir.glob(SHARD_GLOB)):
        return corpus_dir
    return corpus_dir / SHARD_DIR


def shard_paths(corpus_dir: str | Path) -> list[Path]:
    """The Parquet shards of a corpus folder (`data/part-*.parquet`, and `part-*.parquet` at the top
    in older folders), sorted by file name; empty when there are none."""
    corpus_dir = Path(corpus_dir)
    found = [*corpus_dir.glob(f"{SHARD_DIR}/{SHARD_GLOB}"), *corpus_dir.glob(SHARD_GLOB)]
    return sorted(found, key=lambda p: (p.name, str(p)))


def drop_paths(corpus_dir: str | Path) -> list[Path]:
    """The drop log's files (`drops/part-*.parquet`), sorted: every row `sts-build-corpus` dropped,
    with its reason and evidence (`drop_features()`); empty when nothing was dropped (or the folder was
    built before the log existed: its card's `drop_log.complete` says so)."""
    return sorted(Path(corpus_dir).glob(f"{DROPS_DIR}/{SHARD_GLOB}"))


def corpus_dir_of(shard: str | Path) -> Path:
    """The corpus folder a shard file belongs to: the folder above `data/` that holds the card, or
    (old layout, loose files) the shard's own folder."""
    parent = Path(shard).parent
    if parent.name == SHARD_DIR and (parent.parent / CARD_NAME).is_file():
        return parent.parent
    return parent


def is_corpus_dir(path: str | Path) -> bool:
    """Whether `path` is a folder with shards or a corpus card."""
    path = Path(path)
    return path.is_dir() and (bool(shard_paths(path)) or (path / CARD_NAME).is_file())


def read_card(corpus_dir: str | Path) -> dict:
    """`corpus.json` of a corpus folder, or {} when it has none; a damaged one is an
    `sts.errors.CorruptFileError` (or `CorpusError`) naming it."""

    path = Path(corpus_dir) / CARD_NAME
    if not path.is_file():
        return {}
    card = read_json(path, what="the corpus card")  # CorruptFileError naming path:LINE:COLUMN
    if not isinstance(card, dict):
        raise CorpusError(f"{path}: the corpus card is not a JSON object")
    return card


def shard_record(path: str | Path | bytes, *, checksum: bool = True) -> dict:
    """What a card records of a shard file (or of the bytes of one): `{"rows", "bytes", "footer",
    "sha256"}`.

    rows: from the Parquet footer; footer: SHA-256 (16 hex digits) of the Parquet footer (the file's
    schema, row groups, column chunk offsets, sizes and statistics: what any rewrite changes), read
    from the end of the file; sha256: of the whole file (`sha256sum`'s value), left out when not
    `checksum`. Raises `CorpusError` naming a file that is not Parquet.
    """
    import hashlib
    import io
    import struct

    import pyarrow as pa
    import pyarrow.parquet as pq

    data = path if isinstance(path, bytes) else None
    path = Path("<bytes>") if data is not None else Path(path)
    size = len(data) if data is not None else path.stat().st_size
    try:
        with io.BytesIO(data) if data is not None else open(path, "rb") as f:
            f.seek(max(0, size - 8))
            tail = f.read(8)
            if len(tail) < 8 or tail[4:] != b"PAR1":
                raise ValueError("no Parquet footer at the end of the file")
            (footer_len,) = struct.unpack("<I", tail[:4])
            if footer_len + 8 > size:
                raise ValueError("its footer length runs past the start of the file")
            f.seek(size - 8 - footer_len)
            footer = hashlib.sha256(f.read(footer_len)).hexdigest()[:16]
        rows = pq.read_metadata(pa.BufferReader(data) if data is not None else path).num_rows
    except (OSError, ValueError) as err:  # pyarrow's errors (ArrowInvalid) are ValueErrors
        raise CorpusError(f"{path}: not a readable Parquet shard ({err})") from err
    record = {"rows": rows, "bytes": size, "footer": footer}
    if checksum:
        digest = hashlib.sha256()
        with io.BytesIO(data) if data is not None else open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        record["sha256"] = digest.hexdigest()
    return record


def shard_problems(corpus_dir: str | Path, *, checksums: bool = False) -> list[str]:
    """Each shard the card's `shards` list records that is missing or is not the file it recorded,
    as one line naming it (empty when every recorded shard is in place; a card of an older version,
    which records none, has nothing to check).

    A shard is the one recorded when its row count, size and Parquet footer are (`shard_record`: a
    replaced, truncated, re-written or re-encoded file differs) or, with `checksums`, its SHA-256
    (reads every byte). An entry may also carry `next`, the record of a rewrite in progress
    (`sts-encode` writes it before renaming the new file into place): either one counts.
    """
    corpus_dir = Path(corpus_dir)
    problems = []
    for entry in read_card(corpus_dir).get("shards", []):
        if not isinstance(entry, dict) or "rows" not in entry:
            continue
        path = corpus_dir / entry["path"]
        if not path.is_file():
            problems.append(f"{path}: missing (corpus.json records it with {entry['rows']:,} rows)")
            continue
        try:
            now = shard_record(path, checksum=checksums and "sha256" in entry)
        except CorpusError as err:
            problems.append(str(err))
            continue
        if not record_matches(entry, now):
            was = ", ".join(f"{k} {entry.get(k)}" for k in now if entry.get(k) != now[k])
            is_now = ", ".join(f"{k} {now[k]}" for k in now if entry.get(k) != now[k])
            problems.append(f"{path}: changed since corpus.json recorded it ({was}; now {is_now})")
    return problems


def record_matches(recorded: dict, now: dict) -> bool:
    """Whether a shard's record (`shard_record`) as `now` is the `recorded` one, or the record of the
    rewrite in progress it carries as `next`; fields one side lacks are not compared."""
    candidates = [recorded, *([recorded["next"]] if isinstance(recorded.get("next"), dict) else [])]
    return any(all(c.get(k) == v for k, v in now.items() if k in c) for c in candidates)


def check_shards(corpus_dir: str | Path, *, checksums: bool = False, remedy: str = "") -> None:
    """Raise `CorpusError` naming every missing or changed shard (`shard_problems`) and `remedy`."""
    problems = shard_problems(corpus_dir, checksums=checksums)
    if problems:
        more = f" ({len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CorpusError(f"{'; '.join(problems[:3])}{more}{'; ' + remedy if remedy else ''}")


def is_monolingual(row: dict) -> bool:
    """Whether a corpus row (a dict with `tgt_lang`) is monolingual: it has no translation side."""
    return row.get("tgt_lang") is None


def read_rows(corpus_dir: str | Path, columns: Sequence[str] | None = None) -> list[dict]:
    """Every row of every shard as a dict (optionally only `columns`); for small corpora and tests."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for shard in shard_paths(corpus_dir):
        rows += pq.read_table(shard, columns=list(columns) if columns else None).to_pylist()
    return rows


def duration_ratios(shards: Sequence[str | Path]) -> dict[str, dict]:
    """How long speech gets when it is translated: the target/source duration ratio per direction.

    Reads only `src_lang`, `tgt_lang`, `src_duration`, `tgt_duration` of the Parquet `shards`.
    Monolingual rows (no `tgt_lang`) have no ratio and are left out (not counted as skipped).
    Every row serves both directions (as sft trains s2st both ways): for "ja-en" a ja->en row gives
    tgt/src and an en->ja row src/tgt, the other direction is the inverse of the same rows. Returns
    `{"ja-en": {"n", "p50", "p90", "p99", "max", "skipped"}, "en-ja": {...}}` (ratios rounded to
    4 places; `skipped`: rows whose durations are missing, not finite or not positive), `{}` when
    there are no rows. Raises ValueError naming the shard when it lacks one of the columns.
    """
    import pyarrow.parquet as pq

    columns = ["src_lang", "tgt_lang", "src_duration", "tgt_duration"]
    ratios: dict[str, list] = {}
    skipped: dict[str, int] = {}
    for shard in shards:
        try:
            table = pq.read_table(shard, columns=columns)
        except (KeyError, ValueError) as err:  # pyarrow names the missing column
            raise ValueError(f"{shard}: cannot read the duration columns {columns} ({err})") from err
        data = table.to_pydict()
        parallel = [i for i, lang in enumerate(data["tgt_lang"]) if lang is not None]
        if len(parallel) < len(data["tgt_lang"]):  # monolingual rows carry no translation ratio
            data = {k: [v[i] for i in parallel] for k, v in data.items()}
        src = np.asarray(data["src_duration"], dtype=np.float64)
        tgt = np.asarray(data["tgt_duration"], dtype=np.float64)
        langs = np.asarray([f"{a}-{b}" for a, b in zip(data["src_lang"], data["tgt_lang"], strict=True)])
        good = np.isfinite(src) & np.isfinite(tgt) & (src > 0) & (tgt > 0)
        for pair in np.unique(langs):
            a, b = pair.split("-", 1)
            rows = langs == pair
            for direction, value in ((pair, tgt / src), (f"{b}-{a}", src / tgt)):
                ratios.setdefault(direction, []).append(value[rows & good])
                skipped[direction] = skipped.get(direction, 0) + int((rows & ~good).sum())
    out = {}
    for direction in sorted(ratios):
        values = np.concatenate(ratios[direction])
        if len(values) == 0:
            continue
        summary = {"n": len(values)}
        for q, value in zip(
            DURATION_RATIO_PERCENTILES, np.percentile(values, DURATION_RATIO_PERCENTILES), strict=True
        ):
            summary[f"p{q}"] = round(float(value), 4)
        out[direction] = summary | {"max": round(float(values.max()), 4), "skipped": skipped[direction]}
    return out


def _features(with_codes: bool):
    import datasets

    columns = {
        "id": datasets.Value("string"),  # unique over the corpus; the resume key
        "src_lang": datasets.Value("string"),  # "ja" | "en"
        "tgt_lang": datasets.Value("string"),  # null: a monolingual row (no tgt_* side)
        "src_text": datasets.Value("string"),  # transcript of src_audio
        "tgt_text": datasets.Value("string"),  # translation, spoken in tgt_audio
        "src_audio": datasets.Audio(decode=False),
        "tgt_audio": datasets.Audio(decode=False),
        "src_duration": datasets.Value("float32"),  # seconds
        "tgt_duration": datasets.Value("float32"),
        "speaker": datasets.Value("string"),  # source speaker id, "" when unknown
        "source": datasets.Value("string"),  # e.g. "emilia", "local", "text-pairs"
        "mt_backend": datasets.Value("string"),  # e.g. "hf:LiquidAI/LFM2-350M-ENJP-MT", "reference", "none"
        "tts_backend": datasets.Value("string"),
        "tgt_asr_error": datasets.Value(
            "float32"
        ),  # CER (ja) / WER (en) of ASR(tgt_audio) vs tgt_text; null = unchecked or unscored
        "speaker_similarity": datasets.Value(
            "float32"
        ),  # cosine(src, tgt) speaker embeddings; null = no comparison (no source clip, too little voice)
        # CER / WER of ASR(src_audio) vs src_text where the source speech was synthesized and checked
        # (monolingual rows made from text); null = unchecked
        "src_asr_error": datasets.Value("float32"),
    }
    if with_codes:
        columns["src_codes"] = datasets.List(datasets.Value("int32"))  # [T_src], 50 per second
        columns["tgt_codes"] = datasets.List(datasets.Value("int32"))  # [T_tgt]
    return datasets.Features(columns)


def drop_features():
    """Features of the drop log (`drops/part-*.parquet`): one row per source row the builder dropped.

    Unknown or unmeasured values are null (never NaN): a duration before the audio was decoded, a
    score of a check that did not run or could not score (no voice to compare)."""
    import datasets

    text, number = datasets.Value("string"), datasets.Value("float32")
    return datasets.Features(
        {
            "id": text,  # the source row's id
            "source": text,  # e.g. "emilia", "local", "text-pairs"
            "src_lang": text,
            "tgt_lang": text,  # null: a monolingual row (no translation side)
            "reason": text,  # the drop reason counted in corpus.json `drops`, e.g. "check_asr_round_trip"
            "detail": text,  # what it rests on, in words: the decoder's error, a level, a budget hit
            "src_text": text,  # the transcript
            "tgt_text": text,  # the translation, when MT ran (kept when it is why: mt_truncated)
            "src_duration": number,  # seconds (the source's metadata before decoding)
            "tgt_duration": number,  # seconds of synthesized target speech
            "dnsmos": number,  # the source's DNSMOS, where it gives one
            "asr_text": text,  # what the ASR check heard in the target (monolingual: the synthesized) speech
            "tgt_asr_error": number,  # CER (ja) / WER (en) of asr_text vs tgt_text
            "src_asr_error": number,  # the same for a monolingual row's synthesized speech vs src_text
            "speaker_similarity": number,  # source vs target speaker embedding cosine
            "src_audio_path": text,  # a local source's audio file
            "evidence": text,  # JSON object: other checks' scores and evidence
        }
    )


def corpus_features():
    """Features of a shard as `sts-build-corpus` writes it."""
    return _features(with_codes=False)


def encoded_features():
    """Features of a shard after `sts-encode` added `src_codes` / `tgt_codes`."""
    return _features(with_codes=True)
