"""`sts-infer`: speech->speech, speech->text and text->speech with a trained checkpoint.

    sts-infer in.wav --to en -o out.wav --model runs/sft                 # s2st, source language detected
    sts-infer in.wav --from ja --task asr --model runs/sft               # prints the transcript
    sts-infer --task tts --text "こんにちは" --from ja -o hello.wav --model runs/sft
    sts-infer clips/ --to en -o out/ --model runs/sft                    # batch: out/<stem>.wav + results.jsonl
    sts-infer test.jsonl --task s2tt -o out/ --model runs/sft --backend vllm
    sts-infer in.wav --to en -o out.wav --model runs/sft --stream       # out.wav grows while it is generated

A batch input is a folder of audio files or a JSONL manifest (`audio` path relative to the manifest,
optional `id`, `text`, `src_lang`). Outputs that already exist are skipped, so a rerun resumes.
`--from` omitted: speech is language-identified with Whisper (`sts.asr.detect_language`; silence,
a clip under 1 s, an unsure guess or no faster-whisper is an error asking for `--from`), text by
its script (kana/kanji -> ja).

Speech output is sampled repetition-aware by default (`infer.decoding.DEFAULT_SAMPLING`;
`--no-repetition-aware` or `--greedy` turns it off). Each output that was cut says why in a
warning and in `results.jsonl` (`cut`: budget or a loop rule); the run ends with the count per rule.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from sts.audio import load_audio, write_audio
from sts.tasks import task_spec
from sts.text import text_language

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


@dataclass
class InferConfig:
    """Translate, transcribe or read aloud with an sts checkpoint."""

    input: tyro.conf.Positional[Path | None] = None
    """Audio file, folder of audio files, or JSONL manifest (omit for `--task tts --text ...`)."""
    to: Literal["ja", "en"] | None = None
    """Target language (default: the other one for translation tasks, the source for asr/tts)."""
    src_lang: Annotated[Literal["ja", "en"] | None, tyro.conf.arg(name="from")] = None
    """Source language; detected when omitted."""
    task: Literal["s2st", "asr", "s2tt", "tts", "t2tt"] = "s2st"
    """s2st speech->speech, asr speech->text, s2tt speech->translated text, tts text->speech, t2tt text MT."""
    text: str | None = None
    """Source text for tts/t2tt."""
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """Output file (single input) or folder (batch). Text outputs are also printed."""
    model: str = "runs/sft"
    """Checkpoint directory or Hugging Face id (with `sts_vocab.json`)."""
    codec: str | None = None
    """Codec id/path; default: the one `sts_vocab.json` records."""
    backend: Literal["transformers", "vllm"] = "transformers"
    """Generation engine; vllm needs the GPU extra."""
    device: str = "auto"
    """"auto": cuda when available, else cpu."""
    dtype: str = "auto"
    """"auto": bfloat16 on cuda, float32 on cpu."""
    fast: bool | None = None
    """Static KV cache + CUDA graphs (transformers backend); default: on for cuda."""
    batch_size: int = 8
    """Inputs (and segments of long inputs) generated together."""
    max_new_tokens: int | None = None
    """Hard cap on top of the per-input length budget."""
    greedy: bool = False
    """Greedy decoding instead of the task's sampling defaults (`infer.decoding.DEFAULT_SAMPLING`)."""
    repetition_aware: bool = True
    """Repetition-aware sampling for speech output (the default); --no-repetition-aware samples the
    same nucleus (top-p 0.8, top-k 25) without redrawing repeats."""
    temperature: float | None = None
    """Override the task's sampling temperature."""
    top_p: float | None = None
    """Override the task's nucleus (top-p) threshold."""
    top_k: int | None = None
    """Override the task's top-k (0 disables)."""
    min_p: float | None = None
    """Override the task's min-p."""
    repetition_penalty: float | None = None
    """Override the task's repetition penalty."""
    seed: int = 0
    """Sampling seed (reset before every batch)."""
    max_segment_seconds: float = 20.0
    """Longer speech is split at pauses into pieces at most this long."""
    vad: Literal["auto", "energy", "silero"] = "auto"
    """Pause detector for long inputs: auto = silero-vad when installed, else energy."""
    gap_seconds: float = 0.3
    """Silence between the translated pieces of a long input."""
    results: Path | None = None
    """Results JSONL (default: OUTPUT/results.jsonl in batch mode)."""
    stream: bool = False
    """One input: write the output while it is generated (OUT.wav grows, a valid wav after every
    chunk, and is replaced by the finished result at the end); prints the time to first audio and
    the real-time factor. Only the transformers backend streams the generation itself."""


