"""What `sts-infer` runs: one input, a folder of clips or a JSONL manifest through a `Translator`.

    from infer.run import InferConfig, run
    run(InferConfig(input=Path("in.wav"), to="en", output=Path("out.wav"), model="runs/sft"))   # exit status

The command line (`infer.cli`):

    sts-infer in.wav --to en -o out.wav --model runs/sft                 # s2st, source language detected
    sts-infer in.wav --from ja --task asr --model runs/sft               # prints the transcript
    sts-infer --task tts --text "こんにちは" --from ja -o hello.wav --model runs/sft
    sts-infer clips/ --to en -o out/ --model runs/sft                    # batch: out/<stem>.wav + results.jsonl
    sts-infer test.jsonl --task s2tt -o out/ --model runs/sft --backend vllm
    sts-infer in.wav --to en -o out.wav --model runs/sft --stream       # out.wav grows while it is generated

A batch input is a folder of audio files or a JSONL manifest (`audio` path relative to the manifest,
optional `id`, `text`, `src_lang`; every line checked before the model loads, errors name
`FILE:LINE`). Each input writes `OUT/<id>.wav` (or `.txt`) and one row of `OUT/results.jsonl`,
committed together (`infer.batch`): a rerun skips the inputs that have both and redoes the rest, so
nothing is lost or written twice, whenever the run was killed. Two inputs with one output name, or
an id that would write outside `-o`, are refused before anything runs.

A bad input in a batch (undecodable or empty audio, a language that cannot be detected, text holding
special tokens) is skipped: an error row `{"id", "input", "error", "output": null}` goes into
results.jsonl, the count is printed at the end and the exit status is 1 (the next run retries it);
`--fail-fast` stops at the first instead. A silent or near-silent input (`sts.audio.is_silent`) is
translated anyway, with a warning in its row and on stderr. Other expected failures (a missing model
folder, an sts_vocab.json that does not match its tokenizer, an output path of the wrong kind or that
cannot be written, checked before the model loads) are one line and exit status 2
(`sts.errors.cli_main`; `--debug` shows the traceback).
`--from` omitted: speech is language-identified with Whisper (`sts.asr.detect_language`; silence,
a clip under 1 s, an unsure guess or no faster-whisper is an error asking for `--from`), text by
its script (kana/kanji -> ja).

Speech output is sampled repetition-aware by default (`--speech-sampling.*`, text outputs
`--text-sampling.*`: `infer.decoding.DEFAULT_SAMPLING`); `--speech-sampling.no-repetition-aware` or
`--greedy` turns it off. Each output that was cut says why in a
warning and in `results.jsonl` (`cut`: budget or a loop rule); the run ends with the count per rule.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import tyro
from annotated_types import Ge, Gt

from infer.batch import AUDIO_SUFFIXES, Ledger, Planned, check_output_paths, plan_outputs
from infer.decoding import DEFAULT_SAMPLING
from infer.load import load_translator
from infer.translate import CUT_RULES, Request
from sts.asr import detect_language
from sts.audio import (
    DEFAULT_MAX_AUDIO_SECONDS,
    GrowingWav,
    is_silent,
    load_audio,
    peak_dbfs,
    rms_dbfs,
    write_audio,
)
from sts.config import Renamed
from sts.devices import ModelArgs
from sts.errors import DiskFullError, ManifestError, ModelNotFoundError, UsageError, error_message
from sts.generation.request import Sampling
from sts.io import append_text_durable, remove_stale_temps, write_text_atomic
from sts.lock import LOCK_NAME, folder_lock
from sts.manifest import Field, read_manifest
from sts.tasks import TASK_NAMES, TaskName, task_spec
from sts.text import text_language

MAX_AUDIO_HINT = "raise it with --max-audio-seconds"
"""What a too-long input's message (`sts.audio.AudioLimitError`) ends with."""


