"""The inference library: requests in, results (codes, waveform, text, warnings) out.

    from infer import Translator, Request
    tr = Translator.from_checkpoint("runs/sft", device="cuda", fast=True)
    [result] = tr.run([Request("s2st", "ja", "en", wav=load_audio("in.wav"))])
    result.waveform, result.warnings          # [N] float32 16 kHz; ["repetition loop at 3.2 s (...): output cut there"]
    result.cut                                # the rule that cut it: none, budget, exact, approximate, ...

Per request: speech longer than `max_segment_seconds` is split at pauses (`infer.segment`), every
segment is encoded and prompted (`sts.tasks.TaskFormatter`), all segments of all requests are
generated in batches under the task's constraint and length budget (`sts.generation`, with the
per-task defaults of `infer.decoding`), loops are cut (`sts.generation.detect_loop`: exact,
approximate, long-repeat and low-diversity rules), and the pieces are decoded and joined with short
silences. An s2st checkpoint trained text-first or translation-first (`sts_tasks.json`) writes its
texts before its speech: the answer is decoded in two constrained phases (`sts.generation.chain`:
text ids until the speech start marker, then speech ids), and the result carries the intermediate
`transcript` and `translation`. A checkpoint's `sts_decoding.json` (the training corpus's duration ratios) sets the speech
length budget; one without it gets the fixed 2.5x and a warning, once.

Streaming (`Translator.stream`, implemented in `infer.translate_stream`), one Request at a time (batch of 1):

    for event in translator.stream(request):
        event.kind      # "text" | "audio" | "warning" | "done"
        event.field     # kind "text": "transcript" | "translation" | "text" (text-output tasks)
        event.text      # kind "text" / "warning": the string
        event.audio     # kind "audio": [N] float32 at 16 kHz, the next samples (append them)
        event.seconds   # wall seconds since stream() was called (time to this event)
        event.result    # kind "done": the full Result, what translator.run([request])[0] gives

Events come in order: for an s2st text-first answer the transcript and translation text events come
before the first audio; audio chunks in time order (the segments of a long input one after another,
with the `gap_seconds` silence `run` puts between them); warnings as soon as they are known; "done"
last. Speech-output tasks stream their audio as it is generated (chunked decoding,
`sts.codec.stream_decode`: the joined audio approximates the result's waveform within the codec's
measured bound); text-output tasks give their text at the end. A long input's result equals `run`'s
with `batch_size=1` (segments generated one at a time; at a larger batch size `run` samples them
from one shared random stream). Only the transformers backend streams the generation itself; with
vLLM each segment's audio starts when its generation ends.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from infer.decoding import DEFAULT_GUARDS, DEFAULT_SAMPLING, LengthBudget, max_new_tokens_for
from infer.segment import join_texts, join_waveforms, split_at_pauses
from infer.translate_stream import stream_request
from sts.decoding_info import read_decoding_info
from sts.generation.allowed import allowed_token_ids
from sts.generation.chain import chain_text_ids, generate_chain
from sts.generation.guidance import unconditional_prompt
from sts.generation.loops import LOOP_KINDS, LoopGuard, detect_loop
from sts.generation.request import GenerationRequest, Sampling, length_sorted_batches, split_end
from sts.model_files import load_speech_contract
from sts.tasks import Example, S2STFormat, TaskFormatter, load_task_formats, task_spec
from sts.vocab import SpeechVocab

CUT_RULES = ("none", "budget", *LOOP_KINDS)
"""Why an output ended where it did: not cut (its end marker), the length budget, or a loop rule."""


@dataclass
class Request:
    """One input to translate, transcribe or read aloud."""

    task: str
    src_lang: str
    tgt_lang: str
    wav: np.ndarray | None = None
    """`[N]` float32 16 kHz source speech (speech-input tasks)."""
    text: str | None = None
    """Source text (tts, t2tt)."""
    id: str = ""


@dataclass
class Result:
    id: str
    task: str
    src_lang: str
    tgt_lang: str
    text: str | None = None
    """Output text (asr, s2tt, t2tt)."""
    codes: list[np.ndarray] = field(default_factory=list)
    """Speech output: `[T_k]` int32 codes per segment."""
    waveform: np.ndarray | None = None
    """Speech output: `[sum T_k * 320 + gaps]` float32 at 16 kHz."""
    segments: int = 1
    source_seconds: float = 0.0
    finished: bool = True
    """Every segment ended with its end marker (not cut by the length budget or a loop)."""
    transcript: str | None = None
    """s2st text-first: the source transcript the model wrote before its speech."""
    translation: str | None = None
    """s2st text-first / translation-first: the translation the model wrote before its speech."""
    cut: str = "none"
    """The rule that cut it (`CUT_RULES`): a loop rule when any segment looped, else "budget" when
    one ran into its length budget, else "none"."""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time spent on this request's batch share (batch time / batch size)."""

    def summary(self) -> dict:
        """A JSON-able row for the results file."""
        out = {
            "id": self.id,
            "task": self.task,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "text": self.text,
            **({"transcript": self.transcript} if self.transcript is not None else {}),
            **({"translation": self.translation} if self.translation is not None else {}),
            "segments": self.segments,
            "source_seconds": round(self.source_seconds, 3),
            "finished": self.finished,
            "cut": self.cut,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }
        if self.codes:
            out["codes"] = int(sum(len(c) for c in self.codes))
            out["output_seconds"] = round(len(self.waveform) / 16000, 3) if self.waveform is not None else 0.0
        return out


