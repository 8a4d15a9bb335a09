"""Streaming one request: its texts, then its audio chunk by chunk while the model still writes it.

    for event in translator.stream(Request("s2st", "ja", "en", wav=wav)):   # `Translator.stream`
        if event.kind == "audio":
            play(event.audio)                      # [N] float32 16 kHz: the next samples
        elif event.kind == "done":
            result = event.result                  # the Result `run` gives (see below)

What happens (`stream_request`): the input is segmented and encoded as `run` does; then one segment
at a time, in time order, its prompt is generated at batch 1 through `sts.generation.row_stream`
(transformers streams the ids; another backend gives the row whole when done). A text-first answer's
text phase runs first and its transcript / translation come out as "text" events. Speech ids go to
the codec's chunked decoder (`sts.codec.stream_decode`, the codec's `stream_defaults` unless `settings`
is given), which emits "audio" once `chunk_frames + lookahead` frames are known, and every
`chunk_frames` after that. Every `chunk_frames` ids the growing output's tail is checked for a loop
(`tail_is_loop`, as the generation's own guard does; `detect_loop` finds the cut when it fires), and
no audio past a cut already found is emitted. When a segment ends, its ids are read
exactly as `run` reads them (loop cut, end check, warnings); the segments of a long input are joined
by `Translator.gap_seconds` of silence, as in `run`. The "done" event's result is assembled as in
`run` (whole-sequence decode), after every audio event.

Equality with `run`. The ids (codes, texts, cut, warnings) are those of `run` for the same seed: a
single-segment input is one batch-1 generation either way; a long input's segments are generated one
at a time here, which `run` does too with `batch_size=1` (each call reseeds; a bigger batch samples
the rows from one shared stream, so its codes differ). The streamed audio differs from the result's
waveform only by the chunked decoding (bounds in `sts.codec.stream_decode`) and, when a loop found only
at the end cuts audio already streamed, by that tail (a "warning" event says so; the result is cut).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sts.codec.stream_decode import StreamSettings, stream_decoder
from sts.generation.chain import check_chain_requests, speech_phase_prompt, text_phase
from sts.generation.loops import detect_loop, tail_is_loop
from sts.generation.row_stream import stream_row
from sts.tasks import task_spec

EventKind = Literal["text", "audio", "warning", "done"]


@dataclass
class StreamEvent:
    """One thing `Translator.stream` has to say, in the order it becomes known."""

    kind: EventKind
    """"text" | "audio" | "warning" | "done"."""
    seconds: float
    """Wall seconds since `stream()` was called."""
    field: str | None = None
    """kind "text": "transcript" | "translation" (text-first answers, per segment) | "text" (text output)."""
    text: str | None = None
    """kind "text" and "warning": the string."""
    audio: np.ndarray | None = None
    """kind "audio": `[N]` float32 at 16 kHz, the samples that follow the previous audio event's."""
    result: object | None = None
    """kind "done": the full `infer.translate.Result`."""


def stream_request(
    translator,
    request,
    result,
    *,
    settings: StreamSettings | None = None,
    started: float | None = None,
) -> Iterator[StreamEvent]:
    """The events of one request (see the module docstring): `translator` an `infer.translate.Translator`,
    `request` its `Request`, `result` the empty `Result` to fill (what "done" carries); `started`:
    the `time.perf_counter()` the event times count from (default: the first step of the iteration)."""
    clock = _Clock(started)
    if task_spec(request.task).output == "text":
        [result] = translator.run([request])
        yield from (StreamEvent("warning", clock(), text=w) for w in result.warnings)
        yield StreamEvent("text", clock(), field="text", text=result.text)
        result.seconds = clock()
        yield StreamEvent("done", clock(), result=result)
        return

    segments = translator._segments([request], [result])
    state = _Speech(translator, result, clock, settings)
    parts = []
    for seg in segments:
        prompt = translator.formatter.prompt(seg.example)
        speech_request = translator._generation_request(request.task, [seg])
        if not translator.formatter.chain(request.task):
            codes = yield from state.segment(
                seg, prompt, translator.guide(speech_request, [prompt]), prefix=[]
            )
            parts.append(codes)
            continue
        text_request = translator._text_phase_request([seg])
        switch_id = check_chain_requests(text_request, speech_request, 1)
        [row] = text_phase(translator.backend, [prompt], text_request)
        texts = translator._read_chain_texts(row, result)
        yield from state.warnings()
        for name in ("transcript", "translation"):
            if getattr(texts, name) is not None:
                yield StreamEvent("text", clock(), field=name, text=getattr(texts, name))
        codes = np.zeros(0, np.int32)
        if row.switched:
            second = speech_phase_prompt(prompt, row, switch_id)
            guided = translator.guide(speech_request, [second])
            codes = yield from state.segment(seg, second, guided, prefix=[switch_id])
        parts.append((codes, texts.transcript, texts.translation))
    translator._assemble(request, result, parts)
    yield from state.warnings()
    result.seconds = clock()
    yield StreamEvent("done", clock(), result=result)


