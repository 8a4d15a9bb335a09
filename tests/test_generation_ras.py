"""Repetition-aware sampling (`sts.generation.ras`, `vllm_ras`): the rule draw by draw, batches, seeds,
the transformers backend, the vLLM request and the vLLM processor against stand-ins of vLLM's bases."""

from __future__ import annotations

import importlib
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sts.generation import (
    RAS_SAMPLING,
    GenerationRequest,
    RepetitionAwareProcessor,
    RepetitionAwareRequest,
    Sampling,
    TransformersBackend,
    allowed_token_ids,
    ras_choose,
    vllm_sampling_kwargs,
)
from sts.generation.ras import RowDraws, ras_request_args
from sts.generation.request import RAS_ARGS_KEY

VOCAB = 40


def expected_draw(scores: np.ndarray, history: list[int], u: np.ndarray, s: Sampling) -> tuple[int, bool]:
    """The RAS rule written out in numpy: nucleus draw with u[0]; redraw with u[1] from the full
    distribution when the first draw fills ceil(window * tau) of the last `window` tokens."""
    logits = scores.astype(np.float64) / s.temperature
    p = np.exp(logits - logits[np.isfinite(logits)].max())
    p[~np.isfinite(logits)] = 0.0
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    q = p[order]
    before = np.cumsum(q) - q
    keep = (before < s.top_p) & (np.arange(len(q)) < (s.top_k if s.top_k > 0 else len(q)))
    keep[0] = True

    def draw(weights, x):
        c = np.cumsum(weights)
        return int(order[min(np.searchsorted(c, x * c[-1], side="right"), np.count_nonzero(weights) - 1)])

    first = draw(q * keep, u[0])
    repeats = history[-s.ras_window :].count(first)
    if repeats >= int(np.ceil(s.ras_window * s.ras_tau - 1e-9)):
        return draw(q, u[1]), True
    return first, False


