"""Classifier-free guidance (`sts.generation.guidance`): scale 1 is plain decoding, scale s follows the
CFG formula step by step on left-padded batches, vLLM and unbound requests are refused, the
unconditional prompt drops the source speech, and the gen eval decodes with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sts.generation import (
    GenerationRequest,
    GuidanceUnsupportedError,
    Sampling,
    TransformersBackend,
    allowed_token_ids,
    generate_guided,
    unconditional_prompt,
    vllm_sampling_kwargs,
)
from sts.tasks import Example, TaskFormatter


@pytest.fixture(scope="module")
def model(extended_lm_dir):
    """The tiny extended LM with random embedding rows and an untied random output layer (tied, each
    token would predict itself), so that the prompt and the guidance change the answer."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(extended_lm_dir).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        weight = lm.get_input_embeddings().weight.normal_(0.0, 0.5)
        lm.lm_head.weight = torch.nn.Parameter(torch.randn_like(weight) * 0.5)
    return lm


def _prompts(vocab):
    """Two s2st-like prompts of different lengths: text ids, a source speech segment, the speech start."""
    rng = np.random.default_rng(0)
    out = []
    for n_text, n_codes in ((5, 12), (9, 20)):
        codes = vocab.codes_to_ids(rng.integers(0, vocab.num_speech_tokens, n_codes))
        out.append(np.concatenate([rng.integers(20, 200, n_text), [vocab.speech_start_id], codes,
                                   [vocab.speech_end_id], [30, 31], [vocab.speech_start_id]]))  # fmt: skip
    return out


def _request(vocab, tokenizer, prompts, scale, sampling, budget=10):
    return GenerationRequest(
        allowed_token_ids(vocab, tokenizer, "speech"), [vocab.speech_end_id], [budget] * len(prompts),
        sampling=sampling, seed=7 if sampling.do_sample else None, guidance_scale=scale,
        unconditional_prompts=[unconditional_prompt(p, vocab) for p in prompts],
    )  # fmt: skip


@pytest.mark.parametrize("sampling", [Sampling(do_sample=False), Sampling(temperature=1.0, top_p=0.9)])
def test_scale_one_equals_plain_decoding(model, speech_vocab, extended_tokenizer, sampling):
    backend = TransformersBackend(model, pad_token_id=0)
    prompts = _prompts(speech_vocab)
    plain = backend.generate(prompts, _request(speech_vocab, extended_tokenizer, prompts, 1.0, sampling))
    guided = generate_guided(
        backend, prompts, _request(speech_vocab, extended_tokenizer, prompts, 1.0, sampling)
    )
    assert [g.tolist() for g in guided] == [p.tolist() for p in plain]
    # transformers' processor itself at scale 1 (log-softmax of the scores only) leaves greedy decoding alone
    from sts.generation.guidance import guidance_processor

    request = _request(speech_vocab, extended_tokenizer, prompts, 1.0, Sampling(do_sample=False))
    request.extra_logits_processors = [guidance_processor(model, request, pad_token_id=0)]
    greedy = backend.generate(
        prompts, _request(speech_vocab, extended_tokenizer, prompts, 1.0, Sampling(do_sample=False))
    )
    assert [g.tolist() for g in backend.generate(prompts, request)] == [g.tolist() for g in greedy]


def _guided_greedy(model, prompt, uncond, allowed, scale, steps):
    """The CFG formula by hand, one row, no padding: argmax of s * (log p_c - log p_u) + log p_u, where
    p_c is constrained to `allowed` (as the output constraint runs first) and p_u is not."""
    out = []
    mask = torch.full((model.config.vocab_size,), float("-inf"))
    mask[torch.as_tensor(allowed)] = 0.0
    with torch.no_grad():
        for _ in range(steps):
            cond = model(torch.as_tensor([[*prompt, *out]])).logits[0, -1] + mask
            free = model(torch.as_tensor([[*uncond, *out]])).logits[0, -1]
            lc, lu = torch.log_softmax(cond, -1), torch.log_softmax(free, -1)
            out.append(int((scale * (lc - lu) + lu).argmax()))
    return out


def test_scale_follows_the_cfg_formula_on_a_padded_batch(model, speech_vocab, extended_tokenizer):
    backend = TransformersBackend(model, pad_token_id=0)
    prompts = _prompts(speech_vocab)
    allowed = allowed_token_ids(speech_vocab, extended_tokenizer, "speech")
    request = _request(speech_vocab, extended_tokenizer, prompts, 3.0, Sampling(do_sample=False), budget=8)
    guided = generate_guided(backend, prompts, request)
    plain = backend.generate(
        prompts, _request(speech_vocab, extended_tokenizer, prompts, 1.0, Sampling(do_sample=False), budget=8)
    )
    for prompt, got in zip(prompts, guided, strict=True):
        want = _guided_greedy(
            model, prompt, unconditional_prompt(prompt, speech_vocab), allowed, 3.0, len(got)
        )
        assert got.tolist() == want
    assert [g.tolist() for g in guided] != [p.tolist() for p in plain]  # guidance changed the answer


