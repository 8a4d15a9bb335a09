"""The base generation layer (`sts.generation`): allowed-id sets, the logits mask, per-row budgets, loops,
the transformers backend and the vLLM request building (pure Python, no vLLM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sts.generation import (
    SPEECH_GUARD,
    TEXT_GUARD,
    AllowedTokensProcessor,
    GenerationRequest,
    LoopGuard,
    LoopStoppingCriteria,
    Sampling,
    TransformersBackend,
    allowed_token_ids,
    completion_ids,
    find_loop,
    split_end,
    tail_is_loop,
    vllm_sampling_kwargs,
)


def test_allowed_ids_split_the_vocabulary(speech_vocab, extended_tokenizer):
    speech = allowed_token_ids(speech_vocab, extended_tokenizer, "speech")
    text = allowed_token_ids(speech_vocab, extended_tokenizer, "text")
    assert len(speech) == speech_vocab.num_speech_tokens + 1
    assert speech_vocab.speech_end_id in speech and speech_vocab.speech_start_id not in speech
    assert speech_vocab.is_speech_id(speech[speech != speech_vocab.speech_end_id]).all()
    assert (text < speech_vocab.text_vocab_size).all()
    assert extended_tokenizer.eos_token_id in text
    for special in ("<|pad|>", "<|startoftext|>", "<|im_start|>"):
        assert extended_tokenizer.convert_tokens_to_ids(special) not in text
    assert not set(speech) & set(text)
    with pytest.raises(ValueError):
        allowed_token_ids(speech_vocab, extended_tokenizer, "video")


def test_processor_masks_everything_else_and_holds_the_end_back():
    allowed = np.array([3, 5, 7])
    proc = AllowedTokensProcessor(allowed, end_ids=[7], prompt_len=4, min_new_tokens=2)
    scores = torch.zeros(2, 10)
    first = proc(torch.zeros(2, 4, dtype=torch.long), scores.clone())  # nothing generated yet
    assert torch.isfinite(first).nonzero()[:, 1].unique().tolist() == [3, 5]
    later = proc(torch.zeros(2, 6, dtype=torch.long), scores.clone())  # two tokens generated
    assert torch.isfinite(later).nonzero()[:, 1].unique().tolist() == [3, 5, 7]


def test_vllm_kwargs_carry_the_same_constraint():
    allowed = np.array([10, 11, 12, 99])
    request = GenerationRequest(
        allowed, end_ids=[99], max_new_tokens=[5, 8], sampling=Sampling(do_sample=False), seed=3
    )
    kwargs = vllm_sampling_kwargs(request)
    assert [k["max_tokens"] for k in kwargs] == [5, 8]
    assert [k["seed"] for k in kwargs] == [3, 4]  # one seed per row: equal prompts still sample apart
    for k in kwargs:
        assert k["allowed_token_ids"] == [10, 11, 12, 99] and k["stop_token_ids"] == [99]
        assert k["temperature"] == 0.0 and k["min_tokens"] == 1 and k["repetition_penalty"] == 1.0
    sampled = vllm_sampling_kwargs(
        GenerationRequest(allowed, [99], [4], sampling=Sampling(temperature=0.5, min_p=0.1, top_k=0))
    )[0]
    assert sampled["temperature"] == 0.5 and sampled["min_p"] == 0.1 and sampled["top_k"] == -1


def test_find_loop_cuts_at_the_first_repeated_unit():
    guard = LoopGuard(max_ngram=4, min_repeats=3, min_span=6)
    unit = [7, 8, 9]
    ids = np.array([1, 2, 3, 4] + unit * 3 + [5, 6])
    assert find_loop(ids, guard) == (4, 3)
    start, n = find_loop(ids, guard)
    assert ids[: start + n].tolist() == [1, 2, 3, 4, 7, 8, 9]
    assert find_loop(np.array([1, 2] + unit * 2 + [5]), guard) is None  # two copies: not yet a loop
    # A 1-token unit must span min_span tokens, not just min_repeats.
    assert find_loop(np.array([4, 4, 4, 4, 4]), guard) is None
    assert find_loop(np.array([1] + [4] * 6), guard) == (1, 1)
    assert tail_is_loop(np.array([1] + [4] * 6), guard) and not tail_is_loop(np.array([4] * 6 + [1]), guard)
    # A batch is checked in one pass, row by row the same.
    batch = np.array([[1, 2, 3] + [4] * 6, [4] * 6 + [1, 2, 3], [7, 8, 9] * 3, [0, 7, 8, 9, 7, 8, 9, 7, 8]])
    assert tail_is_loop(batch, guard).tolist() == [tail_is_loop(row, guard) for row in batch]
    assert tail_is_loop(batch, guard).tolist() == [True, False, True, False]


def test_shipped_guards_ignore_normal_variation():
    rng = np.random.default_rng(0)
    assert find_loop(rng.integers(0, 65536, 1000), SPEECH_GUARD) is None
    assert find_loop(rng.integers(0, 300, 300), TEXT_GUARD) is None
    # Speech: a 0.1 s pattern must cover 2 s (20 copies) before it counts.
    assert find_loop(np.tile(np.arange(5), 19), SPEECH_GUARD) is None
    assert find_loop(np.tile(np.arange(5), 20), SPEECH_GUARD) == (0, 5)


def test_stopping_criteria_stops_only_the_looping_row():
    guard = LoopGuard(max_ngram=2, min_repeats=4, min_span=4)
    prompt = torch.zeros(2, 3, dtype=torch.long)
    generated = torch.tensor([[5, 6, 5, 6, 5, 6, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8]])
    stop = LoopStoppingCriteria(guard, prompt_len=3, check_every=8)
    assert stop(torch.cat([prompt, generated], 1), torch.zeros(2, 10)).tolist() == [True, False]


@pytest.fixture(scope="module")
def random_model(extended_lm_dir):
    """The tiny extended LM with small random embedding rows (tied): unconstrained, it emits any id."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(extended_lm_dir).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.05)  # near-flat logits
    return model


