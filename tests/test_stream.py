"""Streaming output: the generation layer yields the ids `generate` returns, `Translator.stream` gives
the events of the contract with `run`'s result, and `sts-infer --stream` grows its wav."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import LogitsProcessor

from infer.translate import Request, Translator
from sts.codec.stream_decode import joined_difference
from sts.generation import RAS_SAMPLING, GenerationRequest, Sampling, TransformersBackend, allowed_token_ids
from sts.testing import synthetic_utterance

HOP = 320
XCODEC2_TINY_MIN_SNR_DB = 5.0  # sts.codec.stream_decode's documented bound for the tiny random XCodec2
SAMPLINGS = {
    "greedy": Sampling(do_sample=False),
    "sampled": Sampling(temperature=1.0, top_p=0.95),
    "ras": RAS_SAMPLING,
}


class EndTextEvery(LogitsProcessor):
    """Makes the text phase of a text-first answer write the speech start marker at every `n`-th
    text step (the speech phase masks the marker, so there it changes nothing)."""

    def __init__(self, marker: int, n: int = 4):
        self.marker, self.n, self.text_steps = marker, n, 0

    def __call__(self, input_ids, scores):
        if torch.isfinite(scores[:, self.marker]).all():
            self.text_steps += 1
            if self.text_steps % self.n == 0:
                scores = scores.clone()
                scores[:, self.marker] += 100.0
        return scores


class Cycle(LogitsProcessor):
    """Forces the speech codes 5, 17, 300, 42, 99 over and over (a loop the guard must cut)."""

    def __init__(self, offset: int):
        self.ids = [offset + c for c in (5, 17, 300, 42, 99)]

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.ids[input_ids.shape[1] % 5]] = 0.0
        return forced


@pytest.fixture(scope="module")
def lm(extended_lm_dir):
    """The tiny extended LM with small random embeddings: near-flat logits, varied outputs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(extended_lm_dir).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.05)
    return model


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    from sts.testing import save_tiny_xcodec2

    return save_tiny_xcodec2(tmp_path_factory.mktemp("codec") / "tiny-xcodec2")


@pytest.fixture(scope="module")
def codec(codec_dir):
    from sts.codec import XCodec2Codec

    return XCodec2Codec(codec_dir)


def _translator(lm, tokenizer, vocab, codec, *, sampling="greedy", s2st_format="direct", **kwargs):
    kwargs.setdefault("max_new_tokens", 60)
    backend = TransformersBackend(lm, pad_token_id=tokenizer.pad_token_id)
    tr = Translator(tokenizer, vocab, backend, codec, s2st_format=s2st_format, seed=3, **kwargs)
    tr.sampling = {**tr.sampling, "s2st": SAMPLINGS[sampling], "s2tt": SAMPLINGS[sampling]}
    return tr


def _source(seconds: float = 1.0) -> np.ndarray:
    return synthetic_utterance(seconds, 150.0, seed=3)


@pytest.mark.parametrize(
    ("sampling", "fast"), [("greedy", False), ("sampled", False), ("ras", False), ("ras", True)]
)
def test_backend_streams_the_ids_generate_returns(lm, speech_vocab, sampling, fast):
    backend = TransformersBackend(lm, pad_token_id=0, fast=fast)  # fast on a CPU: the static cache
    request = GenerationRequest(
        allowed_token_ids(speech_vocab, None, "speech"),
        [speech_vocab.speech_end_id],
        [40],
        sampling=SAMPLINGS[sampling],
        seed=7,
    )
    prompt = np.arange(5, 30)
    stream = backend.stream(prompt, request)
    pieces = list(stream)
    [expected] = backend.generate([prompt], request)
    assert len(pieces) > 1  # progressive, not one piece at the end
    np.testing.assert_array_equal(np.concatenate(pieces), expected)
    np.testing.assert_array_equal(stream.ids, expected)


def test_leaving_early_stops_the_generation(lm, speech_vocab):
    backend = TransformersBackend(lm, pad_token_id=0)
    request = GenerationRequest(
        allowed_token_ids(speech_vocab, None, "speech"),
        [speech_vocab.speech_end_id],
        [4000],
        min_new_tokens=4000,
    )
    stream = backend.stream(np.arange(5, 30), request)
    for _ in zip(range(3), stream, strict=False):
        pass
    stream.close()
    assert not stream.running and stream.ids is None