def test_the_drawn_token_changes_exactly_when_the_rule_says():
    """On fixed scores, many seeds and histories: the token is the nucleus draw unless that draw is
    in the recent window, then exactly the full-distribution redraw with the same generator."""
    rng = np.random.default_rng(0)
    scores = rng.normal(0.0, 1.5, VOCAB)
    scores[[3, 11, 12, 30]] = -np.inf  # the constraint: never drawn, even on a redraw
    sampling = RAS_SAMPLING
    fired = kept = changed = 0
    for seed in range(300):
        history = rng.choice(np.flatnonzero(np.isfinite(scores)), int(rng.integers(0, 14))).tolist()
        u = torch.rand(2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
        want, fires = expected_draw(scores, history, u, sampling)
        draws = RowDraws(seed)
        chosen, redrawn = ras_choose(
            torch.from_numpy(scores)[None].float(),
            torch.tensor([history if history else []], dtype=torch.long).reshape(1, len(history)),
            draws.uniforms()[None],
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            window=sampling.ras_window,
            tau=sampling.ras_tau,
        )
        assert (int(chosen[0]), bool(redrawn[0])) == (want, fires), seed
        assert np.isfinite(scores[want])
        fired += fires
        kept += not fires
        changed += fires and want != expected_draw(scores, [], u, sampling)[0]
    assert fired > 20 and kept > 20 and changed > 10  # both branches ran, and redraws change tokens


def draws(scores: torch.Tensor, seeds, **settings) -> set[int]:
    """The ids RAS picks for one row without history, one per seed."""
    no_history = torch.zeros(1, 0, dtype=torch.long)
    return {
        int(ras_choose(scores, no_history, RowDraws(s).uniforms()[None], **settings)[0][0]) for s in seeds
    }


def test_nucleus_keeps_top_k_and_top_p():
    """With no history RAS is nucleus sampling: it draws inside the top-k / top-p set only."""
    scores = torch.full((1, VOCAB), -5.0)
    scores[0, 7], scores[0, 8], scores[0, 9] = 5.0, 4.0, 3.0  # ~66 %, 24 %, 9 % of the mass
    ras = dict(temperature=1.0, window=10, tau=0.1)
    # 66 % lies before id 8 (below 0.8: kept), 90 % before id 9 (dropped).
    assert draws(scores, range(200), top_k=25, top_p=0.8, **ras) == {7, 8}
    assert draws(scores, range(50), top_k=1, top_p=1.0, **ras) == {7}
    assert draws(scores, range(300), top_k=0, top_p=1.0, **ras) >= {7, 8, 9}


def test_processor_rows_are_independent_and_seeded_runs_reproduce():
    rng = np.random.default_rng(1)
    prompt_len, steps = 3, 12
    scores = [torch.from_numpy(rng.normal(0, 1, (3, VOCAB))).float() for _ in range(steps)]

    def run(seeds, rows):
        proc = RepetitionAwareProcessor(RAS_SAMPLING, prompt_len=prompt_len, seeds=seeds)
        ids = torch.zeros(len(rows), prompt_len, dtype=torch.long)
        for step in range(steps):
            out = proc(ids, scores[step][rows].clone())
            assert (torch.isfinite(out).sum(1) == 1).all()
            ids = torch.cat([ids, out.argmax(1, keepdim=True)], 1)
        return ids[:, prompt_len:], proc.redraws

    batch, redraws = run([5, 6, 7], [0, 1, 2])
    alone, _ = run([6], [1])
    assert torch.equal(batch[1], alone[0])  # a row's tokens do not depend on the other rows
    again, _ = run([5, 6, 7], [0, 1, 2])
    assert torch.equal(batch, again)
    assert not torch.equal(run([8, 9, 10], [0, 1, 2])[0], batch)
    # Each redraw is the rule firing: the nucleus draw was among the row's last 10 tokens.
    assert redraws.sum() > 0


def test_request_level_function_is_the_processor_on_one_row():
    """vLLM's per-request function and the transformers processor pick the same ids for one row."""
    rng = np.random.default_rng(2)
    args = ras_request_args(RAS_SAMPLING, seed=11)
    request = RepetitionAwareRequest(args)
    proc = RepetitionAwareProcessor(RAS_SAMPLING, prompt_len=0, seeds=[11])
    output: list[int] = []
    ids = torch.zeros(1, 0, dtype=torch.long)
    for _ in range(15):
        row = torch.from_numpy(rng.normal(0, 1, VOCAB)).float()
        masked = request(output, row.clone())
        assert torch.isfinite(masked).sum() == 1
        picked = int(proc(ids, row[None].clone()).argmax())
        assert int(masked.argmax()) == picked
        output.append(picked)
        ids = torch.cat([ids, torch.tensor([[picked]])], 1)
    with pytest.raises(ValueError, match=RAS_ARGS_KEY):
        RepetitionAwareRequest({"temperature": 1.0})
    with pytest.raises(ValueError, match="sts_repetition_aware"):
        RepetitionAwareRequest(dict(args, top_p=0.0))


def test_sampling_turns_generate_greedy_under_ras():
    assert RAS_SAMPLING.generate_kwargs() == {"do_sample": False, "repetition_penalty": 1.0}
    assert Sampling(do_sample=False, repetition_aware=True).ras_active is False
    with pytest.raises(ValueError, match="min_p"):
        Sampling(repetition_aware=True, min_p=0.1)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=0.0)


def test_vllm_request_carries_ras_settings_per_row():
    allowed = np.array([10, 11, 12, 99])
    kwargs = vllm_sampling_kwargs(GenerationRequest(allowed, [99], [5, 8], sampling=RAS_SAMPLING, seed=3))
    for row, k in enumerate(kwargs):
        assert (k["temperature"], k["top_p"], k["top_k"], k["min_p"]) == (0.0, 1.0, -1, 0.0)
        args = k["extra_args"][RAS_ARGS_KEY]
        assert args == {
            "temperature": 1.0,
            "top_k": 25,
            "top_p": 0.8,
            "window": 10,
            "tau": 0.1,
            "seed": 3 + row,
        }
        RepetitionAwareRequest(args)  # what the engine's processor builds from it
    plain = vllm_sampling_kwargs(GenerationRequest(allowed, [99], [5], sampling=Sampling(top_p=0.9)))[0]
    assert "extra_args" not in plain and plain["temperature"] == 0.8