@pytest.mark.parametrize("output", ["speech", "text"])
def test_backend_output_stays_in_its_modality(random_model, speech_vocab, extended_tokenizer, output):
    """Sampling at temperature 1.5 from a random model: the constraint alone keeps ids in bounds."""
    backend = TransformersBackend(random_model, pad_token_id=0)
    allowed = allowed_token_ids(speech_vocab, extended_tokenizer, output)
    end = speech_vocab.speech_end_id if output == "speech" else extended_tokenizer.eos_token_id
    prompts = [np.arange(20, 32), np.arange(40, 60)]
    hot = Sampling(temperature=1.5, top_p=1.0)
    everything = np.arange(speech_vocab.vocab_size)
    free = backend.generate(prompts, GenerationRequest(everything, [end], [60, 60], sampling=hot, seed=0))
    assert not np.isin(np.concatenate(free), allowed).all()  # the test can fail: unconstrained it strays
    out = backend.generate(prompts, GenerationRequest(allowed, [end], [60, 40], sampling=hot, seed=0))
    assert [len(o) <= b for o, b in zip(out, [60, 40], strict=True)] == [True, True]
    for ids in out:
        assert len(ids) and np.isin(ids, allowed).all()
        assert end not in ids[:-1]  # generation stops at the end id
    if output == "speech":
        assert speech_vocab.is_speech_id(np.concatenate(out)[np.concatenate(out) != end]).all()
    else:
        assert (np.concatenate(out) < speech_vocab.text_vocab_size).all()


def test_fast_path_matches_eager_greedy(random_model, speech_vocab, extended_tokenizer):
    """The static-cache path gives the same greedy tokens as the dynamic cache."""
    allowed = allowed_token_ids(speech_vocab, extended_tokenizer, "speech")
    request = GenerationRequest(
        allowed, [speech_vocab.speech_end_id], [24, 24], sampling=Sampling(do_sample=False)
    )
    prompts = [np.arange(20, 32), np.arange(40, 50)]
    eager = TransformersBackend(random_model, pad_token_id=0).generate(prompts, request)
    fast = TransformersBackend(random_model, pad_token_id=0, fast=True).generate(prompts, request)
    assert [e.tolist() for e in eager] == [f.tolist() for f in fast]


def test_vllm_completion_read_like_transformers():
    """vLLM may or may not list the stop id it stopped on; the backend returns it last either way."""
    from types import SimpleNamespace

    stopped = SimpleNamespace(token_ids=[5, 6], finish_reason="stop", stop_reason=99)
    assert completion_ids(stopped, [99]).tolist() == [5, 6, 99]
    listed = SimpleNamespace(token_ids=[5, 6, 99], finish_reason="stop", stop_reason=99)
    assert completion_ids(listed, [99]).tolist() == [5, 6, 99]
    eos = SimpleNamespace(token_ids=[5, 6], finish_reason="stop", stop_reason=None)  # the model's own eos
    assert completion_ids(eos, [98, 99]).tolist() == [5, 6, 98]
    cut = SimpleNamespace(token_ids=[5, 6, 7], finish_reason="length", stop_reason=None)
    assert completion_ids(cut, [99]).tolist() == [5, 6, 7]
    assert [split_end(completion_ids(c, [99]), [99])[1] for c in (stopped, listed, cut)] == [
        True,
        True,
        False,
    ]


