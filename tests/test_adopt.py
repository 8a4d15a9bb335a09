"""Adopting a Llasa-layout model: `sts_vocab.json` for its own speech block, weights and tokenizer
unchanged, the almost-Llasa errors, and the task formats on its Llama-3 chat template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from corpus_builder.tts.testing import save_tiny_llasa
from sts.generation.allowed import allowed_token_ids
from sts.llasa_layout import MARKERS, LlasaLayoutError, find_llasa_layout
from sts.tasks import IGNORE_INDEX, TASKS, Example, TaskFormatter
from sts.testing import build_tiny_tokenizer
from sts.vocab import SpeechVocab
from tokenizer_ext import AlreadyExtendedError, ExtendConfig, extend_tokenizer
from tokenizer_ext.cli import main as extend_main

N = 1024  # the tiny XCodec2's codebook
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def llasa_dir(tmp_path_factory) -> Path:
    return save_tiny_llasa(
        tmp_path_factory.mktemp("llasa") / "tiny-llasa", num_speech_tokens=N, chat_format="llama3"
    )


@pytest.fixture(scope="module")
def adopted_dir(llasa_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adopted") / "tiny-llasa-adopted"
    extend_tokenizer(ExtendConfig(str(llasa_dir), out, num_speech_tokens=N, codec="tiny-codec"))
    return out


@pytest.fixture(scope="module")
def formatter(adopted_dir):
    return TaskFormatter(AutoTokenizer.from_pretrained(adopted_dir), SpeechVocab.load(adopted_dir))


def test_adopted_vocab_points_at_the_existing_block(llasa_dir, adopted_dir):
    tokenizer = AutoTokenizer.from_pretrained(llasa_dir)
    ids = tokenizer.get_vocab()
    vocab = SpeechVocab.load(adopted_dir)
    assert vocab.speech_token_offset == ids["<|s_0|>"] and vocab.num_speech_tokens == N
    assert (vocab.speech_start_id, vocab.speech_end_id) == (
        ids["<|SPEECH_GENERATION_START|>"],
        ids["<|SPEECH_GENERATION_END|>"],
    )
    assert vocab.text_vocab_size == ids[MARKERS[0]] == min(ids[m] for m in MARKERS)
    assert vocab.speech_start_token == "<|SPEECH_GENERATION_START|>"
    assert vocab.speech_end_token == "<|SPEECH_GENERATION_END|>"
    assert vocab.vocab_size == len(tokenizer) == vocab.speech_token_stop  # the base's rows, not padded
    assert (vocab.base_model, vocab.codec) == (str(llasa_dir), "tiny-codec")
    config = yaml.safe_load((adopted_dir / "extend_config.yaml").read_text())
    assert config["mode"] == "adopt"  # auto resolved and recorded


def test_weights_and_tokenizer_are_saved_unchanged(llasa_dir, adopted_dir):
    from safetensors.torch import load_file

    base, adopted = load_file(llasa_dir / "model.safetensors"), load_file(adopted_dir / "model.safetensors")
    assert base.keys() == adopted.keys()
    assert all(torch.equal(base[k], adopted[k]) for k in base)
    before, after = AutoTokenizer.from_pretrained(llasa_dir), AutoTokenizer.from_pretrained(adopted_dir)
    assert after.get_vocab() == before.get_vocab() and after.chat_template == before.chat_template
    assert (after.eos_token, after.pad_token, after.bos_token) == (
        "<|eot_id|>",
        "<|eot_id|>",
        "<|begin_of_text|>",
    )


@pytest.mark.parametrize("tied", [False, True])
def test_too_few_embedding_rows_are_grown_at_the_mean(tmp_path, tied):
    rows = 1300  # the block needs 1432
    base = save_tiny_llasa(tmp_path / "base", num_speech_tokens=N, vocab_size=rows, tie_word_embeddings=tied)
    vocab = extend_tokenizer(ExtendConfig(str(base), tmp_path / "out", num_speech_tokens=N))
    old = AutoModelForCausalLM.from_pretrained(base)
    new = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert vocab.vocab_size == new.config.vocab_size == 1536  # 1432 padded to a multiple of 128
    for get in ("get_input_embeddings", "get_output_embeddings"):
        w_old, w_new = getattr(old, get)().weight, getattr(new, get)().weight
        assert w_new.shape[0] == 1536
        torch.testing.assert_close(w_new[:rows], w_old)  # trained rows, speech ones included, kept
        torch.testing.assert_close(w_new[rows:], w_old.mean(0).expand(1536 - rows, -1))
    tied_now = new.get_output_embeddings().weight.data_ptr() == new.get_input_embeddings().weight.data_ptr()
    assert tied_now == tied


def _tokenizer_dir(path: Path, *, markers=MARKERS, speech: list[str]) -> Path:
    """A tokenizer-only folder: enough to reach the layout check, which runs before any weights load."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens([*markers])
    tokenizer.add_tokens(speech)
    tokenizer.save_pretrained(path)
    return path