@dataclass(kw_only=True)
class InferConfig(ModelArgs):
    """Translate, transcribe or read aloud with an sts checkpoint."""

    input: tyro.conf.Positional[Path | None] = field(default=None, kw_only=False)
    """Audio file, folder of audio files, or JSONL manifest (omit for `--task tts --text ...`)."""
    to: Literal["ja", "en"] | None = None
    """Target language (default: the other one for translation tasks, the source for asr/tts)."""
    src_lang: Annotated[Literal["ja", "en"] | None, tyro.conf.arg(name="from")] = None
    """Source language; detected when omitted."""
    task: TaskName = "s2st"
    """s2st speech->speech, asr speech->text, s2tt speech->translated text, tts text->speech, t2tt text MT."""
    text: str | None = None
    """Source text for tts/t2tt."""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """Output file (single input) or folder (batch). Text outputs are also printed."""
    backend: Literal["transformers", "vllm"] = "transformers"
    """Generation engine; vllm needs the GPU extra."""
    fast: bool | None = None
    """Static KV cache + CUDA graphs (transformers backend); default: on for cuda."""
    max_new_tokens: Annotated[int | None, Ge(1)] = None
    """Hard cap on top of the per-input length budget."""
    greedy: bool = False
    """Greedy decoding for every task instead of the sampling below."""
    speech_sampling: Sampling = DEFAULT_SAMPLING["s2st"]
    """Speech outputs (s2st, tts): repetition-aware sampling, CosyVoice 2's settings."""
    text_sampling: Sampling = DEFAULT_SAMPLING["s2tt"]
    """Text outputs (s2tt, t2tt; an s2st answer's texts): LFM2-350M-ENJP-MT's card (asr: greedy)."""
    seed: Annotated[int, Ge(0)] = 0
    """Sampling seed (reset before every batch)."""
    max_segment_seconds: Annotated[float, Gt(0)] = 20.0
    """Longer speech is split at pauses into pieces at most this long."""
    vad: Literal["auto", "energy", "silero"] = "auto"
    """Pause detector for long inputs: auto = silero-vad when installed, else energy."""
    gap_seconds: Annotated[float, Ge(0)] = 0.3
    """Silence between the translated pieces of a long input."""
    results: Path | None = None
    """Results JSONL (default: OUTPUT/results.jsonl in batch mode)."""
    fail_fast: bool = False
    """Batch mode: stop at the first bad input (exit 2) instead of recording it and going on (exit 1)."""
    guidance_scale: Annotated[float, Gt(0)] = 1.0
    """Classifier-free guidance on speech output (`sts.generation.guidance`; 1 = off, > 1 leans away from
    the prompt without its source speech). Transformers backend only."""
    max_audio_seconds: Annotated[float, Gt(0)] = DEFAULT_MAX_AUDIO_SECONDS
    """Refuse input audio longer than this, known from its header before it is decoded."""
    stream: bool = False
    """One input: write the output while it is generated (OUT.wav grows, a valid wav after every
    chunk, and is replaced by the finished result at the end); prints the time to first audio and
    the real-time factor. Only the transformers backend streams the generation itself."""

    RENAMED_KEYS: ClassVar[dict[str, Renamed]] = {
        "repetition_aware": lambda on: {"speech_sampling.repetition_aware": on},
        **{k: (lambda value, k=k: {f"speech_sampling.{k}": value, f"text_sampling.{k}": value})
           for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")},
    }  # fmt: skip
    """The old per-flag overrides (`--temperature 0.7`: now both groups' value, `--no-repetition-aware`)."""

    def task_sampling(self) -> dict[str, Sampling]:
        """The sampling of every task: speech outputs `speech_sampling`, text outputs `text_sampling`,
        asr greedy (one right answer), all greedy with `greedy`."""
        sampling = {t: self.speech_sampling if task_spec(t).output == "speech" else self.text_sampling
                    for t in TASK_NAMES}  # fmt: skip
        sampling["asr"] = Sampling(do_sample=False)
        return {t: Sampling(do_sample=False) for t in sampling} if self.greedy else sampling


def run(cfg: InferConfig, log=print) -> int:
    """Run `cfg`; returns the exit status: 0, or 1 when some batch inputs failed (recorded).

    A batch holds its output folder's lock (`sts.lock`) while it runs: a second batch run on the
    same `-o` refuses, naming the first (pid, host, start time)."""
    spec = task_spec(cfg.task)
    items = _inputs(cfg)
    batch = cfg.input is not None and (cfg.input.is_dir() or cfg.input.suffix == ".jsonl")
    check_output_paths(cfg, batch=batch, speech=spec.output == "speech")  # before the model loads
    if cfg.stream and batch:
        raise UsageError("--stream takes one input (an audio file or --text), not a folder or manifest")
    if not batch:
        return _run(cfg, items, batch, log)
    refusal = (
        "{folder}: another {holder} is writing into this output folder; wait for it to end, or use another -o"
    )
    with folder_lock(cfg.output / LOCK_NAME, program="sts-infer", refusal=refusal):  # one run per folder
        removed = remove_stale_temps(cfg.output)  # outputs and results a killed run left half-written
        if cfg.results is not None and cfg.results.parent.resolve() != cfg.output.resolve():
            removed += remove_stale_temps(cfg.results.parent, cfg.results.name)
        if removed:
            log(f"removed {len(removed)} temp file(s) a killed run left in {cfg.output}")
        return _run(cfg, items, batch, log)


def _run(cfg: InferConfig, items: list[dict], batch: bool, log) -> int:

    spec = task_spec(cfg.task)
    suffix = ".wav" if spec.output == "speech" else ".txt"
    out_dir = cfg.output if batch else None
    results_path = cfg.results or (out_dir / "results.jsonl" if batch else None)
    if batch:
        plan = plan_outputs(items, out_dir, suffix)
        ledger = Ledger(results_path)
        pending = ledger.pending(plan)
        if len(pending) < len(plan):
            log(f"skipping {len(plan) - len(pending)} input(s) already done (output and results row)")
        if not pending:
            return 0
    else:
        ledger, pending = None, [Planned(item, cfg.output) for item in items]
    translator = load_translator(
        cfg,
        backend=cfg.backend,
        fast=cfg.fast,
        sampling=cfg.task_sampling(),
        max_segment_seconds=cfg.max_segment_seconds,
        vad=cfg.vad,
        max_new_tokens=cfg.max_new_tokens,
        gap_seconds=cfg.gap_seconds,
        seed=cfg.seed,
        guidance_scale=cfg.guidance_scale,
    )

    if cfg.stream:
        return _run_stream(cfg, translator, pending[0].item, log)
    failed, cuts = 0, dict.fromkeys(CUT_RULES, 0)
    for planned, outcome, notes in _outcomes(cfg, pending, translator, batch=batch):
        item, target = planned.item, planned.target
        if isinstance(outcome, Exception):  # a bad input of a batch: recorded, retried next run
            message = error_message(outcome)
            failed += 1
            ledger.record_error(str(item["id"]), _source(item), message)
            if cfg.fail_fast:  # its error row is written: the rerun retries it too
                raise outcome
            print(f"sts-infer: skipped {item['id']}: {message}", file=sys.stderr)
            continue
        result = outcome
        result.warnings = [*notes, *result.warnings]
        cuts[result.cut] += 1
        for name in ("transcript", "translation"):  # a text-first answer's own texts
            if getattr(result, name) is not None and not batch:
                log(f"{name}: {getattr(result, name)}")
        for warning in result.warnings:
            print(f"warning: {result.id or 'input'}: {warning}", file=sys.stderr)
        row = result.summary() | {"output": str(target) if target else None}
        if batch:
            ledger.commit(row, target, lambda tmp, r=result: _write_output(tmp, r, spec.output))
            if spec.output != "speech":
                log(f"{result.id}: {result.text}")
            continue
        if target is not None:
            _write_output(target, result, spec.output)
        if spec.output != "speech":
            log(result.text)
        if results_path is not None:
            append_text_durable(results_path, json.dumps(row, ensure_ascii=False) + "\n")
    loops = sum(cuts[rule] for rule in CUT_RULES[2:])
    if loops:
        print(f"sts-infer: {loops} output(s) fell into a repetition loop and were cut there", file=sys.stderr)
    if sum(cuts.values()):
        counts = " ".join(f"{rule}={n}" for rule, n in cuts.items())
        print(f"sts-infer: outputs by the rule that cut them: {counts}", file=sys.stderr)
    if failed:
        print(
            f"sts-infer: {failed} of {len(pending)} input(s) failed; their error rows are in {results_path} "
            "(rerun the command to retry them)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _outcomes(cfg: InferConfig, pending: list[Planned], translator, *, batch: bool):
    """(planned, Result or the expected exception of a bad batch input, input warnings) per input, in
    order, `batch_size` inputs at a time (a large folder is never all in memory). Outside batch mode
    any error is raised; in batch mode a chunk that fails is retried input by input, so only the bad
    input fails."""
    for start in range(0, len(pending), max(1, cfg.batch_size)):
        chunk = pending[start : start + max(1, cfg.batch_size)]
        built = []
        for planned in chunk:
            notes: list[str] = []
            try:
                built.append((planned, _request(cfg, planned.item, translator, notes), notes))
            except Exception as err:
                if not batch or not _input_failure(err):
                    raise
                yield planned, err, notes
        if not built:
            continue
        try:
            results = translator.run([request for _, request, _ in built])
        except Exception as err:
            if not batch or not _input_failure(err):
                raise
            results = []
            for _, request, _ in built:
                try:
                    [one] = translator.run([request])
                except Exception as one_err:
                    if not _input_failure(one_err):
                        raise
                    one = one_err
                results.append(one)
        for (planned, _, notes), result in zip(built, results, strict=True):
            yield planned, result, notes


def _input_failure(err: Exception) -> bool:
    """An expected failure that belongs to one input (not a full disk, which stops the run)."""
    return error_message(err) is not None and not isinstance(err, DiskFullError | ModelNotFoundError)


def _source(item: dict) -> str | None:
    return str(item["audio"]) if item.get("audio") is not None else item.get("where")


def _write_output(path: Path, result, output: str) -> None:
    if output == "speech":
        write_audio(path, result.waveform)
    else:
        write_text_atomic(path, result.text + "\n")


MANIFEST_FIELDS = {
    "id": Field("id"),
    "audio": Field("path", exists=True),
    "text": Field("str"),
    "src_lang": Field("lang"),
}
"""A batch manifest's fields (`sts.manifest`): checked on every line before the model loads."""


def _run_stream(cfg: InferConfig, translator, item: dict, log=print) -> int:
    """`--stream`: one input through `Translator.stream`. A speech output grows in OUT as its audio
    arrives (`sts.audio.GrowingWav`: the header is rewritten after every chunk, so the file plays at
    any moment); at the end OUT is atomically replaced by the result's waveform (what `run` writes).
    A text output is printed (and written to OUT) at the end. Prints the time to first audio (from
    the start of generation, after loading) and the real-time factor (wall time / output seconds)."""

    notes: list[str] = []
    request = _request(cfg, item, translator, notes)
    for note in notes:
        print(f"warning: {request.id or 'input'}: {note}", file=sys.stderr)
    target, growing, first, result = cfg.output, None, None, None
    try:
        for event in translator.stream(request):
            if event.kind == "audio":
                growing = growing or GrowingWav(target)
                growing.append(event.audio)
                if first is None:
                    first = event.seconds
                    log(f"first audio after {first:.2f} s; {target} grows as the output is generated")
            elif event.kind == "text":
                log(event.text if event.field == "text" else f"{event.field}: {event.text}")
            elif event.kind == "warning":
                print(f"warning: {request.id or 'input'}: {event.text}", file=sys.stderr)
            elif event.kind == "done":
                result = event.result
    except BaseException:
        if growing is not None:  # no half output left behind
            growing.close()
            target.unlink(missing_ok=True)
        raise
    if growing is not None:
        growing.close()
    row = result.summary() | {"output": str(target) if target else None}
    if result.waveform is not None:
        write_audio(target, result.waveform)
        output_seconds = len(result.waveform) / 16000
        rtf = result.seconds / output_seconds if output_seconds else float("inf")
        row |= {"first_audio_seconds": round(first, 3) if first is not None else None, "rtf": round(rtf, 3)}
        log(
            f"time to first audio {first if first is not None else float('nan'):.2f} s, real-time factor "
            f"{rtf:.2f} ({result.seconds:.2f} s for {output_seconds:.2f} s of audio); wrote {target}"
        )
    elif target is not None:
        write_text_atomic(target, (result.text or "") + "\n")
    if cfg.results is not None:
        append_text_durable(cfg.results, json.dumps(row, ensure_ascii=False) + "\n")
    return 0


def _inputs(cfg: InferConfig) -> list[dict]:
    """[{id, audio?, text?, src_lang?, where}] from the positional input or --text; `where` is what
    error messages name (FILE:LINE for a manifest row)."""
    spec = task_spec(cfg.task)
    if cfg.input is None:
        if spec.input != "text" or not cfg.text:
            raise UsageError(
                f"task {cfg.task} needs an input {'text (--text)' if spec.input == 'text' else 'audio file'}"
            )
        return [{"id": "text", "text": cfg.text, "where": "--text"}]
    path = cfg.input
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise UsageError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
        return [{"id": p.stem, "audio": p, "where": str(p)} for p in files]
    if path.suffix == ".jsonl":
        items = []
        for row in read_manifest(path, MANIFEST_FIELDS):
            item, where = row.values, f"{path}:{row.line}"
            needed = "audio" if spec.input == "speech" else "text"
            if not item.get(needed):
                raise ManifestError(path, row.line, f"task {cfg.task} needs {needed!r}")
            default_id = item["audio"].stem if item.get("audio") is not None else f"{row.line:06d}"
            items.append({**item, "id": item["id"] or default_id, "where": where, "line": row.line})
        if not items:
            raise UsageError(f"{path}: no rows")
        return items
    if not path.exists():
        raise FileNotFoundError(2, "no such file", str(path))
    if spec.input != "speech":
        raise UsageError(f"{path}: task {cfg.task} reads text (--text), not a file")
    return [{"id": path.stem, "audio": path, "where": str(path)}]


def _request(cfg: InferConfig, item: dict, translator, notes: list[str] | None = None):
    """The `Request` of one input; `notes` gets the input's warnings (silence)."""

    spec = task_spec(cfg.task)
    wav = None
    if spec.input == "speech":
        wav = load_audio(item["audio"], max_seconds=cfg.max_audio_seconds, limit_hint=MAX_AUDIO_HINT)
    if wav is not None and is_silent(wav):
        note = (
            f"{item['audio']}: the input is silent or near-silent (RMS {rms_dbfs(wav):.1f} dBFS, peak "
            f"{peak_dbfs(wav):.1f} dBFS); translated anyway"
        )
        if notes is not None:
            notes.append(note)
    text = item.get("text") if spec.input == "text" else None
    src = cfg.src_lang or item.get("src_lang")
    if src is None and wav is not None:
        detected = detect_language(wav)
        if not detected.known:
            raise UsageError(
                f"{item['audio']}: cannot tell the source language: {detected.reason}; pass --from ja|en"
            )
        src = detected.lang
    elif src is None:
        src = text_language(text or "")
    tgt = cfg.to or (("en" if src == "ja" else "ja") if spec.translates else src)
    return Request(cfg.task, src, tgt, wav=wav, text=text, id=str(item["id"]))
