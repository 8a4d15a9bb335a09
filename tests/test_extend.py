from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sts.testing import save_tiny_lfm2
from sts.vocab import SpeechVocab
from tokenizer_ext import AlreadyExtendedError, ExtendConfig, extend_tokenizer
from tokenizer_ext.cli import main as extend_main
from tokenizer_ext.extend import CHECK_SENTENCES

TEXTS = [
    "Excuse me, which bus goes to the airport?",
    "空港行きのバスはどれですか？",
    "東京タワーは三百三十三メートルです。",
    "  leading spaces, tabs\tand\nnewlines ",
    "絵文字😀と記号#$%&",
]


def test_layout_of_the_extended_vocab(tiny_lm_dir, speech_vocab):
    base = AutoTokenizer.from_pretrained(tiny_lm_dir)
    assert speech_vocab.text_vocab_size == len(base)
    assert (speech_vocab.speech_start_id, speech_vocab.speech_end_id) == (len(base), len(base) + 1)
    assert speech_vocab.speech_token_offset == len(base) + 2
    assert speech_vocab.num_speech_tokens == 1024  # conftest extends with the tiny codebook size
    assert speech_vocab.vocab_size % 128 == 0
    assert speech_vocab.vocab_size >= speech_vocab.speech_token_stop


def test_text_tokenizes_exactly_as_before(tiny_lm_dir, extended_tokenizer):
    base = AutoTokenizer.from_pretrained(tiny_lm_dir)
    for text in TEXTS + list(CHECK_SENTENCES):
        assert extended_tokenizer(text).input_ids == base(text).input_ids
        assert extended_tokenizer.decode(base(text, add_special_tokens=False).input_ids) == text


def test_every_speech_token_string_maps_to_offset_plus_k(extended_tokenizer, speech_vocab):
    strings = [f"<|s_{k}|>" for k in range(speech_vocab.num_speech_tokens)]
    ids = extended_tokenizer.convert_tokens_to_ids(strings)
    assert ids == list(range(speech_vocab.speech_token_offset, speech_vocab.speech_token_stop))
    # inside running text too: each string is one atomic token
    encoded = extended_tokenizer("<|speech_start|><|s_7|><|s_1023|><|speech_end|>", add_special_tokens=False)
    assert encoded.input_ids == [
        speech_vocab.speech_start_id,
        speech_vocab.codes_to_ids(7),
        speech_vocab.codes_to_ids(1023),
        speech_vocab.speech_end_id,
    ]


def test_reloaded_model_has_the_new_vocab(tiny_lm_dir, extended_lm_dir, speech_vocab):
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(extended_lm_dir)
    rows = model.get_input_embeddings().weight
    assert model.config.vocab_size == speech_vocab.vocab_size == rows.shape[0]
    assert model.get_output_embeddings().weight.data_ptr() == rows.data_ptr()  # still tied
    old = base.get_input_embeddings().weight
    n_text = speech_vocab.text_vocab_size
    torch.testing.assert_close(rows[:n_text], old[:n_text])  # old rows untouched
    mean = old[:n_text].mean(dim=0)
    torch.testing.assert_close(rows[n_text:], mean.expand(rows.shape[0] - n_text, -1))
    ids = torch.tensor([[1, speech_vocab.speech_start_id, speech_vocab.speech_token_stop - 1]])
    assert model(input_ids=ids).logits.shape == (1, 3, speech_vocab.vocab_size)


def test_output_folder_is_complete(extended_lm_dir):
    names = {p.name for p in extended_lm_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "sts_vocab.json",
        "extend_config.yaml",
    } <= names
    assert not [p for p in extended_lm_dir.parent.iterdir() if p.name.startswith(".")]  # no staging dir left


def test_tokenizer_with_more_entries_than_embedding_rows(tmp_path):
    base = save_tiny_lfm2(tmp_path / "base", extra_vocab_rows=-8)
    vocab = extend_tokenizer(ExtendConfig(str(base), tmp_path / "out", num_speech_tokens=300))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.config.vocab_size == vocab.vocab_size >= vocab.speech_token_stop
    assert vocab.text_vocab_size == len(AutoTokenizer.from_pretrained(base))


def test_extending_twice_is_a_clear_error(extended_lm_dir, tmp_path):
    with pytest.raises(AlreadyExtendedError, match="already extended"):
        extend_tokenizer(ExtendConfig(str(extended_lm_dir), tmp_path / "again"))
    assert not (tmp_path / "again").exists()


def test_existing_output_is_kept_without_overwrite(tiny_lm_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        extend_tokenizer(ExtendConfig(str(tiny_lm_dir), out, num_speech_tokens=16))
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_writes_a_loadable_folder(tiny_lm_dir, tmp_path, capsys):
    out = tmp_path / "cli-out"
    assert (
        extend_main(
            [str(tiny_lm_dir), "-o", str(out), "--num-speech-tokens", "64", "--pad-to-multiple-of", "64"]
        )
        == 0
    )
    vocab = SpeechVocab.load(out)
    assert vocab.num_speech_tokens == 64 and vocab.vocab_size % 64 == 0
    assert vocab.base_model == str(tiny_lm_dir)
    assert "extend_config.yaml" in {p.name for p in Path(out).iterdir()}


@pytest.mark.slow
def test_full_size_speech_block(tiny_lm_dir, tmp_path):
    """The real 65,536-token block: contiguous, and every string maps to offset + k after a reload."""
    vocab = extend_tokenizer(ExtendConfig(str(tiny_lm_dir), tmp_path / "full"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "full")
    ids = tokenizer.convert_tokens_to_ids([vocab.speech_token(k) for k in range(65536)])
    assert ids == list(range(vocab.speech_token_offset, vocab.speech_token_offset + 65536))
    assert vocab.vocab_size % 128 == 0
