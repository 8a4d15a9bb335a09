"""MT backends: HF generate on the tiny LFM2, vLLM request building, an OpenAI-compatible fake server."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from sts.generation import vllm_sampling_kwargs
from sts.mt import PRESETS, HFChatMT, MTResult, ReferenceMT, VllmMT, build_messages, load_mt


def test_preset_prompts_and_context_turns():
    preset = PRESETS["LiquidAI/LFM2-350M-ENJP-MT"]
    assert (preset.sampling.temperature, preset.sampling.min_p, preset.sampling.repetition_penalty) == (
        0.5,
        0.1,
        1.05,
    )
    assert build_messages("こんにちは", "en", preset) == [
        {"role": "system", "content": "Translate to English."},
        {"role": "user", "content": "こんにちは"},
    ]
    messages = build_messages("Bye.", "ja", preset, [("Hi.", "やあ。")])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == "Translate to Japanese." and messages[2]["content"] == "やあ。"


def test_hf_backend_generates_with_tiny_lfm2(tiny_lm_dir):
    mt = HFChatMT(str(tiny_lm_dir), preset="LiquidAI/LFM2-350M-ENJP-MT", batch_size=3, max_new_tokens=6)
    assert mt.name == f"hf:{tiny_lm_dir}"
    prompt = mt.tokenizer.apply_chat_template(
        build_messages("こんにちは", "en", mt.preset), tokenize=False, add_generation_prompt=True
    )
    assert (
        prompt
        == "<|startoftext|><|im_start|>system\nTranslate to English.<|im_end|>\n<|im_start|>user\nこんにちは<|im_end|>\n<|im_start|>assistant\n"
    )
    texts = ["こんにちは", "おはようございます。今日はお元気ですか？", "ありがとう", "駅はどこですか"]
    results = mt.translate(texts, "ja", "en")
    assert len(results) == 4
    for r in results:  # random weights: gibberish or nothing, but every row gets an answer
        assert (r.text is not None and r.text.strip() == r.text and r.text) or r.drop_reason == "mt_empty"
    assert any(r.text for r in results)
    # `truncated` says whether the model ended its turn: forced to end after 2 tokens / never to end.
    config, eos = mt.model.generation_config, mt.tokenizer.eos_token_id
    config.min_new_tokens, config.sequence_bias = 2, [[[eos], 100.0]]
    ended = mt.translate(texts, "ja", "en")
    assert not any(r.truncated for r in ended) and any(r.text for r in ended)
    config.min_new_tokens, config.sequence_bias, config.suppress_tokens = None, None, [eos]
    cut = mt.translate(texts, "ja", "en")
    assert all(r.truncated for r in cut if r.text) and any(r.text for r in cut)
    # Batching and left padding do not change a row's translation (same seed, greedy preset).
    greedy = HFChatMT(str(tiny_lm_dir), batch_size=4, max_new_tokens=6)
    together = greedy.translate(texts, "ja", "en")
    alone = [greedy.translate([t], "ja", "en")[0] for t in texts]
    assert [r.text for r in together] == [r.text for r in alone]


def test_vllm_backend_builds_prompts_and_sampling(tiny_lm_dir, monkeypatch):
    mt = VllmMT(str(tiny_lm_dir), preset="LiquidAI/LFM2-350M-ENJP-MT", max_new_tokens=64)
    prompts = mt.build_prompts(["Hello.", "Bye."], "ja", [None, [("Hi.", "やあ。")]])
    assert prompts[0].endswith(
        "<|im_start|>system\nTranslate to Japanese.<|im_end|>\n<|im_start|>user\nHello.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "<|im_start|>assistant\nやあ。<|im_end|>\n<|im_start|>user\nBye." in prompts[1]
    eos = mt.tokenizer.eos_token_id
    assert mt.end_ids == [eos]  # the tiny model's generation config names the tokenizer's eos
    [first, second] = vllm_sampling_kwargs(mt.generation_request(2))
    assert first == dict(
        temperature=0.5,
        top_p=1.0,
        top_k=-1,
        min_p=0.1,
        repetition_penalty=1.05,
        min_tokens=0,
        stop_token_ids=[eos],
        allowed_token_ids=None,
        detokenize=False,
        max_tokens=64,
        seed=0,
    )
    assert second["seed"] == 1
    # The engine itself needs vllm (a GPU extra); a stand-in backend returns rows as VllmBackend does.
    ids = lambda text: mt.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rows = [ids("こんにちは。") + [eos], ids("  ") + [eos], ids("ああああ")]  # the last hit its budget
    seen = []

    class Stub:
        def generate(self, prompts, request):
            seen.append((prompts, request))
            return [np.asarray(r) for r in rows]

    mt._backend = Stub()
    assert mt.translate(["Hello.", "Bye.", "Ah."], "en", "ja") == [
        MTResult("こんにちは。"),
        MTResult(None, "mt_empty"),
        MTResult("ああああ", truncated=True),
    ]
    [(prompts, request)] = seen
    assert prompts == mt.prompt_ids(["Hello.", "Bye.", "Ah."], "ja")
    assert mt.tokenizer.decode(prompts[0]) == mt.build_prompts(["Hello."], "ja")[0]
    assert request.max_new_tokens == [64] * 3 and request.allowed is None


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vllm installed: the engine would start"
)
def test_vllm_engine_needs_the_package(tiny_lm_dir):
    with pytest.raises(ImportError):
        VllmMT(str(tiny_lm_dir)).translate(["Hello."], "en", "ja")


class _FakeChatServer(BaseHTTPRequestHandler):
    """Answers chat completions by upper-casing the last user turn; "EMPTY" -> "", "FAIL" -> HTTP 500,
    "LOOP" -> finish_reason "length"."""

    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        text = body["messages"][-1]["content"]
        if text == "FAIL":
            self.send_response(500)
            self.end_headers()
            return
        content = "" if text == "EMPTY" else text.upper()
        finish = "length" if text == "LOOP" else "stop"
        choice = {"message": {"role": "assistant", "content": content}, "finish_reason": finish}
        data = json.dumps({"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def chat_server():
    _FakeChatServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_http_backend_against_local_server(chat_server):
    mt = load_mt("http", "LiquidAI/LFM2-350M-ENJP-MT", base_url=chat_server, retries=1, concurrency=3)
    results = mt.translate(["good morning", "EMPTY", "FAIL", "thanks", "LOOP"], "en", "ja")
    assert results == [
        MTResult("GOOD MORNING"),
        MTResult(None, "mt_empty"),
        MTResult(None, "mt_error"),
        MTResult("THANKS"),
        MTResult("LOOP", truncated=True),
    ]
    assert mt.name == "http:LiquidAI/LFM2-350M-ENJP-MT"
    first = next(r for r in _FakeChatServer.requests if r["messages"][-1]["content"] == "good morning")
    assert first["path"] == "/v1/chat/completions"
    assert first["messages"][0] == {"role": "system", "content": "Translate to Japanese."}
    assert (first["model"], first["temperature"], first["min_p"], first["repetition_penalty"]) == (
        "LiquidAI/LFM2-350M-ENJP-MT",
        0.5,
        0.1,
        1.05,
    )
    assert sum(r["messages"][-1]["content"] == "FAIL" for r in _FakeChatServer.requests) == 2  # retried once


def test_load_mt_errors_and_reference():
    assert isinstance(load_mt("reference"), ReferenceMT)
    with pytest.raises(ValueError, match="needs a model"):
        load_mt("hf")
    with pytest.raises(ValueError, match="unknown MT backend"):
        load_mt("google")