def main(argv: Sequence[str] | None = None) -> int:
    from sts.config import parse_cli

    cfg = parse_cli(InferConfig, argv, prog="sts-infer")
    try:
        return run(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"sts-infer: error: {err}", file=sys.stderr)
        return 2


def load_translator(
    model: str,
    *,
    codec: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    backend: str = "transformers",
    fast: bool | None = None,
    greedy: bool = False,
    repetition_aware: bool = True,
    **kwargs,
):
    """`Translator.from_checkpoint` with "auto" device (cuda when there), dtype (bf16 on cuda) and fast
    path; `greedy` makes every task greedy, `repetition_aware=False` turns RAS off for every task."""
    import torch

    from infer.translate import Translator, replace_sampling

    device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype if dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    fast = fast if fast is not None else device.startswith("cuda")
    translator = Translator.from_checkpoint(
        model, codec=codec, device=device, dtype=dtype, backend=backend, fast=fast, **kwargs
    )
    if greedy:
        translator.sampling = {
            t: replace_sampling(s, do_sample=False) for t, s in translator.sampling.items()
        }
    if not repetition_aware:
        translator.sampling = {
            t: replace_sampling(s, repetition_aware=False) for t, s in translator.sampling.items()
        }
    return translator


def run(cfg: InferConfig, log=print) -> int:
    from infer.translate import CUT_RULES, replace_sampling

    spec = task_spec(cfg.task)
    items = _inputs(cfg)
    translator = load_translator(
        cfg.model,
        codec=cfg.codec,
        device=cfg.device,
        dtype=cfg.dtype,
        backend=cfg.backend,
        fast=cfg.fast,
        greedy=cfg.greedy,
        repetition_aware=cfg.repetition_aware,
        batch_size=cfg.batch_size,
        max_segment_seconds=cfg.max_segment_seconds,
        vad=cfg.vad,
        max_new_tokens=cfg.max_new_tokens,
        gap_seconds=cfg.gap_seconds,
        seed=cfg.seed,
    )
    translator.sampling[cfg.task] = replace_sampling(
        translator.sampling[cfg.task],
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        min_p=cfg.min_p,
        repetition_penalty=cfg.repetition_penalty,
    )

    batch = cfg.input is not None and (cfg.input.is_dir() or cfg.input.suffix == ".jsonl")
    out_dir = cfg.output if batch else None
    if batch and out_dir is None:
        raise ValueError("batch mode needs -o OUTPUT_FOLDER")
    suffix = ".wav" if spec.output == "speech" else ".txt"
    if not batch and spec.output == "speech" and cfg.output is None:
        raise ValueError(f"task {cfg.task} writes audio: give -o OUT.wav")
    if cfg.stream:
        if batch:
            raise ValueError("--stream takes one input (an audio file or --text), not a folder or manifest")
        return _run_stream(cfg, translator, items[0], log)

    pending = []
    for item in items:
        target = out_dir / f"{item['id']}{suffix}" if batch else cfg.output
        if not (batch and target.exists()):
            pending.append((item, target))
    if batch and len(pending) < len(items):
        log(f"skipping {len(items) - len(pending)} input(s) whose output exists")
    # Built lazily, one batch at a time: a large folder is never all in memory, and the outputs
    # written before a bad input stay (a rerun resumes after them).
    requests = (_request(cfg, item, translator) for item, _ in pending)
    targets = [target for _, target in pending]

    results_path = cfg.results or (out_dir / "results.jsonl" if batch else None)
    status, cuts = 0, dict.fromkeys(CUT_RULES, 0)
    for result, target in zip(translator.iter_results(requests), targets, strict=True):
        if spec.output == "speech":
            write_audio(target, result.waveform)
        else:
            if target is not None:
                _write_text(target, result.text + "\n")
            log(result.text if not batch else f"{result.id}: {result.text}")
        cuts[result.cut] += 1
        for warning in result.warnings:
            print(f"warning: {result.id or 'input'}: {warning}", file=sys.stderr)
        if results_path is not None:
            row = result.summary() | {"output": str(target) if target else None}
            results_path.parent.mkdir(parents=True, exist_ok=True)
            with open(results_path, "a") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    loops = sum(cuts[rule] for rule in CUT_RULES[2:])
    if loops:
        print(f"sts-infer: {loops} output(s) fell into a repetition loop and were cut there", file=sys.stderr)
    if sum(cuts.values()):
        counts = " ".join(f"{rule}={n}" for rule, n in cuts.items())
        print(f"sts-infer: outputs by the rule that cut them: {counts}", file=sys.stderr)
    return status


