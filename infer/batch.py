"""`sts-infer` output paths and batch bookkeeping: one output per input, committed with its results row.

    plan = plan_outputs(items, out_dir, ".wav")        # refuses two inputs with one output name
    ledger = Ledger(out_dir / "results.jsonl")
    pending = ledger.pending(plan)                      # inputs not done: no output, or no results row
    ledger.commit(row, target, write=lambda tmp: write_audio(tmp, wav))
    ledger.record_error(item_id, source, message)
    check_output_paths(cfg, batch=True, speech=True)   # -o a folder (.wav/.flac/.txt file otherwise), writable

Output names. An input's output is `OUT/<id><suffix>`: the file's stem for a folder of clips, the
manifest's `id` (default: the audio file's stem) for a manifest. Two inputs that would write one
output (two manifest rows with one id, or `x.wav` and `x.flac` in one folder) are refused before
anything runs, naming both; so is an id that is empty, starts with '.', or holds a path separator or
'..' (it would write outside `-o` or clash with the hidden temp files), with its manifest line.

Commit protocol (what a SIGKILL at any moment leaves): the output is written under a hidden temp
name (`.STEM.tmp-PID-HOST.SUFFIX`), then the results row is appended to results.jsonl and fsynced, then the
temp is renamed to its final name. An input counts as done only when its final output exists AND
results.jsonl holds its row; anything else (a row without its file, a file without its row, a temp
file) is redone on the next run. Before a run, results.jsonl is rewritten (atomically, only when
needed) without the rows of inputs about to be redone, so it never holds two rows for one id, and a
partial last line left by a kill is dropped.

Failed inputs (a clip that cannot be decoded, a manifest text holding special tokens, a language
that cannot be detected) get an error row, `{"id", "input", "error", "output": null}`, and are
retried by the next run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sts.errors import DiskFullError, ManifestError, OutputPathError, UsageError
from sts.io import append_text_durable, temp_owner, write_text_atomic

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
"""What batch mode reads from a folder (and what an output folder's name must not look like)."""
PAUSE_ENV = "STS_INFER_TEST_PAUSE"
"""Tests only: "after_output" or "after_row" (optionally ":ID", for that input only) makes
`Ledger.commit` print `paused: ID STEP` to stderr and sleep there, so a test can SIGKILL the
process between the writes of one commit."""


@dataclass
class Planned:
    """One batch input and the output it writes."""

    item: dict
    """The input: {"id", "audio"?, "text"?, "src_lang"?, "where"} (`where`: FILE:LINE or the file)."""
    target: Path
    """`OUT/<id><suffix>`."""


def check_output_id(item_id: str, where: str) -> None:
    """Refuse an id that cannot be a file name inside the output folder (`UsageError` naming `where`)."""
    problem = None
    if not item_id.strip():
        problem = "is empty"
    elif any(sep in item_id for sep in ("/", "\\", "\0")) or item_id in (".", ".."):
        problem = "holds a path separator or is '.'/'..': its output would be written outside -o"
    elif item_id.startswith("."):
        problem = "starts with '.': outputs are not hidden files (temp files are)"
    if problem:
        raise UsageError(f"{where}: id {item_id!r} {problem}")


def plan_outputs(items: Sequence[dict], out_dir: Path, suffix: str) -> list[Planned]:
    """Each input with its output path; raises `UsageError` naming both inputs when two would write
    one output, or an input whose id is not a plain file name (see `check_output_id`)."""
    seen: dict[str, dict] = {}
    plan = []
    for item in items:
        item_id = str(item["id"])
        check_output_id(item_id, item["where"])
        key = item_id.casefold()  # x.wav and X.wav are one file on case-insensitive filesystems
        if key in seen:
            first = seen[key]
            raise UsageError(
                f"{item['where']}: would write {out_dir / (item_id + suffix)}, as {first['where']} does "
                f"(outputs are named by {'id' if 'line' in first else 'file stem'}); give each input its own "
                f"{'id' if 'line' in first else 'name'}"
            )
        seen[key] = item
        plan.append(Planned(item, out_dir / f"{item_id}{suffix}"))
    return plan


def check_output_paths(cfg, *, batch: bool, speech: bool) -> None:
    """`cfg.output` (`-o`) and `cfg.results` of an `infer.cli.InferConfig` of the right kind and
    writable, before any model loads.

    Batch: `-o` is a folder (created if missing); one input: `.wav`/`.flac` for speech, `.txt` (or
    none, printed only) for text. Raises `UsageError` / `OutputPathError` naming the path.
    """
    out = cfg.output
    if batch:
        if out is None:
            raise UsageError(f"{cfg.input}: batch mode needs -o OUTPUT_FOLDER")
        if out.exists() and not out.is_dir():
            raise OutputPathError(f"{out}: is a file; batch mode writes one output per input into a folder")
        if not out.exists() and out.suffix.lower() in (*AUDIO_SUFFIXES, ".txt"):
            raise OutputPathError(f"{out}: looks like a file name; batch mode writes into a folder (-o DIR)")
        check_writable_folder(out)
    elif out is None:
        if speech:
            raise UsageError(f"task {cfg.task} writes audio: give -o OUT.wav (or .flac)")
    else:
        if out.is_dir():
            raise OutputPathError(f"{out}: is a folder; give an output file name")
        allowed = (".wav", ".flac") if speech else (".txt",)
        if out.suffix.lower() not in allowed:
            raise OutputPathError(
                f"{out}: {'speech' if speech else 'text'} is written as {' or '.join(allowed)}, "
                f"not {out.suffix or 'no suffix'!r}"
            )
        check_writable_folder(out.parent)
    if cfg.results is not None:
        if cfg.results.is_dir():
            raise OutputPathError(f"{cfg.results}: is a folder; --results names a JSONL file")
        check_writable_folder(cfg.results.parent)


def check_writable_folder(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be written in it (`OutputPathError` if not)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputPathError(f"{folder}: cannot write here ({err.strerror or err})") from err


def read_ledger(path: Path) -> list[dict]:
    """The rows of a results file; a partial last line (a killed append) is skipped. A bad line
    elsewhere is a `ManifestError` naming it (results.jsonl is written by sts-infer only)."""
    if not path.is_file():
        return []
    rows = []
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if number == len(lines):  # no newline after it: the append was cut short
                continue
            raise ManifestError(path, number, f"not a results row ({err}); remove the line to go on") from err
        if not isinstance(row, dict) or "id" not in row:
            raise ManifestError(path, number, "not a results row (no id); remove the line to go on")
        rows.append(row)
    return rows


class Ledger:
    """results.jsonl as the record of which inputs are done (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows = read_ledger(self.path)

    def is_done(self, planned: Planned) -> bool:
        """A results row without an error for this id whose output is the planned file, which exists."""
        item_id, target = str(planned.item["id"]), planned.target.resolve()
        return planned.target.is_file() and any(
            str(r["id"]) == item_id
            and not r.get("error")
            and r.get("output")
            and Path(r["output"]).resolve() == target
            for r in self.rows
        )

    def pending(self, plan: Sequence[Planned]) -> list[Planned]:
        """The planned inputs not done; results.jsonl is rewritten without their rows (and without
        duplicate rows or a cut-short last line) when it holds any, and their stale temp files go."""
        todo = [p for p in plan if not self.is_done(p)]
        redo = {str(p.item["id"]) for p in todo}
        kept: dict[str, dict] = {}
        for row in self.rows:  # the last row of an id wins; ids to redo lose theirs
            if str(row["id"]) not in redo:
                kept.pop(str(row["id"]), None)
                kept[str(row["id"])] = row
        if self.path.is_file() and (len(kept) != len(self.rows) or not _ends_cleanly(self.path)):
            self.rows = list(kept.values())
            write_text_atomic(self.path, "".join(_line(r) for r in self.rows))
        for p in todo:
            for stale in p.target.parent.glob(f".{p.target.stem}.tmp-*{p.target.suffix}"):
                stale.unlink(missing_ok=True)
        return todo

    def commit(self, row: dict, target: Path, write: Callable[[Path], object]) -> None:
        """Write the output with `write(temp_path)`, append `row` (fsynced), then rename the temp to
        `target`: a kill at any point leaves the input not done (redone by the next run), never a
        row pointing at a missing file that the next run would trust, nor a duplicate row."""
        tmp = output_temp_path(target)
        try:
            try:
                write(tmp)
            except DiskFullError as err:  # name the output, not its hidden temp name
                raise DiskFullError(err.errno, str(err).replace(str(tmp), str(target))) from err
            _pause(row["id"], "after_output")
            append_text_durable(self.path, _line(row))
            self.rows.append(row)
            _pause(row["id"], "after_row")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def record_error(self, item_id: str, source: str | None, message: str) -> dict:
        """Append an error row for a failed input (retried by the next run); returns it."""
        row = {"id": item_id, "input": source, "error": message, "output": None}
        append_text_durable(self.path, _line(row))
        self.rows.append(row)
        return row


def output_temp_path(target: Path) -> Path:
    """`.STEM.tmp-PID-HOST.SUFFIX` beside `target` (`sts.io.temp_owner`): hidden, one per process, and with the suffix that
    says the format (`sts.audio.write_audio` picks wav/flac by it)."""
    return target.with_name(f".{target.stem}.tmp-{temp_owner()}{target.suffix}")


def _line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def _ends_cleanly(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _pause(item_id: str, step: str) -> None:
    wanted = os.environ.get(PAUSE_ENV, "")
    if wanted in (step, f"{step}:{item_id}"):
        print(f"paused: {item_id} {step}", file=sys.stderr, flush=True)
        time.sleep(600)
