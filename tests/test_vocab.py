import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sts.vocab import VOCAB_FILE, SpeechVocab, VocabError, round_up

VOCAB = SpeechVocab(
    speech_token_offset=1002,
    num_speech_tokens=65536,
    speech_start_id=1000,
    speech_end_id=1001,
    text_vocab_size=1000,
    vocab_size=round_up(1002 + 65536, 128),
)


@given(arrays(np.int64, st.integers(0, 300), elements=st.integers(0, 65535)))
def test_codes_ids_round_trip_numpy(codes):
    ids = VOCAB.codes_to_ids(codes)
    assert ids.dtype == np.int64
    assert (ids == codes + 1002).all()
    assert VOCAB.is_speech_id(ids).all()
    back = VOCAB.ids_to_codes(ids)
    assert back.dtype == np.int32
    assert (back == codes).all()


@given(st.lists(st.integers(0, 65535), min_size=1, max_size=50))
def test_codes_ids_round_trip_torch(codes):
    codes = torch.tensor(codes, dtype=torch.int32)
    ids = VOCAB.codes_to_ids(codes)
    assert ids.dtype == torch.int64 and torch.equal(ids, codes.long() + 1002)
    back = VOCAB.ids_to_codes(ids)
    assert back.dtype == torch.int32 and torch.equal(back, codes)


@given(st.integers(-(2**40), 2**40).filter(lambda c: not 0 <= c < 65536))
def test_out_of_range_codes_are_refused(bad):
    codes = np.array([5, bad, 7], dtype=np.int64)
    with pytest.raises(
        VocabError, match=rf"1 speech code\(s\) outside \[0, 65536\); first at flat index 1: {bad}"
    ):
        VOCAB.codes_to_ids(codes)


@pytest.mark.parametrize("bad_id", [0, 999, 1000, 1001, 1002 + 65536, 10**9, -1])
def test_non_speech_ids_are_refused(bad_id):
    with pytest.raises(VocabError, match="speech token id"):
        VOCAB.ids_to_codes(np.array([1002, bad_id]))
    assert not VOCAB.is_speech_id(bad_id)


def test_float_codes_are_refused():
    with pytest.raises(VocabError, match="must be integers"):
        VOCAB.codes_to_ids(np.array([1.0, 2.0]))
    with pytest.raises(VocabError, match="must be integers"):
        VOCAB.codes_to_ids(torch.tensor([1.0]))


def test_speech_token_strings():
    assert VOCAB.speech_token(0) == "<|s_0|>"
    assert VOCAB.speech_token(65535) == "<|s_65535|>"
    assert VOCAB.speech_token_stop == 1002 + 65536
    assert VOCAB.vocab_size % 128 == 0


def test_save_and_load(tmp_path):
    path = VOCAB.save(tmp_path)
    assert path == tmp_path / VOCAB_FILE
    assert SpeechVocab.load(tmp_path) == VOCAB
    assert SpeechVocab.load(path) == VOCAB
    assert [p.name for p in tmp_path.iterdir()] == [VOCAB_FILE]  # no temp file left behind


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(VocabError, match=rf"{tmp_path}/sts_vocab.json: no such file.*sts-extend-tokenizer"):
        SpeechVocab.load(tmp_path)
    (tmp_path / VOCAB_FILE).write_text("{not json")
    with pytest.raises(VocabError, match="cannot read"):
        SpeechVocab.load(tmp_path)
    (tmp_path / VOCAB_FILE).write_text(json.dumps({**VOCAB.__dict__, "surprise": 1}))
    with pytest.raises(VocabError, match="not a version-1"):
        SpeechVocab.load(tmp_path)
    (tmp_path / VOCAB_FILE).write_text(json.dumps({**VOCAB.__dict__, "speech_token_offset": 10}))
    with pytest.raises(VocabError, match=r"sts_vocab.json: speech block \[10, "):
        SpeechVocab.load(tmp_path)


def test_inconsistent_layouts_are_refused():
    fields = dict(VOCAB.__dict__)
    with pytest.raises(VocabError, match="speech block"):
        SpeechVocab(**{**fields, "vocab_size": 1002 + 65535})
    with pytest.raises(VocabError, match="speech_start_id"):
        SpeechVocab(**{**fields, "speech_start_id": 5000})
    with pytest.raises(VocabError, match="speech_end_id"):
        SpeechVocab(**{**fields, "speech_end_id": 10})