class _Clock:
    def __init__(self, started: float | None):
        self.started = started

    def __call__(self) -> float:
        if self.started is None:
            self.started = time.perf_counter()
        return time.perf_counter() - self.started


class _Speech:
    """The speech segments of one request: their chunked audio, gaps and warnings as events."""

    def __init__(self, translator, result, clock: _Clock, settings: StreamSettings | None):
        self.translator = translator
        self.result = result
        self.clock = clock
        self.settings = settings
        self.reported = 0  # result.warnings already sent as events
        self.sent_audio = False  # an earlier segment's audio went out: the next one starts after a gap

    def warnings(self) -> Iterator[StreamEvent]:
        while self.reported < len(self.result.warnings):
            self.reported += 1
            yield StreamEvent("warning", self.clock(), text=self.result.warnings[self.reported - 1])

    def segment(self, seg, prompt: np.ndarray, request, *, prefix: list[int]):
        """Generate one segment, yielding its audio (and warnings) as events; returns its codes as
        `run` reads them. `prefix`: ids `run`'s reading puts before the generated ones (the speech
        start marker of a text-first answer)."""
        tr = self.translator
        vocab, guard = tr.vocab, tr.guards["speech"]
        decoder = stream_decoder(tr.codec, self.settings)
        check_every = decoder.settings.chunk_frames
        ids = list(prefix)
        limit = None  # codes (after the prefix) that may be decoded: a loop was found at that cut
        ended, checked, first = False, 0, True
        row = stream_row(tr.backend, prompt, request)
        try:
            for new in row:
                if ended:
                    continue
                hits = np.flatnonzero(np.isin(new, request.end_ids))
                if len(hits):
                    new, ended = new[: hits[0]], True
                ids.extend(new.tolist())
                if limit is None and (ended or len(ids) - checked >= check_every):
                    checked = len(ids)
                    limit = self._loop_cut(np.asarray(ids, np.int64), guard, len(prefix))
                audio = decoder.push(self._codes(ids, prefix, decoder.frames, limit))
                if len(audio):
                    yield self._audio(audio, first)
                    first = False
        finally:
            row.close()  # a consumer that left early stops the generation
        body = np.asarray(prefix + row.ids.tolist(), np.int64)
        codes = np.asarray(tr._read_plain(seg, body, self.result), np.int32)
        yield from self.warnings()
        if decoder.emitted_frames > len(codes):
            cut_s = len(codes) / vocab.frame_rate
            past_s = (decoder.emitted_frames - len(codes)) / vocab.frame_rate
            yield StreamEvent(
                "warning",
                self.clock(),
                text=f"{past_s:.2f} s of audio streamed after {cut_s:.2f} s of this segment are not in the "
                "result: the output was cut there after they had been sent",
            )
        if len(codes) > decoder.frames:  # the final reading kept more than the growing output's loop check
            tail = np.concatenate([decoder.push(codes[decoder.frames :]), decoder.flush()])
        else:
            tail = decoder.flush(len(codes))
        if len(tail):
            yield self._audio(tail, first)
        return codes

    @staticmethod
    def _loop_cut(ids: np.ndarray, guard, skip: int) -> int | None:
        """Where `run` would cut the output so far (codes after the first `skip` ids), or None: the
        cheap tail check first (the generation's own guard), the full rules only when it fires."""
        if not tail_is_loop(ids, guard):
            return None
        loop = detect_loop(ids, guard)
        return None if loop is None else max(0, loop.cut - skip)

    def _codes(self, ids: list[int], prefix: list[int], pushed: int, limit: int | None) -> np.ndarray:
        """The codes not yet pushed to the decoder (ids after the prefix), up to the loop cut if found."""
        end = len(ids) - len(prefix) if limit is None else min(limit, len(ids) - len(prefix))
        if end <= pushed:
            return np.zeros(0, np.int32)
        new = np.asarray(ids[len(prefix) + pushed : len(prefix) + end], np.int64)
        return self.translator.vocab.ids_to_codes(new[self.translator.vocab.is_speech_id(new)])

    def _audio(self, audio: np.ndarray, first: bool) -> StreamEvent:
        if first and self.sent_audio:  # the silence `run` puts between the segments of a long input
            gap = np.zeros(int(self.translator.gap_seconds * self.translator.codec.sample_rate), np.float32)
            audio = np.concatenate([gap, audio])
        self.sent_audio = True
        return StreamEvent("audio", self.clock(), audio=np.asarray(audio, np.float32))
