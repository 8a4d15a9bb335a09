"""`sts-infer` end to end on tiny random models: every task from the CLI, batch mode, loops, long form."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from infer.cli import main
from sts.audio import write_audio
from sts.testing import synthetic_utterance
from sts.vocab import SpeechVocab

HOP = 320


def _save_checkpoint(model, extended_lm_dir, codec_dir, out_dir):
    """A checkpoint folder as training writes it, its `sts_vocab.json` pointing at the tiny codec."""
    model.save_pretrained(out_dir)
    for name in extended_lm_dir.iterdir():
        if name.name.startswith("tokenizer") or name.name == "chat_template.jinja":
            shutil.copy(name, out_dir / name.name)
    vocab = SpeechVocab.load(extended_lm_dir)
    dataclasses.replace(vocab, codec=str(codec_dir)).save(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    from sts.testing import save_tiny_xcodec2

    return save_tiny_xcodec2(tmp_path_factory.mktemp("codec") / "tiny-xcodec2")


@pytest.fixture(scope="module")
def model_dir(extended_lm_dir, codec_dir, tmp_path_factory):
    """The tiny extended LM with small random embeddings: near-flat logits, it would emit any id."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(extended_lm_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.05)
    return _save_checkpoint(model, extended_lm_dir, codec_dir, tmp_path_factory.mktemp("ckpt") / "random")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    write_audio(root / "folder" / "a.wav", synthetic_utterance(1.0, 140.0, seed=1))
    write_audio(root / "folder" / "b.wav", synthetic_utterance(0.6, 200.0, seed=2))
    write_audio(root / "ja.wav", synthetic_utterance(0.8, 150.0, seed=3))
    return root


def _codes_in(path) -> int:
    wav, sr = sf.read(path)
    assert sr == 16000 and wav.ndim == 1 and len(wav) % HOP == 0
    return len(wav) // HOP


def test_s2st_writes_speech(model_dir, clips, tmp_path):
    out = tmp_path / "out.wav"
    args = [str(clips / "ja.wav"), "--from", "ja", "--to", "en", "-o", str(out), "--model", str(model_dir)]
    assert main([*args, "--max-new-tokens", "30", "--results", str(tmp_path / "r.jsonl")]) == 0
    [row] = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert 1 <= _codes_in(out) <= 30 and row["codes"] == _codes_in(out)
    assert row["task"] == "s2st" and (row["src_lang"], row["tgt_lang"]) == ("ja", "en")
    assert not any("modality" in w for w in row["warnings"])


@pytest.mark.parametrize("task", ["asr", "s2tt"])
def test_speech_to_text_tasks(model_dir, clips, tmp_path, capsys, task):
    out = tmp_path / f"{task}.txt"
    args = [str(clips / "ja.wav"), "--task", task, "--from", "ja", "-o", str(out), "--model", str(model_dir)]
    assert main([*args, "--max-new-tokens", "12"]) == 0
    text = out.read_text()
    assert text.endswith("\n") and text.strip() in capsys.readouterr().out


def test_max_audio_seconds_refuses_a_longer_input_from_its_header_and_raises_the_limit(
    model_dir, clips, tmp_path, capsys
):
    out = tmp_path / "asr.txt"
    args = [str(clips / "ja.wav"), "--task", "asr", "--from", "ja", "-o", str(out), "--model", str(model_dir)]
    assert main([*args, "--max-new-tokens", "4", "--max-audio-seconds", "0.5"]) == 2
    err = capsys.readouterr().err
    assert (
        f"sts-infer: error: {clips / 'ja.wav'}: 0.8 s is longer than the 0.5 s limit "
        "(raise it with --max-audio-seconds)\n" in err
    )
    assert not out.exists()
    assert main([*args, "--max-new-tokens", "4", "--max-audio-seconds", "0.8"]) == 0 and out.is_file()
    assert main([*args, "--max-audio-seconds", "0"]) == 2
    assert "--max-audio-seconds must be > 0, got 0.0" in capsys.readouterr().err


