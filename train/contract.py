"""The codec contract where training starts: the corpus's codes must be the model's speech tokens.

    from train.contract import check_corpus
    check_corpus(shards, vocab, Path(model) / "sts_vocab.json")   # raises before anything is tokenized

`sts-encode` records in each corpus folder's `corpus.json` (`card["encode"]`) the codec that made the
codes, its frame rate and its codebook size; `sts-extend-tokenizer` records in `sts_vocab.json` the
codec whose codes the speech block holds, its frame rate and `num_speech_tokens`. Codes of another
codebook or frame rate are meaningless to the model, so a mismatch stops `sts-train` naming both
values and both files (`sts.vocab.CodecMismatchError`). When only the codec names differ (a hub id
and a local copy of the same checkpoint), `allow_name_mismatch` (`--data.allow-codec-name-mismatch`) lets
training go on. A shard folder without an encode record, or a shard without `src_codes` /
`tgt_codes`, was not encoded (`CorpusContractError`; run `sts-encode`); `allow_unrecorded`
(`--data.allow-unrecorded-codec`) accepts encoded shards whose folder has no record. Every shard a used
folder's card records must be there as recorded (rows, size, Parquet footer: `sts.corpus.check_shards`):
a shard deleted or changed since is a `CorpusError` naming it, before its rows could silently
go missing from (or change in) the training data while the card still counts them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sts.corpus import CARD_NAME, check_shards, corpus_dir_of, read_card
from sts.errors import InputError
from sts.paths import resolve_recorded
from sts.vocab import CodecMismatchError, SpeechVocab

log = logging.getLogger(__name__)

REMEDY = (
    "restore it, or rebuild the corpus with the command that made it (sts-build-corpus builds missing "
    "chunks again; delete a changed shard first) and sts-encode it"
)
NEEDED_COLUMNS = ("id", "src_lang", "tgt_lang", "src_text", "tgt_text", "src_codes", "tgt_codes")
"""Columns training reads from a shard."""


class CorpusContractError(InputError, ValueError):
    """Shards that are not an encoded corpus (no code columns, no codec record)."""


def check_corpus(
    shards: list[Path],
    vocab: SpeechVocab,
    vocab_file: Path,
    *,
    allow_name_mismatch: bool = False,
    allow_unrecorded: bool = False,
) -> None:
    """Check every shard's columns and every shard folder's codec record against `vocab`.

    Reads only Parquet schemas and the cards (no rows). Raises `CorpusContractError` for a shard
    without the code (or text) columns or, unless `allow_unrecorded`, a folder without an encode
    record; `CodecMismatchError` when a record's codebook size or frame rate differs from `vocab`,
    or its codec name does unless `allow_name_mismatch`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    for shard in shards:
        try:
            names = set(pq.read_schema(shard).names)
        except (pa.ArrowInvalid, OSError) as err:  # pyarrow's message names no file
            raise CorpusContractError(f"{shard}: not a readable Parquet shard ({err})") from err
        if "src_codes" not in names or "tgt_codes" not in names:
            raise CorpusContractError(
                f"{shard}: no src_codes/tgt_codes columns: the corpus is not encoded; "
                f"run `sts-encode {corpus_dir_of(shard)} --codec {vocab.codec}` first"
            )
        missing = [c for c in NEEDED_COLUMNS if c not in names]
        if missing:
            raise CorpusContractError(f"{shard}: not a corpus shard, it lacks the column(s) {missing}")

    for folder in sorted({corpus_dir_of(shard) for shard in shards}):
        check_shards(folder, remedy=REMEDY)  # a shard deleted or changed since the card recorded it
        card_file = folder / CARD_NAME
        record = read_card(folder).get("encode")
        if not isinstance(record, dict) or "codebook_size" not in record:
            if not allow_unrecorded:
                raise CorpusContractError(
                    f'{card_file}: no codec record ("encode": codec, frame rate, codebook size), so '
                    f"the codes cannot be checked against {vocab_file}; encode the corpus with "
                    f"`sts-encode {folder} --codec {vocab.codec}`, or pass --data.allow-unrecorded-codec "
                    "to train on codes of unknown origin"
                )
            log.warning(
                "%s: no codec record; training on codes of unknown origin (--data.allow-unrecorded-codec)",
                card_file,
            )
            continue
        codec = resolve_recorded(record.get("codec"), folder)  # recorded relative to the card (sts.paths)
        rate, size = record.get("frame_rate"), record.get("codebook_size")
        differences = vocab.codec_differences(codec, rate, size)
        if not differences:
            continue
        message = (
            f"codec mismatch: {card_file} records codes of {codec!r} ({size} codes, {rate} per second) "
            f"but {vocab_file} holds speech tokens of {vocab.codec!r} ({vocab.num_speech_tokens} codes, "
            f"{vocab.frame_rate} per second)"
        )
        if differences == ["codec"]:
            if allow_name_mismatch:
                log.warning(
                    "%s; same codebook size and frame rate: going on (--data.allow-codec-name-mismatch)",
                    message,
                )
                continue
            raise CodecMismatchError(
                f"{message}; only the names differ: if both name the same checkpoint, pass "
                "--data.allow-codec-name-mismatch, else re-encode the corpus with the model's codec"
            )
        raise CodecMismatchError(
            f"{message}; re-encode the corpus with the model's codec (`sts-encode --reencode`)"
        )