def test_processor_masks_exactly_the_allowed_ids():
    rng = np.random.default_rng(0)
    vocab = 50
    allowed = np.sort(rng.choice(vocab, 12, replace=False))
    end = int(allowed[3])
    scores = torch.from_numpy(rng.standard_normal((3, vocab)).astype(np.float32))
    proc = AllowedTokensProcessor(allowed, end_ids=[end], prompt_len=5, min_new_tokens=1)
    late = proc(torch.zeros(3, 7, dtype=torch.long), scores.clone())
    finite = torch.isfinite(late)
    assert (finite == torch.isin(torch.arange(vocab), torch.from_numpy(allowed))[None]).all()
    assert torch.equal(late[finite], scores[finite])  # allowed scores pass through unchanged
    early = proc(torch.zeros(3, 5, dtype=torch.long), scores.clone())
    assert torch.isfinite(early).sum(1).tolist() == [11, 11, 11] and torch.isinf(early[:, end]).all()
    # Unconstrained (MT): nothing masked but the end ids while min_new_tokens holds them back.
    free = AllowedTokensProcessor(None, end_ids=[end, 7], prompt_len=5, min_new_tokens=2)
    held = free(torch.zeros(3, 6, dtype=torch.long), scores.clone())
    assert torch.isinf(held).any(0).nonzero().ravel().tolist() == sorted([end, 7])
    assert torch.equal(free(torch.zeros(3, 7, dtype=torch.long), scores.clone()), scores)


def test_request_refuses_what_could_never_end():
    with pytest.raises(ValueError, match="not among the allowed"):
        GenerationRequest(np.array([1, 2, 3]), [9], [4])
    with pytest.raises(ValueError, match="at least 1 token"):
        GenerationRequest(np.array([1, 9]), [9], [4, 0])
    with pytest.raises(ValueError, match="end id"):
        GenerationRequest(None, [], [4])
    assert GenerationRequest(None, [9], [4], seed=None).row_seed(3) is None


@pytest.mark.parametrize("fast", [False, True])
def test_each_row_stops_at_its_own_budget(random_model, speech_vocab, fast):
    """Mixed budgets in one batch: every row gets exactly its own, and `generate` stops at the largest
    (not at the fast path's rounded-up 256) because the rows stop themselves."""
    allowed = allowed_token_ids(speech_vocab, None, "speech")
    budgets = [5, 17, 9]
    request = GenerationRequest(
        allowed,
        [speech_vocab.speech_end_id],
        budgets,
        sampling=Sampling(temperature=1.5),
        min_new_tokens=17,  # no row may end early: each must run into its budget
        seed=0,
    )
    steps = []
    hook = random_model.register_forward_hook(lambda *args: steps.append(1))
    try:
        out = TransformersBackend(random_model, pad_token_id=0, fast=fast).generate(
            [np.arange(20, 32), np.arange(40, 60), np.arange(5, 9)], request
        )
    finally:
        hook.remove()
    assert [len(o) for o in out] == budgets
    assert all(speech_vocab.is_speech_id(o).all() for o in out)  # no end id, no padding kept
    assert len(steps) == max(budgets)  # one prefill + 16 decoding steps, then every row had stopped


def test_loop_guard_stops_only_the_looping_row_early(random_model, speech_vocab):
    """Row 0 is forced into a 3-token cycle: the criterion stops it at the next check; row 1 runs on."""
    from transformers import LogitsProcessor

    cycle = speech_vocab.speech_token_offset + np.array([7, 8, 9])

    class ForceCycle(LogitsProcessor):
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - 64  # the fast path pads the 12-id prompts to 64
            scores[0] = float("-inf")
            scores[0, int(cycle[step % 3])] = 0.0
            return scores

    guard = LoopGuard(max_ngram=4, min_repeats=4, min_span=12)
    request = GenerationRequest(
        allowed_token_ids(speech_vocab, None, "speech"),
        [speech_vocab.speech_end_id],
        [60, 60],
        sampling=Sampling(temperature=1.5),  # row 1 samples freely (greedy, this random model drones)
        min_new_tokens=60,
        guard=guard,
        extra_logits_processors=[ForceCycle()],
        seed=0,
    )
    looped, free = TransformersBackend(random_model, pad_token_id=0, fast=True).generate(
        [np.arange(20, 32), np.arange(40, 52)], request
    )
    assert len(looped) == 16  # the first check (every 16 steps) after 12 looping tokens
    assert looped.tolist() == np.resize(cycle, 16).tolist() and find_loop(looped, guard) == (0, 3)
    assert len(free) == 60


def test_loop_criterion_records_where_it_stopped():
    guard = LoopGuard(max_ngram=2, min_repeats=4, min_span=4)
    stop = LoopStoppingCriteria(guard, prompt_len=2, check_every=4)
    rows = torch.tensor([[1, 1, 5, 6, 5, 6, 5, 6, 5, 6, 9, 9], [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]])
    for width in range(3, rows.shape[1] + 1):
        done = stop(rows[:, :width], None)
    assert done.tolist() == [True, False] and stop.stopped_at.tolist() == [8, 0]