def _events_and_result(tr, request):
    events = list(tr.stream(request))
    [expected] = tr.run([request])
    done = events[-1]
    assert done.kind == "done" and [e.kind for e in events].count("done") == 1
    assert [e.seconds for e in events] == sorted(e.seconds for e in events)
    return events, done.result, expected


def _assert_same_result(got, expected):
    assert len(got.codes) == len(expected.codes)
    for a, b in zip(got.codes, expected.codes, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got.waveform, expected.waveform)
    for name in ("text", "transcript", "translation", "cut", "finished", "warnings", "segments"):
        assert getattr(got, name) == getattr(expected, name), name


@pytest.mark.parametrize(
    ("s2st_format", "sampling"),
    [("direct", "greedy"), ("direct", "ras"), ("text-first", "greedy"), ("text-first", "sampled")],
)
def test_stream_gives_runs_result_and_audio_within_the_bound(
    lm, extended_tokenizer, speech_vocab, codec, s2st_format, sampling
):
    tr = _translator(lm, extended_tokenizer, speech_vocab, codec, sampling=sampling, s2st_format=s2st_format)
    if s2st_format == "text-first":
        tr.extra_logits_processors = [EndTextEvery(speech_vocab.speech_start_id)]
    events, result, expected = _events_and_result(tr, Request("s2st", "ja", "en", wav=_source(), id="x"))
    _assert_same_result(result, expected)
    kinds = [e.kind for e in events]
    audio = [e.audio for e in events if e.kind == "audio"]
    assert len(audio) >= 2 and kinds.index("audio") < len(kinds) - 2  # audio before generation ended
    assert [e.text for e in events if e.kind == "warning"] == expected.warnings
    joined = np.concatenate(audio)
    assert (
        joined.dtype == np.float32 and len(joined) == len(expected.waveform) == len(expected.codes[0]) * HOP
    )
    assert joined_difference(joined, expected.waveform)["snr_db"] >= XCODEC2_TINY_MIN_SNR_DB
    if s2st_format == "text-first":
        texts = [(e.field, e.text) for e in events if e.kind == "text"]
        fields = [f for f in ("transcript", "translation") if getattr(expected, f) is not None]
        assert texts == [(f, getattr(expected, f)) for f in fields] and texts
        assert kinds.index("text") < kinds.index("audio")


def test_a_long_input_streams_segment_by_segment(lm, extended_tokenizer, speech_vocab, codec):
    tr = _translator(
        lm, extended_tokenizer, speech_vocab, codec, max_new_tokens=40, batch_size=1,
        max_segment_seconds=1.0, vad="energy", gap_seconds=0.25,
    )  # fmt: skip
    started: list[int] = []
    stream = tr.backend.stream
    tr.backend.stream = lambda prompt, request: started.append(1) or stream(prompt, request)
    request = Request("s2st", "ja", "en", wav=_source(3.2))
    events = []
    segments_at_audio = []
    for event in tr.stream(request):
        events.append(event)
        if event.kind == "audio":
            segments_at_audio.append(len(started))
    [expected] = tr.run([request])
    result = events[-1].result
    assert result.segments == 4 == len(started)
    _assert_same_result(result, expected)  # run with batch_size=1 generates the segments one by one too
    assert segments_at_audio[0] == 1 and segments_at_audio == sorted(segments_at_audio)
    assert set(segments_at_audio) == {1, 2, 3, 4}  # every segment's audio came before the next began
    joined = np.concatenate([e.audio for e in events if e.kind == "audio"])
    assert len(joined) == len(expected.waveform)
    first = len(expected.codes[0]) * HOP
    np.testing.assert_array_equal(joined[first : first + 4000], 0.0)  # run's 0.25 s gap, in place


