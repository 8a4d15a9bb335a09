"""Manifests (JSONL or CSV, one utterance per line) read once, every field's type checked up front.

    from sts.manifest import Field, read_manifest
    rows = read_manifest("test.jsonl", {"id": Field("id"), "audio": Field("path", required=True, exists=True),
                                       "src_lang": Field("lang")})
    rows[0].line, rows[0].values["audio"]          # 1, Path("/data/test/a.wav") (relative to the manifest)

Every reader of a manifest (`sts-infer` batch mode, `sts-eval`, the corpus builder's local source)
goes through `read_manifest`, so every bad line fails the same way, before any work starts: a
`sts.errors.ManifestError` whose message is `FILE:LINE: problem` (not valid JSON, not UTF-8, not an
object, a field of the wrong type, a language outside `sts.LANGUAGES`, a missing audio file). A
UTF-8 byte-order mark (as Windows editors write) is accepted; blank lines are skipped. In a CSV file
the line is the physical line the record starts on (the header is line 1).

Field kinds: "str" (a string), "id" (a string, or an integer taken as its decimal string), "lang"
(one of `sts.LANGUAGES`), "path" (a string path, resolved against the manifest's folder unless
absolute; `exists` checks it is a file), "number" (an int or float; in CSV a string that parses as
one). Fields not named are passed through unchecked.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sts import LANGUAGES
from sts.errors import ManifestError

Kind = Literal["str", "id", "lang", "path", "number"]


@dataclass(frozen=True)
class Field:
    """How one manifest field is checked."""

    kind: Kind = "str"
    """What the value must be (see the module docstring)."""
    required: bool = False
    """A missing, null or empty value is an error (otherwise it reads as None)."""
    exists: bool = False
    """"path" only: the resolved path must be an existing file."""
    aliases: tuple[str, ...] = ()
    """Other names the field may be given under (the first one present wins), e.g. ("audio_path",)."""


@dataclass
class ManifestRow:
    """One record of a manifest."""

    line: int
    """1-based line number in the file (CSV: where the record starts; the header is line 1)."""
    values: dict[str, Any] = field(default_factory=dict)
    """The record with checked fields converted (paths resolved, ids as strings, empty -> None)."""


def read_manifest(path: str | Path, fields: Mapping[str, Field]) -> list[ManifestRow]:
    """All records of a `.jsonl` (or `.json`-lines) or `.csv` manifest, each field checked.

    Raises `ManifestError` (`FILE:LINE: problem`) at the first bad line, FileNotFoundError for a
    missing manifest.
    """
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    records = _csv_records(path, data) if path.suffix.lower() == ".csv" else _jsonl_records(path, data)
    return [ManifestRow(line, _check(path, line, record, fields)) for line, record in records]


def _decode_line(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(
            path, number, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
        ) from err


def _jsonl_records(path: Path, data: bytes) -> list[tuple[int, dict]]:
    records = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        text = _decode_line(path, number, raw)
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise ManifestError(path, number, f"not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(record, dict):
            raise ManifestError(path, number, f"expected a JSON object, got {type(record).__name__}")
        records.append((number, record))
    return records


def _csv_records(path: Path, data: bytes) -> list[tuple[int, dict]]:
    lines = data.split(b"\n")
    text = "\n".join(_decode_line(path, n, raw) for n, raw in enumerate(lines, start=1))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records, start = [], 2
    try:
        for record in reader:
            if None in record:  # more cells than header names
                raise ManifestError(
                    path, start, f"{len(reader.fieldnames or [])} header columns, more cells here"
                )
            if any(v not in (None, "") for v in record.values()):
                records.append((start, record))
            start = reader.line_num + 1
    except csv.Error as err:
        raise ManifestError(path, reader.line_num, f"not valid CSV ({err})") from err
    return records


def _check(path: Path, line: int, record: dict, fields: Mapping[str, Field]) -> dict:
    out = dict(record)
    for name, spec in fields.items():
        key = next((k for k in (name, *spec.aliases) if k in record), name)
        value = record.get(key)
        for alias in spec.aliases:
            out.pop(alias, None)
        if value is None or value == "":
            if spec.required:
                raise ManifestError(
                    path, line, f"needs {name!r}" + (f" (or {list(spec.aliases)})" if spec.aliases else "")
                )
            out[name] = None
            continue
        out[name] = _convert(path, line, key, value, spec)
    return out


def _convert(path: Path, line: int, key: str, value: Any, spec: Field) -> Any:
    def wrong(expected: str) -> ManifestError:
        return ManifestError(path, line, f"{key!r} must be {expected}, got {value!r}")

    if spec.kind == "number":
        if isinstance(value, bool):
            raise wrong("a number")
        if isinstance(value, int | float):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise wrong("a number") from None
        raise wrong("a number")
    if spec.kind == "id":
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise wrong("a string (or an integer)")
        return value
    if not isinstance(value, str):
        raise wrong("a string" if spec.kind != "path" else "a string path")
    if spec.kind == "lang":
        lang = value.strip().lower()
        if lang not in LANGUAGES:
            raise wrong(f"one of {list(LANGUAGES)}")
        return lang
    if spec.kind == "path":
        resolved = Path(value).expanduser()
        resolved = resolved if resolved.is_absolute() else path.parent / resolved
        if spec.exists and not resolved.is_file():
            what = "a folder, not a file" if resolved.is_dir() else "no such file"
            raise ManifestError(path, line, f"{key} {value!r}: {what} ({resolved})")
        return resolved
    return value