def _run_stream(cfg: InferConfig, translator, item: dict, log=print) -> int:
    """`--stream`: one input through `Translator.stream`. A speech output grows in OUT as its audio
    arrives (`sts.audio.GrowingWav`: the header is rewritten after every chunk, so the file plays at
    any moment); at the end OUT is atomically replaced by the result's waveform (what `run` writes).
    A text output is printed (and written to OUT) at the end. Prints the time to first audio (from
    the start of generation, after loading) and the real-time factor (wall time / output seconds)."""
    from sts.audio import GrowingWav

    request = _request(cfg, item, translator)
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
        _write_text(target, (result.text or "") + "\n")
    if cfg.results is not None:
        cfg.results.parent.mkdir(parents=True, exist_ok=True)
        with open(cfg.results, "a") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


def _inputs(cfg: InferConfig) -> list[dict]:
    """[{id, audio?, text?, src_lang?}] from the positional input or --text."""
    spec = task_spec(cfg.task)
    if cfg.input is None:
        if spec.input != "text" or not cfg.text:
            raise ValueError(
                f"task {cfg.task} needs an input {'text (--text)' if spec.input == 'text' else 'audio file'}"
            )
        return [{"id": "text", "text": cfg.text}]
    path = cfg.input
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
        return [{"id": p.stem, "audio": p} for p in files]
    if path.suffix == ".jsonl":
        items = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {n}: not a JSON object ({err})") from err
                if "audio" in row:
                    row["audio"] = path.parent / row["audio"]
                if "audio" in row and not row["audio"].is_file():
                    raise FileNotFoundError(f"{path}, line {n}: no audio file {row['audio']}")
                row.setdefault("id", Path(row["audio"]).stem if "audio" in row else f"{n:06d}")
                items.append(row)
        return items
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return [{"id": path.stem, "audio": path}]


def _request(cfg: InferConfig, item: dict, translator):
    from infer.translate import Request
    from sts.asr import detect_language

    spec = task_spec(cfg.task)
    wav = load_audio(item["audio"]) if spec.input == "speech" else None
    text = item.get("text") if spec.input == "text" else None
    src = cfg.src_lang or item.get("src_lang")
    if src is None and wav is not None:
        detected = detect_language(wav)
        if not detected.known:
            raise ValueError(
                f"{item['audio']}: cannot tell the source language: {detected.reason}; pass --from ja|en"
            )
        src = detected.lang
    elif src is None:
        src = text_language(text or "")
    tgt = cfg.to or (("en" if src == "ja" else "ja") if spec.translates else src)
    return Request(cfg.task, src, tgt, wav=wav, text=text, id=str(item["id"]))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