def test_an_adopted_llasa_layout_is_accepted():
    """Llasa-1B's ids: 128,256 text ids, 8 markers (speech pair at +4/+5), the block right after, no padding."""
    llasa = SpeechVocab(
        speech_token_offset=128264,
        num_speech_tokens=65536,
        speech_start_id=128260,
        speech_end_id=128261,
        text_vocab_size=128256,
        vocab_size=128264 + 65536,
        speech_start_token="<|SPEECH_GENERATION_START|>",
        speech_end_token="<|SPEECH_GENERATION_END|>",
    )
    assert llasa.codes_to_ids(np.array([0, 65535])).tolist() == [128264, 193799]
    assert not llasa.is_speech_id(128263) and llasa.vocab_size % 128 != 0
    # markers may also sit after the block; the other marker ids in between are not the contract's business
    after = SpeechVocab(**{**llasa.__dict__, "speech_start_id": 193800, "vocab_size": 193801})
    assert after.speech_start_id == after.speech_token_stop
    with pytest.raises(VocabError, match="speech_end_id"):
        SpeechVocab(**{**llasa.__dict__, "speech_end_id": 128264})  # inside the block
    with pytest.raises(VocabError, match="speech_start_id"):
        SpeechVocab(**{**llasa.__dict__, "speech_start_id": 128000})  # a text id (Llama's <|begin_of_text|>)


def test_the_whole_contract_is_checked_against_the_tokenizer(
    extended_lm_dir, extended_tokenizer, speech_vocab
):
    """Every field of sts_vocab.json against the tokenizer and config: a one-off offset (which used to
    pass, only the start marker being compared) and each other mismatch name the file and the field."""
    import dataclasses

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(extended_lm_dir)
    speech_vocab.check_tokenizer(extended_tokenizer, config)  # the real one passes
    v, n = speech_vocab, speech_vocab.num_speech_tokens
    bad = {
        "offset one up": (dict(speech_token_offset=v.speech_token_offset + 1), r"<\|s_0\|> is id \d+ in the tokenizer, but speech_token_offset"),
        "block too small": (dict(num_speech_tokens=n - 1), rf"the tokenizer has <\|s_{n - 1}\|>, beyond num_speech_tokens"),
        "markers swapped": (dict(speech_start_id=v.speech_end_id, speech_end_id=v.speech_start_id), r"<\|speech_start\|> is id"),
        "text vocab one off": (dict(text_vocab_size=v.text_vocab_size - 1), r"text_vocab_size = \d+, but the tokenizer's own text tokens end at id"),
        "more rows than the model": (dict(vocab_size=v.vocab_size + 128), r"vocab_size = \d+, but the model's config.json has only"),
    }  # fmt: skip
    for _name, (change, message) in bad.items():
        with pytest.raises(VocabError, match=rf"{VOCAB_FILE}: {message}"):
            dataclasses.replace(v, **change).check_tokenizer(extended_tokenizer, config)
    # a block one off in the other direction cannot even be written: the start marker would sit in it
    with pytest.raises(VocabError, match="must be a new id outside the speech block"):
        dataclasses.replace(v, speech_token_offset=v.speech_token_offset - 1)


def test_load_names_the_file_in_contract_errors(extended_lm_dir, extended_tokenizer, tmp_path):
    data = json.loads((extended_lm_dir / VOCAB_FILE).read_text())
    data["speech_token_offset"] += 1
    (tmp_path / VOCAB_FILE).write_text(json.dumps(data))
    with pytest.raises(VocabError, match=rf"{tmp_path / VOCAB_FILE}: <\|s_0\|> is id"):
        SpeechVocab.load(tmp_path).check_tokenizer(extended_tokenizer)
    data["speech_token_offset"] = "386"
    (tmp_path / VOCAB_FILE).write_text(json.dumps(data))
    with pytest.raises(VocabError, match="speech_token_offset must be an integer, got '386'"):
        SpeechVocab.load(tmp_path)