def _block(n: int) -> list[str]:
    return [f"<|s_{k}|>" for k in range(n)]


ALMOST_LLASA = {
    "a marker missing": (
        dict(markers=MARKERS[:-1], speech=_block(N)),
        r"missing \['<\|SPEECH_UNDERSTANDING_END\|>'\]",
    ),
    "speech tokens without markers": (
        dict(markers=(), speech=_block(N)),
        r"not a Llasa tokenizer: missing \[",
    ),
    "markers without speech tokens": (dict(speech=[]), r"missing \['<\|s_0\|>'\]; --mode extend adds"),
    "block too small": (
        dict(speech=_block(1000)),
        r"holds 1,000 tokens <\|s_0\|>..<\|s_999\|>, but the codec has 1,024",
    ),
    "block too large": (dict(speech=_block(2048)), r"holds 2,048 tokens .* exactly <\|s_0\|>..<\|s_1023\|>"),
    "a hole in the block": (
        dict(speech=[t for t in _block(N + 1) if t != "<|s_7|>"]),
        r"<\|s_1024\|> \(1 missing, first <\|s_7\|>\)",
    ),
    "block not contiguous": (
        dict(speech=[*_block(100), "<|not speech|>", *_block(N)[100:]]),
        r"not contiguous: <\|s_100\|> is id \d+, expected \d+",
    ),
}


@pytest.mark.parametrize("case", ALMOST_LLASA, ids=list(ALMOST_LLASA))
def test_almost_llasa_layouts_name_what_is_wrong(tmp_path, case):
    kwargs, message = ALMOST_LLASA[case]
    base = _tokenizer_dir(tmp_path / "base", **kwargs)
    with pytest.raises(LlasaLayoutError, match=rf"{base}: cannot adopt its speech tokens: .*{message}"):
        extend_tokenizer(ExtendConfig(str(base), tmp_path / "out", num_speech_tokens=N))
    assert not (tmp_path / "out").exists()


def test_modes_are_explicit(tmp_path, llasa_dir, tiny_lm_dir):
    with pytest.raises(LlasaLayoutError, match="not a Llasa tokenizer: missing"):
        extend_tokenizer(ExtendConfig(str(tiny_lm_dir), tmp_path / "a", num_speech_tokens=N, mode="adopt"))
    with pytest.raises(AlreadyExtendedError, match=r"already has <\|s_0\|>; adopt its speech block"):
        extend_tokenizer(ExtendConfig(str(llasa_dir), tmp_path / "b", num_speech_tokens=N, mode="extend"))
    # auto on a plain LM still extends it, and says so in the config it records
    extend_tokenizer(ExtendConfig(str(tiny_lm_dir), tmp_path / "c", num_speech_tokens=16))
    assert yaml.safe_load((tmp_path / "c" / "extend_config.yaml").read_text())["mode"] == "extend"
    assert SpeechVocab.load(tmp_path / "c").speech_start_token == "<|speech_start|>"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_adopted_model_is_not_adopted_again(adopted_dir, tmp_path):
    with pytest.raises(AlreadyExtendedError, match="already extended or adopted"):
        extend_tokenizer(ExtendConfig(str(adopted_dir), tmp_path / "again", num_speech_tokens=N))