@pytest.fixture(scope="module")
def random_model(extended_lm_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(extended_lm_dir).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.05)
    return model


def test_backend_samples_repetition_aware_inside_the_constraint(random_model, speech_vocab):
    """Three favoured ids (+4 logits) fill ~88 % of a top-25/top-0.8 nucleus: plain nucleus sampling
    keeps drawing them, RAS redraws each repeat from the whole distribution (~14 % theirs)."""
    from transformers import LogitsProcessor

    allowed = allowed_token_ids(speech_vocab, None, "speech")
    favoured = torch.tensor(speech_vocab.speech_token_offset + np.array([3, 4, 5]))

    class Favour(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, favoured] += 4.0
            return scores

    prompts = [np.arange(20, 32), np.arange(40, 52)]

    def run(sampling, seed=0, fast=False):
        request = GenerationRequest(
            allowed,
            [speech_vocab.speech_end_id],
            [40, 40],
            sampling=sampling,
            min_new_tokens=40,
            extra_logits_processors=[Favour()],
            seed=seed,
        )
        return TransformersBackend(random_model, pad_token_id=0, fast=fast).generate(prompts, request)

    out = run(RAS_SAMPLING)
    assert [len(o) for o in out] == [40, 40] and all(np.isin(o, allowed).all() for o in out)
    assert [o.tolist() for o in run(RAS_SAMPLING, fast=True)] == [o.tolist() for o in out]  # either path
    assert [o.tolist() for o in run(RAS_SAMPLING, seed=1)] != [o.tolist() for o in out]
    plain = run(Sampling(temperature=1.0, top_p=0.8, top_k=25))
    share = [np.isin(np.concatenate(o), favoured.numpy()).mean() for o in (plain, out)]
    assert share[0] > 0.7 and share[1] < 0.45, share


# --- the vLLM processor, against stand-ins of vLLM's two base classes ---------------------------------


class FakeAdapter:
    """vLLM's V1 `AdapterLogitsProcessor` as documented: per-request functions keyed by batch row."""

    def __init__(self, vllm_config, device, is_pin_memory):
        self.req_info = {}

    def update_state(self, added):
        for index, params, output_ids in added:
            fn = self.new_req_logits_processor(params)
            if fn is not None:
                self.req_info[index] = (fn, output_ids)

    def apply(self, logits):
        for index, (fn, output_ids) in self.req_info.items():
            logits[index] = fn(output_ids, logits[index])
        return logits


class FakeRunnerV2Processor:
    def __init__(self, vllm_config, req_states):
        pass


def load_vllm_ras(monkeypatch, *, with_runner_v2: bool = True):
    """Import `sts.generation.vllm_ras` against stand-in vLLM modules (V2 base present or not)."""
    names = [
        "vllm",
        "vllm.v1",
        "vllm.v1.sample",
        "vllm.v1.worker",
        "vllm.v1.worker.gpu",
        "vllm.v1.worker.gpu.sample",
    ]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    v1 = types.ModuleType("vllm.v1.sample.logits_processor")
    v1.AdapterLogitsProcessor = FakeAdapter
    monkeypatch.setitem(sys.modules, v1.__name__, v1)
    if with_runner_v2:
        v2 = types.ModuleType("vllm.v1.worker.gpu.sample.logits_processor")
        v2.LogitsProcessor = FakeRunnerV2Processor
        monkeypatch.setitem(sys.modules, v2.__name__, v2)
    monkeypatch.delitem(sys.modules, "sts.generation.vllm_ras", raising=False)
    return importlib.import_module("sts.generation.vllm_ras")