@dataclass
class _Segment:
    request: int
    example: Example
    source_seconds: float | None
    source_chars: int | None
    index: int = 0
    """Position of the segment in its request (long inputs have several)."""
    count: int = 1


class Translator:
    """A checkpoint (LM + tokenizer + `sts_vocab.json`), its codec and a generation backend.

    `backend`: an `sts.generation` backend (`TransformersBackend`, `VllmBackend`). `sampling`
    overrides `infer.decoding.DEFAULT_SAMPLING` per task, `guards` the loop guard per output
    modality, `length_budget` how long an output may get relative to its source (`from_checkpoint`
    fills its duration ratio from the checkpoint's `sts_decoding.json`); `max_new_tokens` caps
    every budget. `guidance_scale` != 1: classifier-free guidance on speech output (transformers
    backend; `guide`). `s2st_format`: what an s2st answer writes before its speech (`sts.tasks`;
    `from_checkpoint` reads it from `sts_tasks.json`); the text phase of a chain format decodes with
    the s2tt sampling.
    """

    def __init__(
        self,
        tokenizer,
        vocab: SpeechVocab,
        backend,
        codec=None,
        *,
        batch_size: int = 8,
        max_segment_seconds: float = 20.0,
        vad: str = "auto",
        sampling: dict[str, Sampling] | None = None,
        guards: dict[str, LoopGuard] | None = None,
        length_budget: LengthBudget | None = None,
        max_new_tokens: int | None = None,
        gap_seconds: float = 0.3,
        seed: int | None = 0,
        s2st_format: S2STFormat = "direct",
        guidance_scale: float = 1.0,
    ):
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.formatter = TaskFormatter(tokenizer, vocab, s2st_format=s2st_format)
        self.guidance_scale = guidance_scale
        self.backend = backend
        self.codec = codec
        self.batch_size = batch_size
        self.max_segment_seconds = max_segment_seconds
        self.vad = vad
        self.sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
        self.guards = {**DEFAULT_GUARDS, **(guards or {})}
        self.length_budget = length_budget or LengthBudget()
        self.max_new_tokens = max_new_tokens
        self.gap_seconds = gap_seconds
        self.seed = seed
        self.extra_logits_processors: list = []
        self._unmeasured: set[str] = set()  # directions already warned about (no measured ratio)

    @classmethod
    def from_checkpoint(
        cls,
        model: str | Path,
        *,
        codec: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        backend: str = "transformers",
        fast: bool = False,
        **kwargs,
    ) -> Translator:
        """Load LM, tokenizer and vocabulary from `model` (dir or HF id), and the codec it records.

        `codec` overrides `sts_vocab.json`'s codec id/path (every task but t2tt needs the codec).
        The length budget takes the checkpoint's measured duration ratios (`sts_decoding.json`)
        unless `length_budget` is given.
        """
        import torch
        from transformers import AutoModelForCausalLM

        from sts.codec import load_codec

        # The whole vocabulary contract against the tokenizer and config.json, before the weights load.
        vocab, tokenizer = load_speech_contract(_local_dir(model))
        kwargs.setdefault("s2st_format", load_task_formats(_local_dir(model))["s2st"])
        if kwargs.get("length_budget") is None:
            info = read_decoding_info(_local_dir(model)) or {}
            kwargs["length_budget"] = LengthBudget(duration_ratio=info.get("duration_ratio"))
        if backend == "vllm":
            from sts.generation.vllm_backend import VllmBackend

            gen = VllmBackend(_local_dir(model), dtype=dtype)
        elif backend == "transformers":
            from sts.generation.transformers_backend import TransformersBackend

            lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(device).eval()
            gen = TransformersBackend(lm, pad_token_id=tokenizer.pad_token_id or 0, fast=fast)
        else:
            raise ValueError(f"backend must be 'transformers' or 'vllm', got {backend!r}")
        codec_model = load_codec(codec or vocab.codec, device=device)
        if codec_model.codebook_size != vocab.num_speech_tokens:
            raise ValueError(
                f"codec {codec_model.name} has {codec_model.codebook_size} codes but the checkpoint's "
                f"speech block has {vocab.num_speech_tokens}"
            )
        return cls(tokenizer, vocab, gen, codec_model, **kwargs)

    def run(self, requests: Sequence[Request]) -> list[Result]:
        return list(self.iter_results(requests))

    def stream(self, request: Request, *, settings=None):
        """Events of one request while it is generated (the contract in the module docstring).

        `settings`: a `sts.codec.StreamSettings` for the chunked decoder (default: the codec's
        `stream_defaults`). Returns an iterator of `infer.translate_stream.StreamEvent`.
        """

        started = time.perf_counter()
        result = Result(request.id, request.task, request.src_lang, request.tgt_lang)
        return stream_request(self, request, result, settings=settings, started=started)

    def iter_results(self, requests: Iterable[Request]) -> Iterator[Result]:
        """Results in request order; requests are taken (and can be built lazily) `batch_size` at a time."""
        pending = iter(requests)
        while chunk := list(itertools.islice(pending, self.batch_size)):
            yield from self._run_chunk(chunk)

    def _run_chunk(self, requests: list[Request]) -> list[Result]:
        started = time.perf_counter()
        results = [Result(r.id, r.task, r.src_lang, r.tgt_lang) for r in requests]
        segments = self._segments(requests, results)
        generated: list[np.ndarray | None] = [None] * len(segments)
        # Group by task (one constraint and sampling per batch), shortest prompts together.
        prompts = [self.formatter.prompt(s.example) for s in segments]
        by_task: dict[str, list[int]] = {}
        for i, seg in enumerate(segments):
            by_task.setdefault(seg.example.task, []).append(i)
        for task, members in by_task.items():
            for rows in length_sorted_batches([len(prompts[i]) for i in members], self.batch_size):
                batch = [members[r] for r in rows]
                request = self._generation_request(task, [segments[i] for i in batch])
                batch_prompts = [prompts[i] for i in batch]
                if self.formatter.chain(task):
                    text_request = self._text_phase_request([segments[i] for i in batch])
                    outputs = generate_chain(
                        self.backend, batch_prompts, text_request, request, guide=self.guide
                    )
                else:
                    outputs = self.backend.generate(batch_prompts, self.guide(request, batch_prompts))
                for i, ids in zip(batch, outputs, strict=True):
                    generated[i] = ids
        pieces: list[list] = [[] for _ in requests]
        for seg, ids in zip(segments, generated, strict=True):
            pieces[seg.request].append(self._read_output(seg, ids, results[seg.request]))
        for request, result, parts in zip(requests, results, pieces, strict=True):
            self._assemble(request, result, parts)
            result.seconds = (time.perf_counter() - started) / len(requests)
        return results

    def _segments(self, requests: list[Request], results: list[Result]) -> list[_Segment]:
        """Split, encode and wrap every request's source into task examples."""
        segments: list[_Segment] = []
        waves: list[np.ndarray] = []
        owners: list[int] = []
        for i, (request, result) in enumerate(zip(requests, results, strict=True)):
            spec = task_spec(request.task)
            if spec.input == "text":
                if not request.text:
                    raise ValueError(f"{request.id or request.task}: task {request.task} needs text input")
                example = Example(request.task, request.src_lang, request.tgt_lang, src_text=request.text)
                segments.append(_Segment(i, example, None, len(request.text)))
                continue
            if request.wav is None:
                raise ValueError(f"{request.id or request.task}: task {request.task} needs speech input")
            result.source_seconds = len(request.wav) / self.codec.sample_rate
            spans = split_at_pauses(request.wav, max_seconds=self.max_segment_seconds, vad=self.vad)
            result.segments = len(spans)
            for a, b in spans:
                waves.append(request.wav[a:b])
                owners.append(i)
        codes = self.codec.encode(waves) if waves else []
        for i, wav, src_codes in zip(owners, waves, codes, strict=True):
            r = requests[i]
            example = Example(r.task, r.src_lang, r.tgt_lang, src_codes=src_codes)
            segments.append(_Segment(i, example, len(wav) / self.codec.sample_rate, None))
        segments.sort(key=lambda s: s.request)  # stable: a request's segments stay in time order
        for i, seg in enumerate(segments):
            seg.count = results[seg.request].segments
            seg.index = 0 if i == 0 or segments[i - 1].request != seg.request else segments[i - 1].index + 1
        return segments

    def _generation_request(self, task: str, segs: list[_Segment]) -> GenerationRequest:
        output = task_spec(task).output
        budgets = []
        for s in segs:
            direction = f"{s.example.src_lang}-{s.example.tgt_lang}"
            if output == "speech" and s.source_seconds is not None:
                self._warn_unmeasured(direction)
            budgets.append(
                max_new_tokens_for(
                    self.length_budget,
                    output,
                    source_seconds=s.source_seconds,
                    source_chars=s.source_chars,
                    frame_rate=self.vocab.frame_rate,
                    direction=direction,
                )
            )
        if self.max_new_tokens is not None:
            budgets = [min(b, self.max_new_tokens) for b in budgets]
        end_ids = [self.vocab.speech_end_id] if output == "speech" else [self.tokenizer.eos_token_id]
        return GenerationRequest(
            allowed=allowed_token_ids(self.vocab, self.tokenizer, output),
            end_ids=end_ids,
            max_new_tokens=budgets,
            sampling=self.sampling[task],
            guard=self.guards[output],
            extra_logits_processors=list(self.extra_logits_processors),
            seed=self.seed,
        )

    def guide(self, request: GenerationRequest, prompts) -> GenerationRequest:
        """A speech request with classifier-free guidance (`guidance_scale` != 1) over its prompts
        without their source speech (`sts.generation.guidance.unconditional_prompt`; tts: without the
        text); the request itself otherwise. For a text-first answer the prompts are its speech-phase
        prompts, whose texts stay in the unconditional one: guidance leans on the source speech."""

        if self.guidance_scale == 1.0 or self.vocab.speech_end_id not in request.end_ids:
            return request
        unconditional = [unconditional_prompt(p, self.vocab) for p in prompts]
        return replace(request, guidance_scale=self.guidance_scale, unconditional_prompts=unconditional)

    def _text_phase_request(self, segs: list[_Segment]) -> GenerationRequest:
        """The text phase of a chain-format answer: text ids until the speech start marker, with the
        s2tt sampling; budget: a text output's per source second, once per text the format writes."""
        texts = 2 if self.formatter.s2st_format == "text-first" else 1
        budgets = [
            texts * max_new_tokens_for(self.length_budget, "text", source_seconds=s.source_seconds)
            for s in segs
        ]
        if self.max_new_tokens is not None:
            budgets = [min(b, self.max_new_tokens) for b in budgets]
        return GenerationRequest(
            allowed=chain_text_ids(self.vocab, self.tokenizer),
            end_ids=[self.vocab.speech_start_id],
            max_new_tokens=budgets,
            sampling=self.sampling["s2tt"],
            guard=self.guards["text"],
            extra_logits_processors=list(self.extra_logits_processors),
            seed=self.seed,
        )

    def _warn_unmeasured(self, direction: str) -> None:
        """Warn once per direction when the speech budget falls back to the fixed 2.5x."""
        if self.length_budget.speech_ratio(direction) is None and direction not in self._unmeasured:
            self._unmeasured.add(direction)
            warnings.warn(
                f"the checkpoint records no measured {direction} duration ratio (sts_decoding.json): "
                f"speech output is bounded by a fixed {self.length_budget.frames_per_source_second / 50:g}x "
                "the source + 1 s",
                UserWarning,
                stacklevel=3,
            )

    def _read_output(self, seg: _Segment, ids, result: Result):
        """Cut a loop, parse, and note why an output did not end properly. Returns codes or text (a
        chain-format answer: (codes, transcript, translation))."""
        if self.formatter.chain(seg.example.task):
            return self._read_chain(seg, ids, result)
        return self._read_plain(seg, ids, result)

    def _read_plain(self, seg: _Segment, ids: np.ndarray, result: Result):
        """One output of one modality: loop cut, end checked, parsed into codes or text."""
        task = seg.example.task
        output = task_spec(task).output
        end_ids = [self.vocab.speech_end_id] if output == "speech" else [self.tokenizer.eos_token_id]
        body, ended = split_end(ids, end_ids)
        loop = detect_loop(body, self.guards[output])
        cut = "none"
        if loop is not None:
            body, ended, cut = body[: loop.cut], False, loop.kind
            where = f" of segment {seg.index + 1}/{seg.count}" if seg.count > 1 else ""
            result.warnings.append(
                loop.describe(self.vocab.frame_rate if output == "speech" else None, where)
            )
        elif not ended:
            cut = "budget"
            result.warnings.append(f"length limit reached after {len(body)} tokens: output may be truncated")
        result.finished &= ended
        if CUT_RULES.index(cut) > CUT_RULES.index(result.cut) and result.cut in ("none", "budget"):
            result.cut = cut  # a loop rule outranks the budget, the budget outranks none
        parsed = self.formatter.parse(body, task)
        if parsed.stray_ids:  # the constraint makes this impossible; a backend that ignored it would not
            result.warnings.append(f"{parsed.stray_ids} ids of the wrong modality dropped")
        return parsed.codes if output == "speech" else parsed.text

    def _read_chain(self, seg: _Segment, row, result: Result):
        """A text-then-speech answer: its texts (loop-checked as text) and its speech (as speech)."""
        parsed = self._read_chain_texts(row, result)
        if not row.switched:
            return np.zeros(0, np.int32), parsed.transcript, parsed.translation
        speech = np.concatenate([[self.vocab.speech_start_id], row.speech_ids]).astype(np.int64)
        return self._read_plain(seg, speech, result), parsed.transcript, parsed.translation

    def _read_chain_texts(self, row, result: Result):
        """The texts of a text-then-speech answer, loop-checked as text (`ParsedOutput`); notes in
        `result` an answer that never reached its speech."""
        text_ids = row.text_ids
        loop = detect_loop(text_ids, self.guards["text"])
        if loop is not None:
            text_ids = text_ids[: loop.cut]
            result.warnings.append(loop.describe(None, " in the text before the speech"))
        parsed = self.formatter.parse(np.append(text_ids, self.vocab.speech_start_id), "s2st")
        if not row.switched:
            result.finished = False
            result.cut = loop.kind if loop is not None else "budget"
            result.warnings.append("the model wrote no speech: its texts ran into their length budget")
        return parsed

    def _assemble(self, request: Request, result: Result, parts: list) -> None:
        if task_spec(request.task).output == "text":
            result.text = join_texts(parts, request.tgt_lang)
            return
        if self.formatter.chain(request.task):
            codes, transcripts, translations = zip(*parts, strict=True)
            parts = list(codes)
            if any(t is not None for t in transcripts):
                result.transcript = join_texts([t or "" for t in transcripts], request.src_lang)
            if any(t is not None for t in translations):
                result.translation = join_texts([t or "" for t in translations], request.tgt_lang)
        result.codes = [np.asarray(c, dtype=np.int32) for c in parts]
        nonempty = [c for c in result.codes if len(c)]
        if len(nonempty) < len(result.codes):
            result.warnings.append(f"{len(result.codes) - len(nonempty)} segment(s) produced no speech")
        waves = self.codec.decode(nonempty) if nonempty else []
        result.waveform = join_waveforms(waves, gap_seconds=self.gap_seconds)


def replace_sampling(base: Sampling, **overrides) -> Sampling:
    """`base` with the given fields replaced; None values are ignored."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _local_dir(model: str | Path) -> Path | str:
    """A local directory as is; a hub id as its snapshot directory (downloaded if not cached)."""
    path = Path(model)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(str(model))
