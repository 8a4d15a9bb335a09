"""Every vLLM user (sts-infer, the corpus MT, the corpus Llasa TTS) goes through `sts.generation.VllmBackend`
and builds its `SamplingParams` with the one `vllm_sampling_kwargs`: checked on CPU against a stand-in
`vllm` module that records what the engine is given and answers as vLLM does (stop id left out)."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import types

import pytest

from sts.generation import vllm_backend


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeLLM:
    """`vllm.LLM` stand-in: records its construction and every `generate`; answers three ids per row."""

    engines: list[FakeLLM] = []
    reply = None  # (prompt ids, SamplingParams kwargs) -> (token ids, finish_reason)

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        FakeLLM.engines.append(self)

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        self.calls.append(([p["prompt_token_ids"] for p in prompts], [sp.kwargs for sp in sampling_params]))
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            ids, finish = FakeLLM.reply(prompt["prompt_token_ids"], params.kwargs)
            stop = params.kwargs["stop_token_ids"][0] if finish == "stop" else None
            completion = types.SimpleNamespace(token_ids=ids, finish_reason=finish, stop_reason=stop)
            outputs.append(types.SimpleNamespace(outputs=[completion]))
        return outputs


def first_allowed(prompt, kwargs):
    """Three allowed ids that are not a stop id, then a stop (vLLM leaves the stop id out)."""
    stops = set(kwargs["stop_token_ids"])
    return [i for i in kwargs["allowed_token_ids"] if i not in stops][:3], "stop"


@pytest.fixture()
def fake_vllm(monkeypatch):
    """`import vllm` gives the stand-in; `vllm_sampling_kwargs` calls are recorded (request, kwargs)."""
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.engines, FakeLLM.reply = [], first_allowed
    built = []
    real = vllm_backend.vllm_sampling_kwargs

    def spy(request):
        built.append((request, real(request)))
        return built[-1][1]

    monkeypatch.setattr(vllm_backend, "vllm_sampling_kwargs", spy)
    return built


def _engine_got_what_was_built(built):
    """Each engine call's SamplingParams are exactly one `vllm_sampling_kwargs` result, in order."""
    calls = [params for engine in FakeLLM.engines for _, params in engine.calls]
    assert calls == [kwargs for _, kwargs in built] and calls


def request_example(translator, wav):
    from sts.tasks import Example

    [codes] = translator.codec.encode([wav])
    return Example("s2st", "ja", "en", src_codes=codes)


def test_sts_infer_goes_through_the_shared_vllm_backend(fake_vllm, extended_lm_dir, tmp_path):
    from infer import Request, Translator
    from sts.testing import save_tiny_xcodec2, synthetic_utterance
    from sts.vocab import SpeechVocab

    model_dir = tmp_path / "ckpt"
    shutil.copytree(extended_lm_dir, model_dir)
    vocab = SpeechVocab.load(model_dir)
    dataclasses.replace(vocab, codec=str(save_tiny_xcodec2(tmp_path / "codec"))).save(model_dir)
    translator = Translator.from_checkpoint(model_dir, backend="vllm")
    [engine] = FakeLLM.engines
    assert engine.model == str(model_dir) and "hf_overrides" in engine.kwargs  # LFM2 sizes supplied
    wav = synthetic_utterance(0.8, 150.0)
    [speech] = translator.run([Request("s2st", "ja", "en", wav=wav)])
    [(request, [kwargs])] = fake_vllm
    block = set(range(vocab.speech_token_offset, vocab.speech_token_stop))
    assert set(kwargs["allowed_token_ids"]) == block | {vocab.speech_end_id}
    assert kwargs["stop_token_ids"] == [vocab.speech_end_id] and kwargs["min_tokens"] == 1
    assert kwargs["max_tokens"] == 125 * 0.8 + 50
    # Speech output samples repetition-aware: the engine's RAS processor picks, vLLM decodes greedily.
    assert (kwargs["temperature"], kwargs["top_p"]) == (0.0, 1.0)
    assert kwargs["extra_args"]["sts_repetition_aware"]["top_p"] == 0.8
    assert engine.kwargs["logits_processors"] == ["sts.generation.vllm_ras:RepetitionAwareLogitsProcessor"]
    assert engine.calls[0][0] == [translator.formatter.prompt(request_example(translator, wav)).tolist()]
    assert [c.tolist() for c in speech.codes] == [[0, 1, 2]] and speech.finished
    assert len(speech.waveform) == 3 * 320
    [text] = translator.run([Request("asr", "ja", "ja", wav=wav)])
    assert fake_vllm[-1][1][0]["stop_token_ids"] == [translator.tokenizer.eos_token_id]
    assert max(fake_vllm[-1][1][0]["allowed_token_ids"]) < vocab.text_vocab_size and text.finished
    _engine_got_what_was_built(fake_vllm)