@pytest.fixture()
def vllm_ras(monkeypatch):
    yield load_vllm_ras(monkeypatch)
    sys.modules.pop("sts.generation.vllm_ras", None)


def test_vllm_processor_loads_without_runner_v2(monkeypatch):
    """An older vLLM (or one whose GPU runner cannot import) gets the V1 adapter class alone."""
    module = load_vllm_ras(monkeypatch, with_runner_v2=False)
    try:
        assert module.RepetitionAwareLogitsProcessor.__bases__ == (FakeAdapter,)
    finally:
        sys.modules.pop("sts.generation.vllm_ras", None)


def _params(seed):
    return SimpleNamespace(extra_args={RAS_ARGS_KEY: ras_request_args(RAS_SAMPLING, seed)})


def test_vllm_processor_v1_path_is_the_request_function(vllm_ras):
    cls = vllm_ras.RepetitionAwareLogitsProcessor
    assert issubclass(cls, FakeAdapter) and issubclass(cls, FakeRunnerV2Processor)
    proc = cls(None, torch.device("cpu"), False)
    outputs = [[5, 6, 5], [1, 2]]
    proc.update_state([(0, _params(4), outputs[0]), (2, SimpleNamespace(extra_args=None), [])])
    logits = torch.randn(3, VOCAB)
    out = proc.apply(logits.clone())
    reference = RepetitionAwareRequest(ras_request_args(RAS_SAMPLING, 4))
    assert int(out[0].argmax()) == int(reference(outputs[0], logits[0]).argmax())
    assert torch.isfinite(out[0]).sum() == 1 and torch.equal(out[1:], logits[1:])  # other rows untouched
    with pytest.raises(ValueError):
        cls.validate_params(SimpleNamespace(extra_args={RAS_ARGS_KEY: {"top_p": 0.5}}))


def test_vllm_processor_v2_path_reads_the_history_on_the_device(vllm_ras):
    """Model Runner V2: rows map to request slots; each slot's output is read from the token buffer."""
    max_len = 32
    all_ids = torch.zeros(4, max_len, dtype=torch.int32)
    prompt_len, total_len = torch.tensor([3, 2, 5, 4]), torch.tensor([9, 2, 8, 6])
    rng = np.random.default_rng(3)
    for slot in range(4):
        all_ids[slot, : total_len[slot]] = torch.from_numpy(rng.integers(0, VOCAB, int(total_len[slot])))
    states = SimpleNamespace(
        all_token_ids=SimpleNamespace(gpu=all_ids),
        prompt_len=SimpleNamespace(gpu=prompt_len),
        total_len=SimpleNamespace(gpu=total_len),
    )
    proc = vllm_ras.RepetitionAwareLogitsProcessor(None, states)
    assert proc.add_request(0, _params(1)) and proc.add_request(2, _params(2))
    assert not proc.add_request(1, SimpleNamespace(extra_args={}))
    history = vllm_ras.recent_output(states, torch.tensor([0, 2, 1]), 4)
    assert history.tolist() == [all_ids[0, 5:9].tolist(), [-1] + all_ids[2, 5:8].tolist(), [-1] * 4]
    logits = torch.randn(3, VOCAB)  # batch rows -> slots 2, 1, 0
    ctx = SimpleNamespace(idx_mapping_np=np.array([2, 1, 0]))
    out = proc.apply(logits.clone(), ctx)
    for row, slot, seed in ((0, 2, 2), (2, 0, 1)):
        output = all_ids[slot, prompt_len[slot] : total_len[slot]].tolist()
        want = RepetitionAwareRequest(ras_request_args(RAS_SAMPLING, seed))(output, logits[row])
        assert int(out[row].argmax()) == int(want.argmax()) and torch.isfinite(out[row]).sum() == 1
    assert torch.equal(out[1], logits[1])
