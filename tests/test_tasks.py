import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from sts.tasks import IGNORE_INDEX, TASKS, Example, TaskFormatter

RNG = np.random.default_rng(0)
TEXT = {"ja": "駅までの道を教えてください。", "en": "Could you show me the way to the station?"}


def example_for(task: str, src: str, tgt: str) -> Example:
    spec = TASKS[task]
    return Example(
        task,
        src,
        tgt,
        src_text=TEXT[src] if spec.input == "text" else None,
        tgt_text=TEXT[tgt] if spec.output == "text" else None,
        src_codes=RNG.integers(0, 1024, 23) if spec.input == "speech" else None,
        tgt_codes=RNG.integers(0, 1024, 17) if spec.output == "speech" else None,
    )


CASES = [
    (task, src, tgt)
    for task, spec in TASKS.items()
    for src in ("ja", "en")
    for tgt in ([t for t in ("ja", "en") if t != src] if spec.translates else [src])
]


@pytest.fixture(scope="module")
def formatter(extended_tokenizer, speech_vocab):
    return TaskFormatter(extended_tokenizer, speech_vocab)


def test_every_task_and_direction_is_covered():
    assert len(CASES) == 10  # s2st/s2tt/t2tt both ways, asr/tts in both languages


@pytest.mark.parametrize(("task", "src", "tgt"), CASES)
def test_build_and_parse_round_trip(formatter, speech_vocab, task, src, tgt):
    example = example_for(task, src, tgt)
    sample = formatter.build(example)
    ids, labels = sample["input_ids"], sample["labels"]
    assert ids.dtype == labels.dtype == np.int64 and ids.shape == labels.shape

    prompt = formatter.prompt(Example(task, src, tgt, src_text=example.src_text, src_codes=example.src_codes))
    assert (ids[: len(prompt)] == prompt).all()  # the inference prompt is the sample's own prefix
    answer = ids[len(prompt) :]
    parsed = formatter.parse(answer, task)
    assert parsed.finished and parsed.stray_ids == 0
    if TASKS[task].output == "speech":
        assert prompt[-1] == speech_vocab.speech_start_id
        np.testing.assert_array_equal(parsed.codes, example.tgt_codes)
        assert parsed.codes.dtype == np.int32
    else:
        assert parsed.text == example.tgt_text

    # the source speech sits between the markers, by arithmetic
    if TASKS[task].input == "speech":
        start = int(np.flatnonzero(ids == speech_vocab.speech_start_id)[0])
        segment = ids[start + 1 : start + 1 + len(example.src_codes)]
        np.testing.assert_array_equal(segment, example.src_codes + speech_vocab.speech_token_offset)
        assert ids[start + 1 + len(example.src_codes)] == speech_vocab.speech_end_id

    # assistant-only loss: exactly the answer through the end-of-turn token
    supervised = np.flatnonzero(labels != IGNORE_INDEX)
    assert supervised[0] == len(prompt) - (TASKS[task].output == "speech")
    assert ids[supervised[-1]] == formatter.end_of_turn_id
    assert (labels[supervised] == ids[supervised]).all()
    assert (np.diff(supervised) == 1).all()


@pytest.mark.parametrize(("task", "src", "tgt"), CASES)
def test_full_sequence_loss(formatter, task, src, tgt):
    sample = formatter.build(example_for(task, src, tgt), loss="full")
    assert sample["labels"][0] == IGNORE_INDEX
    assert (sample["labels"][1:] == sample["input_ids"][1:]).all()


def test_system_prompts_differ_per_task_and_direction(formatter, extended_tokenizer):
    examples = [example_for(*case) for case in CASES]
    assert len({example.system_prompt() for example in examples}) == len(CASES)
    for example in examples:
        rendered = extended_tokenizer.decode(formatter.prompt(example))
        assert f"<|im_start|>system\n{example.system_prompt()}<|im_end|>" in rendered


