"""What `sts-eval` scores: one `EvalItem` per utterance, from a JSONL manifest or a standard test set.

    from infer.eval_items import EvalItem, read_manifest, item_audio
    items = read_manifest("test.jsonl")           # paths resolved against the manifest's folder
    item_audio(items[0])                          # [N] float32 16 kHz source speech

The manifest is JSONL, one utterance per line (paths relative to the manifest):

    {"id": "u1", "audio": "ja/u1.wav", "src_lang": "ja", "tgt_lang": "en",
     "src_text": "駅はどこですか", "tgt_text": "Where is the station?", "tgt_audio": "en/u1.wav"}

Standard test sets (`infer.testsets`: FLEURS, CVSS-C, CoVoST 2) give the same items, their audio
as a path or as the encoded bytes streamed from the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sts.audio import DEFAULT_MAX_AUDIO_SECONDS, load_audio
from sts.errors import ManifestError, UsageError
from sts.manifest import Field
from sts.manifest import read_manifest as read_manifest_rows


@dataclass
class EvalItem:
    """One test utterance."""

    id: str
    src_lang: str
    tgt_lang: str
    audio: Path | bytes | None = None
    """Source speech: a file, or its encoded bytes (wav/flac/mp3)."""
    src_text: str | None = None
    tgt_text: str | None = None
    tgt_audio: Path | bytes | None = None
    """Reference target speech (used by `codec_roundtrip`)."""


def item_audio(
    item: EvalItem, side: str = "source", max_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS
) -> np.ndarray:
    """The item's source (or "target") speech as `[N]` float32 at 16 kHz; raises `AudioError` naming
    it, `AudioLimitError` when its header says it is longer than `max_seconds` (`--max-audio-seconds`)."""
    audio = item.audio if side == "source" else item.tgt_audio
    name = f"{item.id} ({side} speech)" if isinstance(audio, bytes) else None
    return load_audio(
        audio, name=name, max_seconds=max_seconds, limit_hint="raise it with --max-audio-seconds"
    )


MANIFEST_FIELDS = {
    "id": Field("id"),
    "src_lang": Field("lang", required=True),
    "tgt_lang": Field("lang"),
    "audio": Field("path", exists=True),
    "tgt_audio": Field("path", exists=True),
    "src_text": Field("str"),
    "tgt_text": Field("str"),
}
"""The test manifest's fields (`sts.manifest`): each line checked before the model loads."""


def read_manifest(path: str | Path) -> list[EvalItem]:
    """Rows of a JSONL test manifest; audio paths resolved against the manifest's folder.

    Raises `sts.errors.ManifestError` (`FILE:LINE: problem`) for a line that is not a JSON object, a
    field of the wrong type, a language outside ja/en, an audio file that is not there, an id that
    is not a plain file name (generated audio is written as `audio/TASK/ID.wav`) or that an earlier
    line already has.
    """
    from infer.batch import check_output_id

    path = Path(path)
    items, lines = [], {}
    for row in read_manifest_rows(path, MANIFEST_FIELDS):
        values = row.values
        item_id = values["id"] or f"{row.line:06d}"
        try:
            check_output_id(item_id, f"{path}:{row.line}")
        except UsageError as err:
            raise ManifestError(path, row.line, str(err).split(": ", 1)[1]) from err
        if item_id in lines:
            raise ManifestError(path, row.line, f"id {item_id!r} is also the id of line {lines[item_id]}")
        lines[item_id] = row.line
        tgt_lang = values["tgt_lang"] or ("en" if values["src_lang"] == "ja" else "ja")
        known = EvalItem.__dataclass_fields__
        fields = {k: v for k, v in values.items() if k in known and k not in ("id", "tgt_lang")}
        items.append(EvalItem(id=item_id, tgt_lang=tgt_lang, **fields))
    return items
