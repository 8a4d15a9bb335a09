"""`sts serve` without a browser: the input limits, the direction, the default checkpoint, one
translation per client, the event adapter, and a translation's updates and files (a scripted
translator, and a real tiny text-first checkpoint). The page itself: tests/test_serve_browser.py."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from transformers import LogitsProcessor

from infer.decoding import LengthBudget
from infer.translate import Result
from recipes.serve_service import (
    MB,
    ClientGate,
    Limits,
    ServeConfig,
    ServeError,
    TranslationService,
    default_checkpoint,
    read_input,
    resolve_direction,
    translation_events,
)
from sts.asr import DetectedLanguage
from sts.audio import write_audio
from sts.testing import synthetic_utterance


@pytest.fixture
def uploads(tmp_path) -> Path:
    folder = tmp_path / "runs" / "serve" / "gradio" / "abc123"
    folder.mkdir(parents=True)
    return folder


def _limits(uploads: Path, **kw) -> Limits:
    return Limits(**({"max_seconds": 30.0, "max_bytes": 10 * MB, "roots": (uploads.parent,)} | kw))


def test_a_good_clip_loads_at_16k(uploads):
    write_audio(uploads / "me.wav", synthetic_utterance(1.0, 140.0), sample_rate=16000)
    sf.write(uploads / "stereo.flac", np.stack([synthetic_utterance(1.0, 140.0, 44100)] * 2, axis=1), 44100)
    assert read_input(uploads / "me.wav", _limits(uploads)).shape == (16000,)
    assert read_input(uploads / "stereo.flac", _limits(uploads)).shape == (16000,)


@pytest.mark.parametrize(
    ("name", "make", "limits", "message"),
    [
        ("long.wav", lambda p: write_audio(p, synthetic_utterance(3.0, 140.0)), {"max_seconds": 2.0},
         "long.wav: 3.0 s is longer than the 2.0 s limit"),
        ("big.wav", lambda p: write_audio(p, synthetic_utterance(1.0, 140.0)), {"max_bytes": 20 * 1024},
         "big.wav: 0.03 MB is bigger than the 0.0195 MB limit"),
        ("notes.wav", lambda p: p.write_text("not audio, a text file renamed .wav"), {},
         "notes.wav: cannot decode audio"),
        ("empty.wav", lambda p: p.write_bytes(b""), {}, "empty.wav: cannot decode audio"),
        ("blip.wav", lambda p: write_audio(p, synthetic_utterance(0.1, 140.0)), {},
         "blip.wav: 0.10 s is too short"),
        ("quiet.wav", lambda p: write_audio(p, np.zeros(16000, np.float32)), {},
         "quiet.wav: no speech, the clip is silent"),
    ],
)  # fmt: skip
def test_refused_inputs_name_the_file_and_the_problem(uploads, name, make, limits, message):
    make(uploads / name)
    with pytest.raises(ServeError) as err:
        read_input(uploads / name, _limits(uploads, **limits))
    assert str(err.value).startswith(message)
    assert str(uploads) not in str(err.value)  # the user sees their file's name, not the server's paths


def test_a_clip_too_big_once_decoded_gets_a_hint(uploads):
    """1.5 s of 8 channels at 96 kHz is under 2 s but decodes to more than 2 s of 48 kHz stereo."""
    sf.write(uploads / "wide.wav", np.zeros((144000, 8), np.float32), 96000, subtype="PCM_16")
    with pytest.raises(ServeError) as err:
        read_input(uploads / "wide.wav", _limits(uploads, max_seconds=2.0))
    message = str(err.value)
    assert message.startswith("wide.wav: 1.5 s of 8 channel(s) at 96000 Hz decode to")
    assert message.endswith("(send a shorter clip or one recorded at 48 kHz or less)")
    with pytest.raises(ServeError) as err:  # too long: the limit says so, no sample-rate hint
        read_input(uploads / "wide.wav", _limits(uploads, max_seconds=1.0))
    assert "48 kHz" not in str(err.value)


def test_no_input_and_inputs_from_outside_the_upload_folder_are_refused(uploads, tmp_path):
    with pytest.raises(ServeError, match="no audio: record with the microphone or upload a file"):
        read_input(None, _limits(uploads))
    outside = tmp_path / "secret.wav"
    write_audio(outside, synthetic_utterance(1.0, 140.0))
    with pytest.raises(ServeError, match="secret.wav: not a file uploaded to this app"):
        read_input(outside, _limits(uploads))
    (uploads / "link.wav").symlink_to(outside)  # inside by name, outside in fact
    with pytest.raises(ServeError, match="link.wav: not a file uploaded to this app"):
        read_input(uploads / "link.wav", _limits(uploads))
    with pytest.raises(ServeError, match=r"gone.wav: no such file"):
        read_input(uploads / "gone.wav", _limits(uploads))


def test_direction_fixed_or_detected():
    wav = synthetic_utterance(1.0, 140.0)
    assert resolve_direction("en → ja", wav, detect=None) == ("en", "ja", "chosen")
    assert resolve_direction("auto", wav, lambda w: DetectedLanguage("ja", 0.93)) == (
        "ja",
        "en",
        "detected (p = 0.93)",
    )
    unsure = DetectedLanguage("unknown", 0.4, "Whisper is unsure (ja 0.40)")
    with pytest.raises(
        ServeError, match=r"cannot tell the language: Whisper is unsure \(ja 0.40\); choose ja → en"
    ):
        resolve_direction("auto", wav, lambda w: unsure)
    with pytest.raises(ServeError, match="unknown direction 'fr → en'"):
        resolve_direction("fr → en", wav)


def test_default_checkpoint_is_the_newest_demo_checkpoint(tmp_path):
    with pytest.raises(ServeError, match=r"no checkpoint in .*train: run `make run`.*or give --model DIR"):
        default_checkpoint(tmp_path / "demo")
    for step in (9, 10, 2):
        (tmp_path / "demo" / "train" / f"checkpoint-{step}").mkdir(parents=True)
    (tmp_path / "demo" / "train" / "checkpoint-99.tmp").mkdir()  # an unfinished save is not a checkpoint
    assert default_checkpoint(tmp_path / "demo") == (tmp_path / "demo" / "train" / "checkpoint-10", None)
    (tmp_path / "demo" / "codec").mkdir()
    assert default_checkpoint(tmp_path / "demo")[1] == tmp_path / "demo" / "codec"


def test_the_cli_says_how_to_get_a_checkpoint(tmp_path, monkeypatch, capsys):
    from recipes.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # main sets GRADIO_TEMP_DIR & co.: keep them here
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "sts serve: error: no checkpoint in runs/demo/train: run `make run` (the offline demo) or give --model DIR"
    )
    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "not an sts checkpoint (no sts_vocab.json)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


def test_one_translation_per_client():
    gate = ClientGate()
    with (
        gate.hold("page-1"),
        gate.hold("page-2"),
        pytest.raises(ServeError, match="already translating"),
        gate.hold("page-1"),
    ):
        pass
    with gate.hold("page-1"):  # released after the first finished
        pass


class ScriptedTranslator:
    """`Translator.stream` with a fixed text-first answer: 1.2 s of speech in 0.5 s chunks, a loop warning."""

    def __init__(self):
        self.formatter = type("F", (), {"s2st_format": "text-first"})()
        self.length_budget = LengthBudget(duration_ratio={"ja-en": {"p99": 1.5}})
        self.requests = []

    def stream(self, r):
        from infer.translate_stream import StreamEvent

        self.requests.append(r)
        wave = synthetic_utterance(1.2, 220.0, seed=5)
        result = Result(r.id, r.task, r.src_lang, r.tgt_lang, waveform=wave, codes=[np.zeros(60, np.int32)])
        result.transcript, result.translation = "こんにちは", "hello"
        result.warnings, result.cut, result.finished = (
            ["repetition loop at 1.0 s: output cut there"],
            "exact",
            False,
        )
        yield StreamEvent("text", 0.1, field="transcript", text=result.transcript)
        yield StreamEvent("text", 0.2, field="translation", text=result.translation)
        for start in range(0, len(wave), 8000):
            yield StreamEvent("audio", 0.3, audio=wave[start : start + 8000])
        yield StreamEvent("warning", 0.4, text=result.warnings[0])
        yield StreamEvent("done", 0.5, result=result)


def test_translation_events_are_the_translators_stream():
    tr = ScriptedTranslator()
    from infer.translate import Request

    events = list(translation_events(tr, Request("s2st", "ja", "en", wav=np.zeros(16000, np.float32))))
    kinds = [e.kind for e in events]
    assert kinds == ["text", "text", "audio", "audio", "audio", "warning", "done"]
    assert [(e.field, e.text) for e in events[:2]] == [("transcript", "こんにちは"), ("translation", "hello")]
    speech = np.concatenate([e.audio for e in events if e.kind == "audio"])
    np.testing.assert_array_equal(speech, events[-1].result.waveform)  # 0.5 s + 0.5 s + 0.2 s


def test_a_translation_yields_texts_then_speech_and_writes_only_its_run_folder(tmp_path, uploads):
    cfg = ServeConfig(out_dir=tmp_path / "runs" / "serve")
    service = TranslationService(
        ScriptedTranslator(), cfg, model="ckpt", detect=lambda w: DetectedLanguage("ja", 0.9)
    )
    write_audio(uploads / "me.wav", synthetic_utterance(1.0, 140.0))
    before = {p for p in tmp_path.rglob("*")}
    updates = [dataclasses.replace(u) for u in service.translate(str(uploads / "me.wav"), "auto", "page-1")]

    assert (
        updates[0].status == "translating ja → en …"
        and updates[0].direction == "ja → en (detected (p = 0.90))"
    )
    first_text = next(i for i, u in enumerate(updates) if u.transcript)
    first_audio = next(i for i, u in enumerate(updates) if u.chunk is not None)
    assert first_text < first_audio  # the texts show before the speech plays
    assert [u.chunks for u in updates if u.chunk is not None] == [1, 2, 3]
    last = updates[-1]
    assert last.done and last.transcript == "こんにちは" and last.translation == "hello"
    assert last.warnings == ["repetition loop at 1.0 s: output cut there"]
    assert last.speech_seconds == pytest.approx(1.2) and last.status.startswith("done: 1.2 s of speech")

    out_dir = last.audio_path.parent
    assert out_dir.parent == cfg.out_dir.resolve() / "outputs"
    assert sorted(p.name for p in out_dir.iterdir()) == ["result.json", "source.wav", "translation.wav"]
    assert [p.name for p in last.files] == ["translation.wav", "result.json"]
    assert sf.info(out_dir / "translation.wav").frames == int(1.2 * 16000)
    assert sf.info(out_dir / "source.wav").frames == 16000
    record = json.loads((out_dir / "result.json").read_text())
    assert record["transcript"] == "こんにちは" and record["cut"] == "exact" and record["model"] == "ckpt"
    assert record["output_seconds"] == 1.2 and record["source_seconds"] == 1.0 and not record["finished"]
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p.resolve().is_relative_to(cfg.out_dir.resolve()) for p in new)
    assert service.notes() == [
        "the checkpoint records no measured duration ratio for en-ja (sts_decoding.json): "
        "translated speech is bounded by a fixed 2.5x the source + 1 s"
    ]


class FakeASR:
    name = "fake"

    def __init__(self, fail: bool = False):
        self.fail, self.calls = fail, []

    def transcribe(self, waveforms, lang):
        if self.fail:
            raise ImportError("No module named 'faster_whisper'")
        self.calls.append((len(waveforms[0]), lang))
        return ["hello there"]


def test_whisper_transcribes_the_translated_speech_when_asked(tmp_path, uploads):
    write_audio(uploads / "me.wav", synthetic_utterance(1.0, 140.0))
    asr = FakeASR()
    service = TranslationService(
        ScriptedTranslator(), ServeConfig(out_dir=tmp_path / "runs" / "serve"), asr=asr
    )
    updates = [dataclasses.replace(u) for u in service.translate(str(uploads / "me.wav"), "ja → en", "p")]
    assert asr.calls == []  # not asked
    assert updates[-1].heard is None
    updates = [
        dataclasses.replace(u)
        for u in service.translate(str(uploads / "me.wav"), "ja → en", "p", transcribe_output=True)
    ]
    assert asr.calls == [(int(1.2 * 16000), "en")]  # the whole translated speech, in the target language
    assert updates[-2].status.startswith("transcribing the translated speech") and not updates[-2].done
    assert updates[-1].heard == "hello there"
    assert json.loads(updates[-1].files[1].read_text())["heard"] == "hello there"

    service.asr = FakeASR(fail=True)
    last = list(service.translate(str(uploads / "me.wav"), "ja → en", "p", transcribe_output=True))[-1]
    assert last.done and last.heard is None
    assert "cannot transcribe the translated speech: No module named 'faster_whisper'" in last.warnings


def test_a_second_click_of_the_same_page_is_refused_while_the_first_runs(tmp_path, uploads):
    service = TranslationService(ScriptedTranslator(), ServeConfig(out_dir=tmp_path / "runs" / "serve"))
    write_audio(uploads / "me.wav", synthetic_utterance(1.0, 140.0))
    first = service.translate(str(uploads / "me.wav"), "ja → en", "page-1")
    next(first)  # running
    with pytest.raises(ServeError, match="this page is already translating"):
        next(service.translate(str(uploads / "me.wav"), "ja → en", "page-1"))
    assert next(service.translate(str(uploads / "me.wav"), "ja → en", "page-2")).status.startswith(
        "translating"
    )
    first.close()  # a closed page (Gradio closes the generator) frees its client
    assert next(service.translate(str(uploads / "me.wav"), "ja → en", "page-1")).status.startswith(
        "translating"
    )


def test_refused_input_writes_nothing(tmp_path, uploads):
    service = TranslationService(ScriptedTranslator(), ServeConfig(out_dir=tmp_path / "runs" / "serve"))
    (uploads / "bad.wav").write_text("not audio")
    with pytest.raises(ServeError, match="bad.wav: cannot decode audio"):
        list(service.translate(str(uploads / "bad.wav"), "ja → en", "page-1"))
    assert not (tmp_path / "runs" / "serve" / "outputs").exists()
    assert service.translator.requests == []


def test_player_chunks_are_16_bit_pcm():
    from recipes.serve import pcm16_base64, player_label

    pcm = np.frombuffer(base64.b64decode(pcm16_base64(np.array([0.0, 0.5, -1.0, 2.0], np.float32))), "<i2")
    np.testing.assert_array_equal(pcm, [0, 16384, -32767, 32767])
    from recipes.serve_service import Update

    label = player_label(Update("r", "done", direction="<b>ja</b> → en", first_audio_seconds=0.25))
    assert label == "&lt;b&gt;ja&lt;/b&gt; → en · done · first speech after 0.2 s"


class Script(LogitsProcessor):
    """Favours `ids[k]` at the k-th call (one call per generated token), so a random model writes them."""

    def __init__(self, ids: list[int]):
        self.ids, self.calls = ids, 0

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.ids[min(self.calls, len(self.ids) - 1)]] += 100.0
        self.calls += 1
        return scores


def test_a_text_first_checkpoint_shows_its_transcript_and_translation(extended_lm_dir, tmp_path, uploads):
    """The real `infer.Translator` on a tiny random text-first checkpoint, scripted to write two lines
    of text and 20 speech codes."""
    from infer.load import load_translator
    from sts.devices import ModelArgs
    from sts.tasks import save_task_formats
    from sts.testing import save_tiny_xcodec2
    from sts.vocab import SpeechVocab

    ckpt = tmp_path / "ckpt"
    shutil.copytree(extended_lm_dir, ckpt)
    vocab = SpeechVocab.load(ckpt)
    dataclasses.replace(vocab, codec=str(save_tiny_xcodec2(tmp_path / "codec"))).save(ckpt)
    save_task_formats(ckpt, "text-first")
    tr = load_translator(ModelArgs(model=str(ckpt), device="cpu"), greedy=True)
    heard, said = (tr.tokenizer(word, add_special_tokens=False).input_ids for word in ("hello", "world"))
    newline = tr.tokenizer("\n", add_special_tokens=False).input_ids[-1]
    speech = [vocab.speech_token_offset + 7] * 20 + [vocab.speech_end_id]
    tr.extra_logits_processors = [Script([*heard, newline, *said, vocab.speech_start_id, *speech])]

    service = TranslationService(tr, ServeConfig(out_dir=tmp_path / "runs" / "serve"), model=str(ckpt))
    write_audio(uploads / "me.wav", synthetic_utterance(1.0, 140.0))
    updates = [dataclasses.replace(u) for u in service.translate(str(uploads / "me.wav"), "ja → en", "p")]
    last = updates[-1]
    assert (last.transcript, last.translation) == ("hello", "world")
    assert last.done and last.speech_seconds == pytest.approx(20 * 320 / 16000)
    assert sf.info(last.audio_path).frames == 20 * 320
    assert json.loads(last.files[1].read_text())["translation"] == "world"
    assert os.path.commonpath([last.audio_path, service.run_dir]) == str(service.run_dir)