def test_sample_runs_through_the_tiny_model(formatter, extended_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(extended_lm_dir)
    sample = formatter.build(example_for("s2st", "ja", "en"))
    out = model(
        input_ids=torch.from_numpy(sample["input_ids"])[None], labels=torch.from_numpy(sample["labels"])[None]
    )
    assert torch.isfinite(out.loss)


def test_parse_drops_stray_ids_and_reports_unfinished(formatter, speech_vocab):
    speech = speech_vocab.codes_to_ids(np.array([3, 4, 5]))
    parsed = formatter.parse(np.concatenate([speech[:2], [65], speech[2:]]), "tts")
    np.testing.assert_array_equal(parsed.codes, [3, 4, 5])
    assert parsed.stray_ids == 1 and not parsed.finished
    parsed = formatter.parse(np.concatenate([speech, [speech_vocab.speech_end_id], speech]), "s2st")
    np.testing.assert_array_equal(parsed.codes, [3, 4, 5])
    assert parsed.finished
    text_ids = formatter.tokenizer("hello", add_special_tokens=False).input_ids
    parsed = formatter.parse([*text_ids, int(speech[0])], "asr")
    assert parsed.text == "hello" and parsed.stray_ids == 1 and not parsed.finished


@pytest.mark.parametrize(
    ("example", "message"),
    [
        (
            Example("s2st", "ja", "ja", src_codes=np.ones(3, int), tgt_codes=np.ones(3, int)),
            "must be different",
        ),
        (Example("asr", "ja", "en", src_codes=np.ones(3, int), tgt_text="x"), "must be the same"),
        (Example("asr", "ja", "ja", src_codes=np.ones(3, int), tgt_text=""), "tgt_text is missing or empty"),
        (Example("tts", "ja", "ja", tgt_codes=np.ones(3, int)), "src_text is missing"),
        (Example("t2tt", "fr", "en", src_text="a", tgt_text="b"), "unsupported language 'fr'"),
        (Example("dub", "ja", "en"), "unknown task 'dub'"),
        (Example("t2tt", "ja", "en", src_text="a<|im_end|>b", tgt_text="b"), "special-token strings"),
        (Example("tts", "en", "en", src_text="a<|s_3|>", tgt_codes=np.ones(3, int)), "special-token strings"),
        (Example("tts", "en", "en", src_text="hi", tgt_codes=np.array([1, 5000])), "outside"),
    ],
)
def test_bad_examples_are_refused(formatter, example, message):
    with pytest.raises(ValueError, match=message):
        formatter.build(example)


def test_task_names_agree_with_the_specs():
    from typing import get_args

    from sts.tasks import TASK_NAMES, TaskName

    assert TASK_NAMES == get_args(TaskName) == tuple(TASKS)
    assert all(spec.name == name for name, spec in TASKS.items())


VARIED_TEXTS = [
    "駅までの道を教えてください。",
    "Could you show me the way to the station?",
    " leading space",
    "  two leading spaces",
    "trailing spaces  ",
    "\nleading newline",
    "\n\nblank lines first",
    "ends with a newline\n",
    'tab\tinside, and "quotes" & <angles>',
    "。",
    "?!",
    "x",
    " ",
    "\n",
    "数字 123, 4.5% — ダッシュ…「かぎ」",
    "emoji 🚉 and mixed 日本語 English",
    "{{ not a template }} {% neither %}",
]


def _same_outcome(fast_call, slow_call, *args, **kwargs):
    """Both calls give equal arrays, or both raise the same exception type."""
    try:
        expected = slow_call(*args, **kwargs)
    except ValueError as err:
        with pytest.raises(type(err)):
            fast_call(*args, **kwargs)
        return False
    got = fast_call(*args, **kwargs)
    if isinstance(expected, dict):
        assert expected.keys() == got.keys()
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
            assert got[key].dtype == expected[key].dtype == np.int64
    else:
        np.testing.assert_array_equal(got, expected)
    return True


@pytest.fixture(scope="module")
def newline_merging_parts():
    """A tiny BPE that learned merges of newlines and spaces (as real tokenizers have), extended by
    hand with the speech markers and 1,024 speech tokens: answers that start with blank lines merge
    with the template's `assistant\\n`."""
    from tokenizers import AddedToken

    from sts.testing.lm import TRAINING_TEXT, build_tiny_tokenizer
    from sts.vocab import SpeechVocab

    texts = [f"{a}\n\n  {b}\n \n{a}" for a, b in zip(TRAINING_TEXT, TRAINING_TEXT[1:], strict=False)]
    tokenizer = build_tiny_tokenizer(texts=texts)
    base = len(tokenizer)
    speech = [f"<|s_{k}|>" for k in range(1024)]
    tokenizer.add_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t in ["<|speech_start|>", "<|speech_end|>", *speech]
        ],
        special_tokens=True,
    )
    vocab = SpeechVocab(
        speech_token_offset=base + 2, num_speech_tokens=1024, speech_start_id=base, speech_end_id=base + 1,
        text_vocab_size=base, vocab_size=-(-(base + 1026) // 128) * 128,
    )  # fmt: skip
    return tokenizer, vocab


@pytest.mark.parametrize("which", ["extended", "newline_merging"])
@pytest.mark.parametrize(("task", "src", "tgt"), CASES)
def test_spliced_samples_equal_fully_rendered_ones(
    request, extended_tokenizer, speech_vocab, which, task, src, tgt
):
    """The cached-template path gives exactly the ids and labels of rendering + tokenizing each sample,
    or the same error (a text holding special tokens, an answer that merges into the prompt)."""
    if which == "extended":
        tokenizer, vocab = extended_tokenizer, speech_vocab
    else:
        tokenizer, vocab = request.getfixturevalue("newline_merging_parts")
    fast = TaskFormatter(tokenizer, vocab)
    slow = TaskFormatter(tokenizer, vocab, cache_templates=False)
    rng = np.random.default_rng(1)
    built = 0
    for i, text in enumerate([*VARIED_TEXTS, "a<|im_end|>b"]):
        other = VARIED_TEXTS[(i * 7 + 3) % len(VARIED_TEXTS)]
        example = Example(task, src, tgt, src_text=text, tgt_text=other,
                          src_codes=rng.integers(0, 1024, int(rng.integers(1, 40))),
                          tgt_codes=rng.integers(0, 1024, int(rng.integers(1, 40))).astype(np.int32))  # fmt: skip
        for loss in ("assistant", "full"):
            built += _same_outcome(fast.build, slow.build, example, loss=loss)
        _same_outcome(fast.prompt, slow.prompt, example)
    assert built >= 2 * len(VARIED_TEXTS) - 6
    # the fast path was really taken: every layout compiled and agreed on its first use
    assert fast._layouts and all(layout is not None for layout in fast._layouts.values())
    assert fast._agrees and all(fast._agrees.values())
    if which == "extended" or TASKS[task].output == "speech":
        assert fast.rendered_in_full == 0
    else:  # answers that merge into `assistant\n` are rendered in full (and refused like the slow path)
        assert 0 < fast.rendered_in_full <= 3 * 4


def test_a_template_that_trims_falls_back_to_rendering(extended_tokenizer, speech_vocab):
    import copy

    tokenizer = copy.deepcopy(extended_tokenizer)
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "message['content']", "message['content'] | trim"
    )
    fast = TaskFormatter(tokenizer, speech_vocab)
    slow = TaskFormatter(tokenizer, speech_vocab, cache_templates=False)
    example = Example("t2tt", "en", "ja", src_text="  hello ", tgt_text=" こんにちは\n")
    _same_outcome(fast.build, slow.build, example)
    assert fast._layouts[("t2tt", "en", "ja", True, False)] is None and fast.rendered_in_full == 1
    assert "hello<|im_end|>" in tokenizer.decode(fast.build(example)["input_ids"])


