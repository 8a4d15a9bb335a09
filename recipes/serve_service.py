"""What `sts serve` does, without the web page: check an input against the limits, pick the direction,
translate it, and yield the page's state after every step (`TranslationService.translate`), writing
each translation's files into its run folder.

    from recipes.serve_service import ServeConfig, load_service
    service = load_service(ServeConfig(model="runs/sft"))
    for update in service.translate("runs/serve/gradio/x/me.wav", "auto", client="page-1"):
        update.transcript, update.translation, update.chunk, update.warnings   # chunk: [N] float32, 16 kHz

No gradio here: the page (`recipes.serve`) maps each `Update` to its components.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import tyro
from annotated_types import Ge, Gt, Interval

from infer.load import load_translator
from infer.translate import Request
from sts.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioLimitError,
    is_silent,
    load_audio,
    peak_dbfs,
    rms_dbfs,
    write_audio,
)
from sts.devices import ModelArgs
from sts.io import write_json_atomic

DIRECTIONS = {"auto": None, "ja → en": ("ja", "en"), "en → ja": ("en", "ja")}
"""The direction choices the page offers: auto (language id) or a fixed source -> target."""
MIN_SECONDS = 0.3
"""A clip shorter than this is refused: too short to hold a word."""
MB = 1024 * 1024
"""`--max-mb` counts megabytes of 2**20 bytes, as Gradio's upload limit message does ("10.0 Mb")."""