def test_a_backend_that_cannot_stream_gives_its_rows_whole(lm, extended_tokenizer, speech_vocab, codec):
    """vLLM's offline engine returns whole completions: the audio is still streamed, chunk by chunk."""

    class WholeRows:
        def __init__(self, inner):
            self.inner = inner

        def generate(self, prompts, request):
            return self.inner.generate(prompts, request)

    tr = _translator(lm, extended_tokenizer, speech_vocab, codec, sampling="ras")
    tr.backend = WholeRows(tr.backend)
    events, result, expected = _events_and_result(tr, Request("s2st", "ja", "en", wav=_source()))
    _assert_same_result(result, expected)
    audio = [e.audio for e in events if e.kind == "audio"]
    assert len(audio) >= 2 and sum(len(a) for a in audio) == len(expected.waveform)


def test_text_output_comes_at_the_end(lm, extended_tokenizer, speech_vocab, codec):
    tr = _translator(lm, extended_tokenizer, speech_vocab, codec, max_new_tokens=8)
    events, result, expected = _events_and_result(tr, Request("s2tt", "ja", "en", wav=_source(), id="t"))
    assert [e.kind for e in events][-2:] == ["text", "done"] and "audio" not in [e.kind for e in events]
    assert events[-2].field == "text" and events[-2].text == expected.text == result.text


def test_a_loop_found_after_its_audio_was_sent_is_cut_with_a_warning(
    lm, extended_tokenizer, speech_vocab, codec
):
    tr = _translator(lm, extended_tokenizer, speech_vocab, codec, max_new_tokens=200)
    tr.extra_logits_processors = [Cycle(speech_vocab.speech_token_offset)]
    events, result, expected = _events_and_result(tr, Request("s2st", "ja", "en", wav=_source()))
    _assert_same_result(result, expected)
    assert result.cut == "exact" and len(result.codes[0]) < 10
    joined = np.concatenate([e.audio for e in events if e.kind == "audio"])
    warnings = [e.text for e in events if e.kind == "warning"]
    assert warnings[: len(expected.warnings)] == expected.warnings
    [late] = warnings[len(expected.warnings) :]
    assert "not in the result" in late and len(joined) > len(result.waveform)
    # no audio after the loop was seen: the stream stopped at its first loop check, not at the budget
    assert len(joined) <= 125 * HOP


@pytest.fixture(scope="module")
def model_dir(lm, extended_lm_dir, codec_dir, tmp_path_factory):
    from test_infer_cli import _save_checkpoint

    return _save_checkpoint(lm, extended_lm_dir, codec_dir, tmp_path_factory.mktemp("ckpt") / "random")


def test_cli_stream_grows_the_wav_and_ends_with_runs_output(model_dir, tmp_path, capsys):
    from infer.cli import main
    from infer.run import InferConfig
    from infer.run import run as run_cli
    from sts.audio import write_audio
    from sts.cli import parse_cli

    write_audio(tmp_path / "in.wav", _source())
    out, plain = tmp_path / "out.wav", tmp_path / "plain.wav"
    args = [str(tmp_path / "in.wav"), "--from", "ja", "--model", str(model_dir), "--max-new-tokens", "60"]
    seen_mid_way = []

    def log(line: str):
        if line.startswith("first audio"):  # the growing file, right after its first chunk
            info = sf.info(out)
            seen_mid_way.append(info.frames)
            audio, _ = sf.read(out)
            assert len(audio) == info.frames
        print(line)

    argv = [*args, "-o", str(out), "--stream", "--results", str(tmp_path / "r.jsonl")]
    cfg = parse_cli(InferConfig, argv, prog="sts-infer")
    assert run_cli(cfg, log=log) == 0
    assert main([*args, "-o", str(plain)]) == 0
    final, rate = sf.read(out, dtype="float32")
    reference, _ = sf.read(plain, dtype="float32")
    np.testing.assert_array_equal(final, reference)  # replaced by exactly what run writes
    [frames] = seen_mid_way
    assert rate == 16000 and 25 * HOP <= frames < len(final)
    printed = capsys.readouterr().out
    assert "time to first audio" in printed and "real-time factor" in printed
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert row["first_audio_seconds"] > 0 and row["rtf"] > 0 and row["codes"] * HOP == len(final)
    assert not list(tmp_path.glob(".*tmp*"))
    write_audio(tmp_path / "folder" / "a.wav", _source())
    folder = [str(tmp_path / "folder"), "--from", "ja", "-o", str(tmp_path / "o"), "--stream"]
    assert main([*folder, "--model", str(model_dir)]) == 2
    assert "--stream takes one input" in capsys.readouterr().err