def test_cli_adopts_and_errors_in_one_line(llasa_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        extend_main([str(llasa_dir), "-o", str(out), "--num-speech-tokens", str(N), "--mode", "adopt"]) == 0
    )
    assert "adopted speech ids" in " ".join(capsys.readouterr().err.split())
    assert (
        SpeechVocab.load(out).speech_token_offset
        == AutoTokenizer.from_pretrained(llasa_dir).get_vocab()["<|s_0|>"]
    )
    assert extend_main([str(llasa_dir), "-o", str(tmp_path / "x"), "--num-speech-tokens", "1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sts-extend-tokenizer: error: {llasa_dir}: cannot adopt") and "\n" not in err


def test_find_llasa_layout_at_full_size():
    """Llasa-1B's real ids (Llama-3's 128,256, then the markers, then 65,536 codes), from the vocabulary alone."""

    class Vocabulary:
        def get_vocab(self):
            markers = {m: 128256 + i for i, m in enumerate(MARKERS)}
            return {"hello": 0, **markers, **{f"<|s_{k}|>": 128264 + k for k in range(65536)}}

    layout = find_llasa_layout(Vocabulary(), 65536)
    assert (layout.text_vocab_size, layout.speech_token_offset) == (128256, 128264)
    assert (layout.speech_start_id, layout.speech_end_id) == (128260, 128261)


def _example(task: str, src: str, tgt: str) -> Example:
    spec, text = TASKS[task], {"ja": "駅はどこですか？", "en": "Where is the station?"}
    return Example(
        task,
        src,
        tgt,
        src_text=text[src] if spec.input == "text" else None,
        tgt_text=text[tgt] if spec.output == "text" else None,
        src_codes=RNG.integers(0, N, 21) if spec.input == "speech" else None,
        tgt_codes=RNG.integers(0, N, 13) if spec.output == "speech" else None,
    )


CASES = [("s2st", "ja", "en"), ("s2st", "en", "ja"), ("s2tt", "ja", "en"), ("t2tt", "en", "ja"),
         ("asr", "ja", "ja"), ("asr", "en", "en"), ("tts", "ja", "ja"), ("tts", "en", "en")]  # fmt: skip


@pytest.mark.parametrize(("task", "src", "tgt"), CASES)
def test_task_formats_build_and_parse_on_the_llama3_template(formatter, task, src, tgt):
    vocab, tokenizer = formatter.vocab, formatter.tokenizer
    example = _example(task, src, tgt)
    sample = formatter.build(example)
    ids, labels = sample["input_ids"], sample["labels"]
    prompt = formatter.prompt(Example(task, src, tgt, src_text=example.src_text, src_codes=example.src_codes))
    assert (ids[: len(prompt)] == prompt).all()
    # the template's own system header (knowledge cutoff, today's date) comes before our system prompt
    head = tokenizer.decode(prompt[:40].tolist())
    assert head.startswith("<|begin_of_text|><|start_header_id|>system") and "Cutting Knowledge Date" in head
    parsed = formatter.parse(ids[len(prompt) :], task)
    assert parsed.finished and parsed.stray_ids == 0
    if TASKS[task].output == "speech":
        np.testing.assert_array_equal(parsed.codes, example.tgt_codes)
        assert prompt[-1] == vocab.speech_start_id
    else:
        assert parsed.text == example.tgt_text
    speech = np.flatnonzero(vocab.is_speech_id(ids))
    segments = (TASKS[task].input == "speech") + (TASKS[task].output == "speech")
    assert (ids == vocab.speech_start_id).sum() == (ids == vocab.speech_end_id).sum() == segments
    assert len(speech) == sum(len(c) for c in (example.src_codes, example.tgt_codes) if c is not None)
    supervised = np.flatnonzero(labels != IGNORE_INDEX)
    assert ids[supervised[-1]] == tokenizer.convert_tokens_to_ids("<|eot_id|>") == formatter.end_of_turn_id


def test_text_outputs_exclude_llama_specials_and_the_markers(formatter):
    tokenizer, vocab = formatter.tokenizer, formatter.vocab
    allowed = set(allowed_token_ids(vocab, tokenizer, "text").tolist())
    specials = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    reserved = {i for i, t in tokenizer.added_tokens_decoder.items() if "reserved_special" in t.content}
    assert len(reserved) == 8 and not reserved & allowed
    assert not (specials - {tokenizer.eos_token_id}) & allowed
    assert tokenizer.eos_token_id in allowed  # <|eot_id|> ends the turn
    assert max(allowed) < vocab.text_vocab_size  # no marker, no speech token
    assert len(allowed) == vocab.text_vocab_size - len(specials) + 1
    speech = allowed_token_ids(vocab, tokenizer, "speech")
    assert len(speech) == N + 1 and speech[-1] == vocab.speech_token_stop - 1
    assert vocab.speech_end_id in speech and vocab.speech_start_id not in speech


def test_the_adopted_contract_is_checked_against_its_first_marker(adopted_dir, tmp_path):
    """`load_speech_contract` holds an adopted Llasa's sts_vocab.json against its tokenizer: the text
    ids end at the first of Llasa's 8 markers, not at the speech start marker."""
    import dataclasses
    import shutil

    from sts.model_files import load_speech_contract
    from sts.vocab import VocabError

    vocab, tokenizer = load_speech_contract(adopted_dir)
    assert vocab == SpeechVocab.load(adopted_dir) and len(tokenizer) == vocab.speech_token_stop
    copy = tmp_path / "copy"
    shutil.copytree(adopted_dir, copy)
    dataclasses.replace(vocab, text_vocab_size=vocab.text_vocab_size + 1).save(copy)
    with pytest.raises(
        VocabError,
        match=r"sts_vocab.json: text_vocab_size = \d+, but .* end at id \d+ \(its first layout marker\)",
    ):
        load_speech_contract(copy)