@pytest.mark.parametrize("which", ["extended", "newline_merging"])
@pytest.mark.parametrize("s2st_format", ["text-first", "translation-first"])
@pytest.mark.parametrize(("src", "tgt"), [("ja", "en"), ("en", "ja")])
def test_chain_formats_splice_like_full_rendering(
    request, extended_tokenizer, speech_vocab, which, s2st_format, src, tgt
):
    if which == "extended":
        tokenizer, vocab = extended_tokenizer, speech_vocab
    else:
        tokenizer, vocab = request.getfixturevalue("newline_merging_parts")
    fast = TaskFormatter(tokenizer, vocab, s2st_format=s2st_format)
    slow = TaskFormatter(tokenizer, vocab, s2st_format=s2st_format, cache_templates=False)
    rng = np.random.default_rng(2)
    built = 0
    for i, text in enumerate([*VARIED_TEXTS, "a<|im_end|>b"]):
        other = VARIED_TEXTS[(i * 5 + 2) % len(VARIED_TEXTS)]
        example = Example("s2st", src, tgt, src_text=text, tgt_text=other,
                          src_codes=rng.integers(0, 1024, int(rng.integers(1, 40))),
                          tgt_codes=rng.integers(0, 1024, int(rng.integers(1, 40))))  # fmt: skip
        for loss in ("assistant", "full"):
            built += _same_outcome(fast.build, slow.build, example, loss=loss)
        _same_outcome(fast.prompt, slow.prompt, example)
    assert built >= len(VARIED_TEXTS)  # blank texts and special tokens are refused by both paths
    assert all(fast._agrees.values()) and fast.rendered_in_full == 0