def test_tts_from_text_detects_japanese(model_dir, tmp_path):
    out = tmp_path / "tts.wav"
    args = ["--task", "tts", "--text", "こんにちは", "-o", str(out), "--model", str(model_dir)]
    assert main([*args, "--max-new-tokens", "20", "--results", str(tmp_path / "r.jsonl")]) == 0
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert row["src_lang"] == "ja" and 1 <= _codes_in(out) <= 20


def test_batch_folder_resumes(model_dir, clips, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(clips / "folder"), "--from", "ja", "-o", str(out), "--model", str(model_dir)]
    assert main([*args, "--max-new-tokens", "16", "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["a", "b"]
    for row in rows:
        assert row["output"] == str(out / f"{row['id']}.wav") and row["codes"] == _codes_in(row["output"])
    (out / "b.wav").unlink()
    assert main([*args, "--max-new-tokens", "16"]) == 0
    assert "skipping 1 input(s)" in capsys.readouterr().out
    # b is redone; its stale row is replaced, not duplicated (one row per input, pointing at its file)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"] and (out / "b.wav").is_file()


def test_batch_skips_a_bad_input_records_it_and_loads_lazily(model_dir, clips, tmp_path, capsys, monkeypatch):
    """A bad clip before the last one: the rest is processed, the bad one gets an error row and exit
    status 1; the rerun after fixing it does only that clip. (Was: the batch stopped at the bad clip.)"""
    import infer.run as cli

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "d"):
        shutil.copy(clips / "folder" / f"{'a' if name == 'd' else name}.wav", folder / f"{name}.wav")
    (folder / "c.wav").write_bytes(b"RIFF not really audio")
    loaded = []
    real_load = cli.load_audio
    monkeypatch.setattr(
        cli, "load_audio", lambda path, **kw: loaded.append(path.name) or real_load(path, **kw)
    )
    out = tmp_path / "out"
    args = [str(folder), "--from", "ja", "-o", str(out), "--model", str(model_dir), "--max-new-tokens", "8"]
    assert main([*args, "--batch-size", "1"]) == 1
    err = capsys.readouterr().err
    assert "skipped c: " in err and "c.wav" in err and "1 of 4 input(s) failed" in err
    assert loaded == ["a.wav", "b.wav", "c.wav", "d.wav"]  # one batch at a time, in order
    assert all((out / f"{n}.wav").is_file() for n in "abd") and not (out / "c.wav").exists()
    rows = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(rows) == ["a", "b", "c", "d"] and rows["c"]["output"] is None
    assert "c.wav: cannot decode audio" in rows["c"]["error"] and rows["c"]["input"] == str(folder / "c.wav")
    shutil.copy(clips / "ja.wav", folder / "c.wav")  # fixed: the rerun does only c
    loaded.clear()
    assert main(args) == 0
    assert loaded == ["c.wav"] and (out / "c.wav").is_file()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["a", "b", "c", "d"] and not any(r.get("error") for r in rows)
    # --fail-fast stops at the bad clip: one line, exit 2, nothing after it
    (folder / "c.wav").write_bytes(b"")
    out2 = tmp_path / "out2"
    fast = [str(folder), "--from", "ja", "-o", str(out2), "--model", str(model_dir), "--max-new-tokens", "8"]
    assert main([*fast, "--batch-size", "1", "--fail-fast"]) == 2
    assert "sts-infer: error: " in capsys.readouterr().err
    assert (out2 / "a.wav").is_file() and not (out2 / "d.wav").exists()


def test_batch_manifest_errors_name_the_line(model_dir, clips, tmp_path, capsys):
    manifest = clips / "bad.jsonl"
    args = [str(manifest), "--task", "s2tt", "-o", str(tmp_path / "out"), "--model", str(model_dir)]
    manifest.write_text(json.dumps({"audio": "ja.wav"}) + "\n" + json.dumps({"audio": "nope.wav"}) + "\n")
    assert main(args) == 2
    assert "bad.jsonl:2: audio 'nope.wav': no such file" in capsys.readouterr().err
    manifest.write_text(json.dumps({"audio": "ja.wav"}) + "\n{not json\n")
    assert main(args) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batch_manifest_text_output(model_dir, clips, tmp_path):
    manifest = clips / "test.jsonl"
    rows = [
        {"id": "u1", "audio": "folder/a.wav", "src_lang": "ja"},
        {"id": "u2", "audio": "ja.wav", "src_lang": "en"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert (
        main(
            [
                str(manifest),
                "--task",
                "s2tt",
                "-o",
                str(out),
                "--model",
                str(model_dir),
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    results = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert (results["u1"]["tgt_lang"], results["u2"]["tgt_lang"]) == ("en", "ja")
    assert all((out / f"{i}.txt").read_text().strip() == results[i]["text"] for i in ("u1", "u2"))


def test_cli_errors(model_dir, clips, tmp_path, capsys):
    assert main([str(clips / "ja.wav"), "--from", "ja", "--model", str(model_dir)]) == 2  # s2st needs -o
    assert (
        main(
            [
                str(tmp_path / "missing.wav"),
                "--from",
                "ja",
                "-o",
                str(tmp_path / "x.wav"),
                "--model",
                str(model_dir),
            ]
        )
        == 2
    )
    assert main(["--task", "tts", "--model", str(model_dir), "-o", str(tmp_path / "x.wav")]) == 2  # no --text
    assert capsys.readouterr().err.count("sts-infer: error:") == 3


def test_translator_constraint_on_raw_ids(model_dir):
    """What the backend returns for s2st holds speech ids only; for asr text ids only."""
    from infer import Request, Translator

    translator = Translator.from_checkpoint(model_dir, max_new_tokens=40)
    raw: list[np.ndarray] = []
    generate = translator.backend.generate
    translator.backend.generate = lambda prompts, request: (
        raw.extend(out := generate(prompts, request)) or out
    )
    wav = synthetic_utterance(0.8, 150.0)
    [speech] = translator.run([Request("s2st", "ja", "en", wav=wav)])
    vocab = translator.vocab
    ids = np.concatenate(raw)
    assert vocab.is_speech_id(ids[ids != vocab.speech_end_id]).all()
    assert len(speech.waveform) == sum(len(c) for c in speech.codes) * HOP
    raw.clear()
    translator.run([Request("asr", "ja", "ja", wav=wav)])
    assert (np.concatenate(raw) < vocab.text_vocab_size).all()


@pytest.fixture(scope="module")
def looping_model_dir(extended_lm_dir, codec_dir, clips, tmp_path_factory):
    """A tiny LM overfit to answer one s2st prompt with a 5-code pattern repeated 30 times."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sts.audio import load_audio
    from sts.codec import XCodec2Codec
    from sts.tasks import Example, TaskFormatter

    [src_codes] = XCodec2Codec(codec_dir).encode([load_audio(clips / "ja.wav")])
    tokenizer = AutoTokenizer.from_pretrained(extended_lm_dir)
    formatter = TaskFormatter(tokenizer, SpeechVocab.load(extended_lm_dir))
    looped = np.tile(np.array([5, 17, 300, 42, 99]), 30)
    sample = formatter.build(Example("s2st", "ja", "en", src_codes=src_codes, tgt_codes=looped))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(extended_lm_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    input_ids = torch.from_numpy(sample["input_ids"])[None]
    labels = torch.from_numpy(sample["labels"])[None]
    for _ in range(60):
        model(input_ids=input_ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return _save_checkpoint(
        model.eval(), extended_lm_dir, codec_dir, tmp_path_factory.mktemp("ckpt") / "loop"
    )


def test_loop_guard_cuts_and_the_cli_says_so(looping_model_dir, clips, tmp_path, capsys):
    out = tmp_path / "loop.wav"
    args = [
        str(clips / "ja.wav"),
        "--from",
        "ja",
        "-o",
        str(out),
        "--model",
        str(looping_model_dir),
        "--greedy",
    ]
    assert main([*args, "--results", str(tmp_path / "r.jsonl")]) == 0
    row = json.loads((tmp_path / "r.jsonl").read_text())
    [warning] = row["warnings"]
    # Underfit, the tiny model falls into a short cycle of the trained codes within the first frames.
    found = re.fullmatch(
        r"repetition loop at ([\d.]+) s \(a (\d+)-token unit repeating\): output cut there", warning
    )
    assert found, warning
    start, unit = round(float(found[1]) * 50), int(found[2])
    assert start < 10 and unit <= 5
    # cut after the loop's first copy, far below the 175-code budget a 0.8 s input gets
    assert start + unit <= _codes_in(out) < start + unit + 5 and row["finished"] is False
    assert row["cut"] == "exact"
    err = capsys.readouterr().err
    assert "repetition loop" in err and "1 output(s) fell into a repetition loop" in err
    assert "outputs by the rule that cut them: none=0 budget=0 exact=1 approximate=0" in err


@pytest.mark.slow
def test_long_form_split_translate_join(model_dir, tmp_path):
    """A ~2-minute input is split at its pauses, each piece translated, the pieces joined with gaps.

    Slow (~12 s) only because the tiny codec encodes 2 minutes of audio on one thread; the split
    itself is tested on the same recording in test_infer_segment.py.
    """
    from test_infer_segment import long_recording

    wav, pauses = long_recording()
    write_audio(tmp_path / "long.wav", wav)
    out = tmp_path / "long_en.wav"
    args = [str(tmp_path / "long.wav"), "--from", "ja", "-o", str(out), "--model", str(model_dir)]
    args += [
        "--vad",
        "energy",
        "--max-new-tokens",
        "4",
        "--gap-seconds",
        "0.5",
        "--results",
        str(tmp_path / "r.jsonl"),
    ]
    assert main(args) == 0
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert row["source_seconds"] > 110 and 6 <= row["segments"] <= 12
    wav_out, _ = sf.read(out)
    gaps = (row["segments"] - 1) * int(0.5 * 16000)
    assert len(wav_out) == row["codes"] * HOP + gaps
    assert row["segments"] <= row["codes"] <= 4 * row["segments"]


def test_loop_cut_matches_the_raw_generation(looping_model_dir, clips):
    """The kept codes are exactly the raw ids up to the end of the loop's first copy."""
    from infer import Request, Translator
    from sts.audio import load_audio
    from sts.generation import SPEECH_GUARD, Sampling, find_loop

    translator = Translator.from_checkpoint(looping_model_dir, sampling={"s2st": Sampling(do_sample=False)})
    raw: list[np.ndarray] = []
    generate = translator.backend.generate
    translator.backend.generate = lambda prompts, request: (
        raw.extend(out := generate(prompts, request)) or out
    )
    [result] = translator.run([Request("s2st", "ja", "en", wav=load_audio(clips / "ja.wav"))])
    [ids] = raw
    start, unit = find_loop(ids, SPEECH_GUARD)
    assert len(ids) < 175  # the stopping criterion ended the generation early, not the length budget
    assert result.codes[0].tolist() == translator.vocab.ids_to_codes(ids[: start + unit]).tolist()
    assert len(result.waveform) == (start + unit) * HOP and not result.finished


def _answer_at_once(translator) -> list[list[int]]:
    """Replace generation by a stand-in that ends every row at once; returns each request's budgets."""
    seen: list[list[int]] = []

    def generate(prompts, request):
        seen.append(list(request.max_new_tokens))
        return [np.array([request.end_ids[0]], dtype=np.int64) for _ in prompts]

    translator.backend.generate = generate
    return seen


def test_speech_budget_comes_from_the_measured_duration_ratio(model_dir, clips, tmp_path):
    """With `sts_decoding.json` the s2st budget is ceil(p99 * 1.25 * source frames) + 50 for the
    measured direction; an unmeasured one gets the fixed 2.5x + 1 s and one warning."""
    import warnings

    from infer import Request, Translator
    from sts.audio import load_audio

    measured = tmp_path / "measured"
    shutil.copytree(model_dir, measured)
    ratio = {"ja-en": {"n": 10, "p50": 0.7, "p90": 0.75, "p99": 0.8, "max": 0.9, "skipped": 0}}
    (measured / "sts_decoding.json").write_text(json.dumps({"duration_ratio": ratio, "source": []}))
    wav = load_audio(clips / "ja.wav")  # 0.8 s: 40 source frames
    translator = Translator.from_checkpoint(measured)
    assert translator.length_budget.duration_ratio == ratio
    seen = _answer_at_once(translator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a measured direction warns nothing
        [result] = translator.run([Request("s2st", "ja", "en", wav=wav)])
    assert seen == [[40 + 50]] and result.cut == "none"  # 0.8 * 1.25 * 40 frames
    with pytest.warns(UserWarning, match="no measured en-ja duration ratio") as caught:
        for _ in range(2):
            translator.run([Request("s2st", "en", "ja", wav=wav)])
    assert len(caught) == 1 and seen[1:] == [[100 + 50]] * 2  # 2.5 * 40 frames


def test_each_loop_rule_cuts_and_is_counted(model_dir):
    """Stand-in outputs of every loop kind: the result is cut where its repeats begin and names the rule."""
    from infer import Request, Translator
    from sts.testing.loops import speech_like_codes, synthetic_loops

    translator = Translator.from_checkpoint(model_dir)
    vocab = translator.vocab
    cases = synthetic_loops(speech_like_codes(3.0, codebook_size=1000), codebook_size=1000)
    outputs = iter([vocab.speech_token_offset + c.ids for c in cases])
    translator.backend.generate = lambda prompts, request: [next(outputs) for _ in prompts]
    for case in cases:
        [result] = translator.run([Request("tts", "en", "en", text="Good morning, everyone.")])
        kept = sum(len(c) for c in result.codes)
        assert result.cut == case.kind and not result.finished, case.name
        assert abs(kept - case.cut) <= 20 and result.warnings[0].endswith("output cut there")


def test_repetition_aware_sampling_is_the_speech_default_and_can_be_turned_off(model_dir, clips, tmp_path):
    from infer.load import load_translator
    from infer.run import InferConfig
    from sts.cli import parse_cli
    from sts.devices import ModelArgs

    on = load_translator(ModelArgs(model=str(model_dir), device="cpu"))
    assert on.sampling["s2st"].ras_active and on.sampling["tts"].ras_active
    assert not on.sampling["s2tt"].ras_active and not on.sampling["asr"].do_sample
    cfg = parse_cli(InferConfig, ["--speech-sampling.no-repetition-aware"], prog="sts-infer")
    assert (
        cfg.task_sampling() == parse_cli(InferConfig, ["--no-repetition-aware"], prog="x").task_sampling()
    )  # old flag
    off = load_translator(ModelArgs(model=str(model_dir), device="cpu"), sampling=cfg.task_sampling())
    assert not off.sampling["s2st"].ras_active and off.sampling["s2st"].top_k == 25  # same nucleus
    out = tmp_path / "plain.wav"
    args = [str(clips / "ja.wav"), "--from", "ja", "-o", str(out), "--model", str(model_dir)]
    assert (
        main([*args, "--speech-sampling.no-repetition-aware", "--max-new-tokens", "8"]) == 0 and out.is_file()
    )
