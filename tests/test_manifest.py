"""`sts.manifest`: one reader for every manifest, every field typed, errors at FILE:LINE."""

from __future__ import annotations

import pytest

from sts.errors import ManifestError
from sts.manifest import Field, read_manifest

FIELDS = {
    "id": Field("id"),
    "audio": Field("path", required=True, exists=True, aliases=("audio_path",)),
    "lang": Field("lang"),
    "seconds": Field("number"),
    "text": Field("str"),
}


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    return tmp_path


def test_jsonl_rows_are_converted(folder):
    path = folder / "m.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"id": 3, "audio": "a.wav", "lang": "JA", "seconds": 1.5}\n\n'
        b'{"audio_path": "a.wav", "text": "\xe3\x81\x82", "extra": [1]}\n'
    )
    first, second = read_manifest(path, FIELDS)
    assert (first.line, second.line) == (1, 3)  # the BOM is skipped, the blank line counted
    assert first.values == {"id": "3", "audio": folder / "a.wav", "lang": "ja", "seconds": 1.5, "text": None}
    assert second.values["audio"] == folder / "a.wav" and second.values["text"] == "あ"
    assert second.values["extra"] == [1] and "audio_path" not in second.values


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"audio": "a.wav"}\n{"audio": "a.wav",\n', r"m.jsonl:2: not valid JSON \(.* at column 19\)"),
        (b'{"audio": "a.wav"}\n[1, 2]\n', "m.jsonl:2: expected a JSON object, got list"),
        (
            b'{"audio": "a.wav"}\n{"audio": "a.wav", "text": "\xff"}\n',
            r"m.jsonl:2: not UTF-8 text \(byte 0xff",
        ),
        (b'{"audio": 5}\n', r"m.jsonl:1: 'audio' must be a string path, got 5"),
        (b'{"audio": "nope.wav"}\n', r"m.jsonl:1: audio 'nope.wav': no such file"),
        (b'{"audio": "."}\n', r"m.jsonl:1: audio '.': a folder, not a file"),
        (b'{"text": "x"}\n', r"m.jsonl:1: needs 'audio' \(or \['audio_path'\]\)"),
        (b'{"audio": "a.wav", "lang": "fr"}\n', r"m.jsonl:1: 'lang' must be one of \['ja', 'en'\], got 'fr'"),
        (b'{"audio": "a.wav", "seconds": "long"}\n', r"m.jsonl:1: 'seconds' must be a number, got 'long'"),
        (b'{"audio": "a.wav", "seconds": true}\n', r"m.jsonl:1: 'seconds' must be a number, got True"),
        (b'{"audio": "a.wav", "id": 1.5}\n', r"m.jsonl:1: 'id' must be a string \(or an integer\), got 1.5"),
    ],
)
def test_jsonl_errors_name_the_line(folder, content, message):
    (folder / "m.jsonl").write_bytes(content)
    with pytest.raises(ManifestError, match=message):
        read_manifest(folder / "m.jsonl", FIELDS)


def test_csv_lines_and_errors(folder):
    path = folder / "m.csv"
    path.write_bytes(b'\xef\xbb\xbfid,audio,text,seconds\nx,a.wav,"two\nlines",2\n,,,\ny,a.wav,plain,3\n')
    rows = read_manifest(path, FIELDS)
    assert [(r.line, r.values["id"], r.values["seconds"]) for r in rows] == [(2, "x", 2.0), (5, "y", 3.0)]
    assert rows[0].values["text"] == "two\nlines"
    path.write_text("id,audio,seconds\nx,a.wav,2\ny,a.wav,soon\n")
    with pytest.raises(ManifestError, match=r"m.csv:3: 'seconds' must be a number, got 'soon'"):
        read_manifest(path, FIELDS)
    path.write_text("id,audio\nx,a.wav,extra\n")
    with pytest.raises(ManifestError, match=r"m.csv:2: 2 header columns, more cells here"):
        read_manifest(path, FIELDS)