@dataclass(kw_only=True)
class ServeConfig(ModelArgs):
    """Serve a checkpoint as a web page: speak, hear the translation as it is generated."""

    model: str = ""
    """Checkpoint folder (with sts_vocab.json); default: the newest runs/demo/train/checkpoint-*."""
    codec: str | None = None
    """Codec folder/id; default: runs/demo/codec for the demo checkpoint, else sts_vocab.json's."""
    demo_dir: Path = Path("runs/demo")
    """Where `sts demo` (`make run`) wrote its run: the default checkpoint is looked for there."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0: every interface)."""
    port: Annotated[int, Interval(ge=0, le=65535)] = 7860
    """Port to listen on."""
    max_seconds: Annotated[float, Gt(0)] = 30.0
    """Longest input clip accepted, in seconds."""
    max_mb: Annotated[float, Gt(0)] = 10.0
    """Largest input file accepted, in megabytes (2**20 bytes); the upload itself is capped there too."""
    max_queue: Annotated[int, Ge(1)] = 16
    """Translations waiting for the model at most; a click beyond that is refused until one finishes."""
    out_dir: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("runs/serve")
    """Everything the app writes goes here: outputs/ (one folder per translation) and gradio/ (uploads, cache)."""
    share: bool = False
    """Ask Gradio for a public share link (needs internet access)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"run_dir": "out_dir"}
    """Old names, for old files and flags."""


class ServeError(ValueError):
    """An input the app refuses, or a model it cannot serve; the message is shown to the user as is."""


@dataclass
class Limits:
    """What an input may be (`read_input`)."""

    max_seconds: float = 30.0
    max_bytes: int = 10 * MB
    roots: tuple[Path, ...] = ()
    """Input files must lie inside one of these folders (the app's upload folder); empty: anywhere."""


def read_input(path: str | os.PathLike | None, limits: Limits) -> np.ndarray:
    """Load an uploaded or recorded clip as `[N]` float32 at 16 kHz, or refuse it with a ServeError
    naming the file and the problem: none given, outside `limits.roots`, too big, undecodable, too
    long or too big once decoded (`max_seconds` of 48 kHz stereo float32; both known from the header,
    before decoding, so a small file that expands to gigabytes costs nothing), shorter than
    `MIN_SECONDS`, or silent (`sts.audio.is_silent`)."""
    if path is None or str(path) == "":
        raise ServeError("no audio: record with the microphone or upload a file first")
    path = Path(path)
    name = path.name
    if limits.roots and not any(_inside(path, root) for root in limits.roots):
        raise ServeError(f"{name}: not a file uploaded to this app")
    if not path.is_file():
        raise ServeError(f"{name}: no such file (the upload may have expired: upload it again)")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ServeError(
            f"{name}: {size / MB:.2f} MB is bigger than the {limits.max_bytes / MB:.3g} MB limit"
        )
    try:
        wav = load_audio(path, max_seconds=limits.max_seconds, name=name)
    except AudioLimitError as err:
        hint = " (send a shorter clip or one recorded at 48 kHz or less)" if err.limit == "bytes" else ""
        raise ServeError(f"{err}{hint}") from None
    except AudioError as err:
        raise ServeError(str(err)) from None
    seconds = len(wav) / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise ServeError(f"{name}: {seconds:.2f} s is too short (at least {MIN_SECONDS} s of speech)")
    if is_silent(wav):
        raise ServeError(
            f"{name}: no speech, the clip is silent (RMS {rms_dbfs(wav):.0f} dBFS, peak {peak_dbfs(wav):.0f} "
            "dBFS): check the microphone or record closer to it"
        )
    return wav


def resolve_direction(choice: str, wav: np.ndarray, detect: Callable | None = None) -> tuple[str, str, str]:
    """(source, target, how) for a direction choice of `DIRECTIONS`; "auto" asks `detect` (default
    `sts.asr.detect_language`) and refuses a clip whose language it cannot tell, with its reason."""
    if choice not in DIRECTIONS:
        raise ServeError(f"unknown direction {choice!r}: choose one of {', '.join(DIRECTIONS)}")
    fixed = DIRECTIONS[choice]
    if fixed is not None:
        return fixed[0], fixed[1], "chosen"
    if detect is None:
        from sts.asr import detect_language as detect
    detected = detect(wav)
    if not detected.known:
        raise ServeError(f"cannot tell the language: {detected.reason}; choose ja → en or en → ja")
    src = detected.lang
    return src, ("en" if src == "ja" else "ja"), f"detected (p = {detected.probability:.2f})"


def default_checkpoint(demo_dir: str | os.PathLike = "runs/demo") -> tuple[Path, Path | None]:
    """(the newest `demo_dir/train/checkpoint-N` by N, `demo_dir/codec` when it exists), or a
    ServeError that says how to make one."""
    demo_dir = Path(demo_dir)
    numbered = [
        (int(m.group(1)), p)
        for p in (demo_dir / "train").glob("checkpoint-*")
        if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    ]
    if not numbered:
        raise ServeError(
            f"no checkpoint in {demo_dir / 'train'}: run `make run` (the offline demo) or give --model DIR"
        )
    codec = demo_dir / "codec"
    return max(numbered)[1], codec if codec.is_dir() else None


class ClientGate:
    """One translation at a time per client (a page's session): `hold` refuses a second."""

    def __init__(self):
        self._lock = threading.Lock()
        self._busy: set[str] = set()

    @contextmanager
    def hold(self, client: str):
        with self._lock:
            if client in self._busy:
                raise ServeError("this page is already translating: wait until it finishes")
            self._busy.add(client)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(client)


def translation_events(translator, request) -> Iterator:
    """The translation of one `infer.Request` as `infer.translate_stream.StreamEvent`s, in the order they become
    known: texts (a text-first answer's transcript and translation), speech chunks as they are
    generated and decoded, warnings, then "done" with the full result (`Translator.stream`)."""
    yield from translator.stream(request)


@dataclass
class Update:
    """What the page shows after one step of a translation (`TranslationService.translate`)."""

    run: str
    """This translation's id (its output folder's name)."""
    status: str
    direction: str = ""
    """"ja → en" and how it was chosen."""
    transcript: str | None = None
    translation: str | None = None
    heard: str | None = None
    """Whisper's transcript of the translated speech (what it really says), when asked for."""
    warnings: list[str] = field(default_factory=list)
    chunk: np.ndarray | None = None
    """`[N]` float32 16 kHz speech new since the previous update (None: no new speech)."""
    chunks: int = 0
    """Speech chunks sent so far (the player's sequence number)."""
    speech_seconds: float = 0.0
    """Seconds of translated speech so far."""
    first_audio_seconds: float | None = None
    """Wall seconds from the start of generation to the first speech."""
    audio_path: Path | None = None
    """The final wav (last update only)."""
    files: list[Path] = field(default_factory=list)
    """Files to download (last update only): translation.wav, result.json."""
    done: bool = False


class TranslationService:
    """A loaded `infer.Translator` behind the app's limits; `translate` is what a click runs.

    `detect`: the language detector of "auto" (None: `sts.asr.detect_language`); `asr`: an
    `sts.asr.ASR` that transcribes the translated speech (None: `sts.asr.default_asr` on first use).
    """

    def __init__(
        self, translator, cfg: ServeConfig, *, model: str = "", detect: Callable | None = None, asr=None
    ):
        self.translator = translator
        self.cfg = cfg
        self.model = model
        self.detect = detect
        self.asr = asr
        self.run_dir = Path(cfg.out_dir).resolve()
        self.outputs = self.run_dir / "outputs"
        self.uploads = self.run_dir / "gradio"
        self.limits = Limits(cfg.max_seconds, int(cfg.max_mb * MB), roots=(self.uploads,))
        self.gate = ClientGate()

    @property
    def s2st_format(self) -> str:
        return self.translator.formatter.s2st_format

    def notes(self) -> list[str]:
        """Standing warnings about the checkpoint: directions whose speech length is not measured."""
        budget = self.translator.length_budget
        unmeasured = [d for d in ("ja-en", "en-ja") if budget.speech_ratio(d) is None]
        if not unmeasured:
            return []
        return [
            f"the checkpoint records no measured duration ratio for {', '.join(unmeasured)} (sts_decoding.json): "
            f"translated speech is bounded by a fixed {budget.frames_per_source_second / 50:g}x the source + 1 s"
        ]

    def translate(
        self, audio_path, direction: str, client: str, *, transcribe_output: bool = False
    ) -> Iterator[Update]:
        """Check the input, translate it, and yield the page's state after every step (the last has
        `done`, the wav and the files). `transcribe_output`: also run Whisper on the translated
        speech (`Update.heard`), to tell a wrong translation from speech that does not say it.
        Raises ServeError for a refused input or a busy client."""

        with self.gate.hold(client):
            wav = read_input(audio_path, self.limits)
            src, tgt, how = resolve_direction(direction, wav, self.detect)
            out_dir = new_output_dir(self.outputs)
            write_audio(out_dir / "source.wav", wav)
            state = Update(out_dir.name, f"translating {src} → {tgt} …", direction=f"{src} → {tgt} ({how})")
            yield state
            pieces: list[np.ndarray] = []
            result = None
            for event in translation_events(
                self.translator, Request("s2st", src, tgt, wav=wav, id=out_dir.name)
            ):
                state.chunk = None
                if event.kind == "text":
                    if event.field == "transcript":
                        state.transcript = event.text
                    else:
                        state.translation = event.text
                elif event.kind == "warning" and event.text not in state.warnings:
                    state.warnings.append(event.text)
                elif event.kind == "audio" and len(event.audio):
                    state.chunk = np.asarray(event.audio, dtype=np.float32)
                    pieces.append(state.chunk)
                    state.chunks += 1
                    state.speech_seconds += len(state.chunk) / SAMPLE_RATE
                    if state.first_audio_seconds is None:
                        state.first_audio_seconds = event.seconds
                    state.status = f"speaking: {state.speech_seconds:.1f} s so far"
                elif event.kind == "done":
                    result = event.result
                    continue
                yield state
            state.chunk = None
            speech = getattr(result, "waveform", None)
            if speech is None:
                speech = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
            if transcribe_output and len(speech):
                state.status = "transcribing the translated speech with Whisper …"
                yield state
                state.heard = self._transcribe(speech, tgt, state)
            yield self._finish(state, result, speech, out_dir, wav)

    def _transcribe(self, speech: np.ndarray, lang: str, state: Update) -> str | None:
        """Whisper's transcript of `speech` in `lang`, or None and a warning when no ASR can run."""
        try:
            if self.asr is None:
                from sts.asr import default_asr

                self.asr = default_asr(device="cuda" if self.cfg.torch_device().startswith("cuda") else "cpu")
            return self.asr.transcribe([speech], lang)[0]
        except (ImportError, OSError, RuntimeError) as err:
            state.warnings.append(f"cannot transcribe the translated speech: {err}")
            return None

    def _finish(self, state: Update, result, speech: np.ndarray, out_dir: Path, source) -> Update:
        """Write translation.wav and result.json, add the closing warnings, and mark the update done."""

        for warning in getattr(result, "warnings", []):
            if warning not in state.warnings:
                state.warnings.append(warning)
        if len(speech) == 0:
            state.warnings.append("the model wrote no speech")
        elif is_silent(speech):
            state.warnings.append(f"the translated speech is silent (RMS {rms_dbfs(speech):.0f} dBFS)")
        state.audio_path = write_audio(out_dir / "translation.wav", np.asarray(speech, dtype=np.float32))
        summary = result.summary() if result is not None else {}
        record = summary | {
            "model": self.model,
            "s2st_format": self.s2st_format,
            "direction": state.direction,
            "transcript": state.transcript,
            "translation": state.translation,
            "heard": state.heard,
            "warnings": state.warnings,
            "source_seconds": round(len(source) / SAMPLE_RATE, 3),
            "output_seconds": round(len(speech) / SAMPLE_RATE, 3),
            "first_audio_seconds": None
            if state.first_audio_seconds is None
            else round(state.first_audio_seconds, 3),
        }
        state.files = [state.audio_path, write_json_atomic(out_dir / "result.json", record)]
        state.done = True
        took = summary.get("seconds")
        state.status = f"done: {len(speech) / SAMPLE_RATE:.1f} s of speech" + (
            f" in {took:.1f} s" if took else ""
        )
        return state


def new_output_dir(outputs: Path) -> Path:
    """A fresh `outputs/<YYYYmmdd-HHMMSS>-<12 hex>` folder; the random part keeps other translations'
    files unguessable to a page that is served their folder's files."""
    path = Path(outputs) / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    return path


def _inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def load_service(cfg: ServeConfig) -> TranslationService:
    """Find the checkpoint (`default_checkpoint` when `cfg.model` is empty) and load it for serving."""

    model, codec = (Path(cfg.model), None) if cfg.model else default_checkpoint(cfg.demo_dir)
    if not (model / "sts_vocab.json").is_file():
        raise ServeError(f"{model}: not an sts checkpoint (no sts_vocab.json)")
    codec = cfg.codec or (str(codec) if codec else None)
    translator = load_translator(dataclasses.replace(cfg, model=str(model), codec=codec))
    return TranslationService(translator, cfg, model=str(model))