def test_vllm_refuses_a_guided_request_and_transformers_binds_it(model, speech_vocab, extended_tokenizer):
    prompts = _prompts(speech_vocab)
    request = _request(speech_vocab, extended_tokenizer, prompts, 2.0, Sampling(do_sample=False))
    with pytest.raises(ValueError, match="vLLM has no classifier-free guidance"):
        vllm_sampling_kwargs(request)
    backend = TransformersBackend(model, pad_token_id=0)  # it binds the guidance itself
    for own, guided in zip(
        backend.generate(prompts, request), generate_guided(backend, prompts, request), strict=True
    ):
        np.testing.assert_array_equal(own, guided)

    class FakeVllm:
        name = "vllm"

    with pytest.raises(GuidanceUnsupportedError, match="transformers backend only"):
        generate_guided(FakeVllm(), prompts, request)
    with pytest.raises(ValueError, match="one non-empty unconditional prompt per row"):
        GenerationRequest(None, [1], [4, 4], guidance_scale=2.0, unconditional_prompts=[np.array([1])])
    assert vllm_sampling_kwargs(GenerationRequest(None, [1], [4], guidance_scale=1.0))  # scale 1: fine


def test_unconditional_prompt_drops_the_source_speech(speech_vocab, extended_tokenizer):
    fmt = TaskFormatter(extended_tokenizer, speech_vocab)
    codes = np.arange(15) % speech_vocab.num_speech_tokens
    s2st = fmt.prompt(Example("s2st", "ja", "en", src_codes=codes))
    uncond = unconditional_prompt(s2st, speech_vocab)
    assert len(uncond) == len(s2st) - len(codes)
    assert not speech_vocab.is_speech_id(uncond).any() and speech_vocab.is_speech_id(s2st).sum() == len(codes)
    start = int(np.flatnonzero(s2st == speech_vocab.speech_start_id)[0])
    assert uncond[: start + 1].tolist() == s2st[: start + 1].tolist()
    assert uncond[start + 1] == speech_vocab.speech_end_id  # the markers stay: "no source speech"
    assert uncond[-1] == speech_vocab.speech_start_id  # and the answer's prefilled speech start
    tts = fmt.prompt(Example("tts", "en", "en", src_text="Good morning."))
    assert unconditional_prompt(tts, speech_vocab).tolist() == [speech_vocab.speech_start_id]


def test_gen_eval_decodes_with_guidance(model, speech_vocab, extended_tokenizer, tmp_path):
    from sts.config import make_config
    from train.config import TrainConfig
    from train.dev_subset import DevItem
    from train.gen_eval import decode

    items = [DevItem("s2st:ja-en", "s2st", "speech", "en", p, 5, "x", 10) for p in _prompts(speech_vocab)]
    runs = {}
    for scale in (1.0, 2.0):
        cfg = make_config(
            TrainConfig,
            out_dir=tmp_path,
            sft__s2st_format="direct",
            eval__fast=False,
            eval__guidance_scale=scale,
        )
        runs[scale] = decode(
            model, items, tokenizer=extended_tokenizer, vocab=speech_vocab, pad_id=0, cfg=cfg
        )
    plain = TransformersBackend(model, pad_token_id=0).generate(
        [i.prompt for i in items], _request(speech_vocab, extended_tokenizer, [i.prompt for i in items], 1.0,
                                            Sampling(do_sample=False))
    )  # fmt: skip
    assert [d["ids"].tolist() for d in runs[1.0]] == [p.tolist() for p in plain]
    assert [d["ids"].tolist() for d in runs[2.0]] != [d["ids"].tolist() for d in runs[1.0]]
    with pytest.raises(ValueError, match="eval.guidance_scale must be > 0"):
        make_config(TrainConfig, eval__guidance_scale=0.0)


def test_sts_infer_guides_speech_output_and_scale_one_is_plain(tmp_path):
    """`sts-infer --guidance-scale`: 1 gives exactly the unguided output; 3 runs the guided path."""
    import dataclasses

    from infer.cli import main
    from sts.audio import write_audio
    from sts.testing import save_tiny_lfm2, save_tiny_xcodec2, synthetic_utterance
    from sts.vocab import SpeechVocab
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    codec = save_tiny_xcodec2(tmp_path / "codec")
    base = save_tiny_lfm2(tmp_path / "lm")
    ckpt = tmp_path / "ckpt"
    extend_tokenizer(ExtendConfig(str(base), ckpt, num_speech_tokens=1024, codec=str(codec)))
    dataclasses.replace(SpeechVocab.load(ckpt), codec=str(codec)).save(ckpt)
    write_audio(tmp_path / "in.wav", synthetic_utterance(0.6, 150.0, seed=1))
    common = [
        str(tmp_path / "in.wav"),
        "--from",
        "ja",
        "--model",
        str(ckpt),
        "--greedy",
        "--max-new-tokens",
        "12",
    ]
    outs = {}
    for scale in ("1", "3"):
        out = tmp_path / f"out-{scale}.wav"
        assert main([*common, "-o", str(out), "--guidance-scale", scale]) == 0
        outs[scale] = out.read_bytes()
    assert main([*common, "-o", str(tmp_path / "plain.wav")]) == 0
    assert outs["1"] == (tmp_path / "plain.wav").read_bytes()