def test_corpus_mt_goes_through_the_shared_vllm_backend(fake_vllm, tiny_lm_dir):
    from sts.mt import MTResult, VllmMT

    mt = VllmMT(str(tiny_lm_dir), preset="LiquidAI/LFM2-350M-ENJP-MT", max_new_tokens=8, enforce_eager=True)
    hello = mt.tokenizer("Hello", add_special_tokens=False)["input_ids"]
    FakeLLM.reply = lambda prompt, kwargs: (
        hello,
        "stop" if kwargs["seed"] == 0 else "length",
    )  # row 1: budget
    texts = ["こんにちは", "おはようございます"]
    results = mt.translate(texts, "ja", "en")
    [engine] = FakeLLM.engines
    assert engine.kwargs["enforce_eager"] and engine.kwargs["seed"] == 0 and "hf_overrides" in engine.kwargs
    [(request, kwargs)] = fake_vllm
    assert request.allowed is None and [k["allowed_token_ids"] for k in kwargs] == [None, None]
    assert kwargs[0]["stop_token_ids"] == [mt.tokenizer.eos_token_id] and kwargs[0]["max_tokens"] == 8
    assert (kwargs[0]["temperature"], kwargs[0]["min_p"], kwargs[0]["repetition_penalty"]) == (0.5, 0.1, 1.05)
    prompts = engine.calls[0][0]
    assert prompts == mt.prompt_ids(texts, "en")
    assert results == [MTResult("Hello"), MTResult("Hello", truncated=True)]
    _engine_got_what_was_built(fake_vllm)


def test_corpus_llasa_goes_through_the_shared_vllm_backend(fake_vllm, tmp_path):
    from corpus_builder.interfaces import TTSRequest
    from corpus_builder.tts import load_tts
    from corpus_builder.tts.llasa import LlasaDecoding
    from corpus_builder.tts.testing import save_tiny_llasa
    from sts.codec.xcodec2 import XCodec2Codec
    from sts.testing.codec import save_tiny_xcodec2

    llasa_dir = save_tiny_llasa(tmp_path / "llasa", num_speech_tokens=1024)
    codec = XCodec2Codec(save_tiny_xcodec2(tmp_path / "codec"))
    tts = load_tts(
        f"llasa-vllm:{llasa_dir}", codec=codec, decoding=LlasaDecoding(seed=5), gpu_memory_utilization=0.5
    )
    [engine] = FakeLLM.engines
    assert engine.kwargs == {
        "dtype": "bfloat16",
        "seed": 0,
        "gpu_memory_utilization": 0.5,
        "logits_processors": ["sts.generation.vllm_ras:RepetitionAwareLogitsProcessor"],
    }  # Llama: no LFM2 fields; the RAS processor Llasa's default sampling needs
    requests = [TTSRequest("Good morning.", "en"), TTSRequest("  ", "en"), TTSRequest("おはよう。", "ja")]
    results = tts.synthesize(requests)
    [(request, kwargs)] = fake_vllm
    p = tts.prompter
    jobs, _ = tts.jobs(requests)
    assert engine.calls[0][0] == [job.prompt_ids for job in jobs]
    assert [k["max_tokens"] for k in kwargs] == [job.max_new_tokens for job in jobs] == [150, 150]
    assert [k["seed"] for k in kwargs] == [5, 6] and all(
        k["stop_token_ids"] == [p.speech_end_id] for k in kwargs
    )
    assert kwargs[0]["allowed_token_ids"] == p.allowed_ids.tolist() and request.guard is not None
    assert [r.drop_reason for r in results] == [None, "tts_empty_text", None]
    assert len(results[0].audio) == 3 * 320
    _engine_got_what_was_built(fake_vllm)