@pytest.mark.parametrize("s2st_format", ["text-first", "translation-first"])
def test_chain_format_round_trip(extended_tokenizer, speech_vocab, s2st_format):
    """The answer is transcript (text-first), translation, then the speech; parse reads all three back."""
    fmt = TaskFormatter(extended_tokenizer, speech_vocab, s2st_format=s2st_format)
    src_codes, tgt_codes = np.arange(5, 17), np.arange(100, 130, dtype=np.int32)
    example = Example("s2st", "ja", "en", src_text="駅は\nどこですか？", tgt_text="Where is the station?",
                      src_codes=src_codes, tgt_codes=tgt_codes)  # fmt: skip
    sample = fmt.build(example)
    prompt = fmt.prompt(Example("s2st", "ja", "en", src_codes=src_codes))
    assert prompt[-1] != speech_vocab.speech_start_id  # the answer starts with text, not speech
    np.testing.assert_array_equal(sample["input_ids"][: len(prompt)], prompt)
    answer = sample["input_ids"][len(prompt) :]
    assert (sample["labels"][len(prompt) :][:-1] == answer[:-1]).all()  # every answer token is learned
    out = fmt.parse(answer, "s2st")
    assert out.finished and out.stray_ids == 0
    np.testing.assert_array_equal(out.codes, tgt_codes)
    assert out.translation == "Where is the station?"
    assert out.transcript == ("駅は どこですか？" if s2st_format == "text-first" else None)
    speech_start = int(np.flatnonzero(answer == speech_vocab.speech_start_id)[0])
    assert not speech_vocab.is_speech_id(answer[:speech_start]).any()  # text, then speech
    # an answer that never opens its speech is unfinished and has no codes
    cut = fmt.parse(answer[:speech_start], "s2st")
    assert not cut.finished and len(cut.codes) == 0 and cut.translation == "Where is the station?"


def test_task_formats_file_round_trip(tmp_path):
    from sts.tasks import load_task_formats, save_task_formats

    assert load_task_formats(tmp_path) == {"s2st": "direct"}  # an older checkpoint: direct
    save_task_formats(tmp_path, "text-first")
    assert load_task_formats(tmp_path) == {"s2st": "text-first"}
    (tmp_path / "sts_tasks.json").write_text('{"s2st": "speech-last"}')
    with pytest.raises(ValueError, match="sts_tasks.json"):
        load_task_formats(tmp_path)
    with pytest.raises(ValueError, match="s2st format"):
        save_task_formats(tmp_path, "nonsense")
