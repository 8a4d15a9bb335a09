"""Causal-LM cross-entropy without the full logits: chunked in plain torch, or liger's fused kernel.

With 131k vocabulary rows, the fp32 logits of a 16 x 4096 batch alone take 34 GB. `chunked_linear_cross_entropy`
computes the loss and both gradients chunk by chunk in the forward pass (as liger's fused linear
cross-entropy does), so at most `[chunk, V]` logits exist at a time; backward only scales the stored
gradients. It runs on CPU and GPU and matches the naive loss in value and gradient (tests/test_train_loss.py).

    model = CausalLMWithLoss(hf_model, impl="chunked")
    loss, n_tokens = model(input_ids, labels, position_ids)     # ids/labels/positions: [B, L] int64
    logps, n = model(input_ids, labels, per_sequence=True)      # [B] summed log-probs, [B] their tokens

Preference optimization (`train.dpo`) needs each sequence's summed log-probability rather than one
summed loss: `chunked_token_log_probs` returns per-token log-probs `[N]` chunk by chunk too, but as
its upstream gradient differs per token, its backward recomputes each chunk's logits (one more pair
of matmuls) instead of storing gradients in the forward pass.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F
from torch import nn

from sts.config import ConfigError
from sts.tasks import IGNORE_INDEX

log = logging.getLogger(__name__)


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_tokens: int, compute_dtype: torch.dtype):
        # hidden: [N, H], weight: [V, H], labels: [N] int64 -> summed loss over labels != -100
        with torch.autocast(device_type=hidden.device.type, enabled=False):  # dtypes are chosen below
            return _ChunkedLinearCE._forward(ctx, hidden, weight, labels, chunk_tokens, compute_dtype)

    @staticmethod
    def _forward(ctx, hidden, weight, labels, chunk_tokens: int, compute_dtype: torch.dtype):
        grad_hidden = torch.zeros_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(
            compute_dtype
        )  # the matmuls run in the autocast dtype, as the model's own lm_head would
        for start in range(0, hidden.shape[0], chunk_tokens):
            y = labels[start : start + chunk_tokens]
            keep = y != IGNORE_INDEX
            if not keep.any():
                continue
            h, y = hidden[start : start + chunk_tokens][keep].to(compute_dtype), y[keep]
            logits = (h @ w.T).float()  # [n, V] fp32, one chunk only
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            grad_logits = logits.sub_(
                lse[:, None]
            ).exp_()  # softmax in place; d(sum CE)/d logits = p - onehot
            grad_logits[torch.arange(len(y), device=y.device), y] -= 1.0
            grad_logits = grad_logits.to(compute_dtype)
            grad_hidden[start : start + chunk_tokens][keep] = (grad_logits @ w).to(hidden.dtype)
            grad_weight += (grad_logits.T @ h).float()  # accumulated over chunks in fp32
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, (grad_weight * grad_output).to(ctx.weight_dtype), None, None, None


def chunked_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, chunk_tokens: int = 4096
) -> torch.Tensor:
    """Summed next-token CE of `hidden @ weight.T` against `labels`, never building all logits.

    hidden: [N, H]; weight: [V, H]; labels: [N] int64 (already shifted; -100 = no loss). Returns a scalar
    (fp32) sum over the kept tokens; divide by their count for the mean. Under autocast the two
    matmuls per chunk run in the autocast dtype (bf16) and the softmax in fp32; otherwise in
    `hidden`'s dtype. Memory: one `[chunk_tokens, V]` fp32 buffer and a `[V, H]` fp32 weight gradient.
    """
    return _ChunkedLinearCE.apply(hidden, weight, labels, chunk_tokens, _compute_dtype(hidden, weight))


class _ChunkedTokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_tokens: int, compute_dtype: torch.dtype):
        # hidden: [N, H], weight: [V, H], labels: [N] int64 -> [N] fp32 log p(label), 0 where label == -100
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            out = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
            w = weight.to(compute_dtype)
            for start, keep, h, y in _label_chunks(hidden, labels, chunk_tokens, compute_dtype):
                logits = (h @ w.T).float()
                out[start : start + chunk_tokens][keep] = logits.gather(1, y[:, None]).squeeze(
                    1
                ) - torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(hidden, weight, labels)
        ctx.chunk_tokens, ctx.compute_dtype = chunk_tokens, compute_dtype
        return out

    @staticmethod
    def backward(ctx, grad_output):
        hidden, weight, labels = ctx.saved_tensors
        chunk, dtype = ctx.chunk_tokens, ctx.compute_dtype
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            grad_hidden = torch.zeros_like(hidden)
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            w = weight.to(dtype)
            for start, keep, h, y in _label_chunks(hidden, labels, chunk, dtype):
                g = grad_output[start : start + chunk][keep].float()
                logits = (h @ w.T).float()  # recomputed: one [n, V] chunk at a time
                # d log p(y) / d logits = onehot(y) - softmax; scaled by each token's upstream gradient
                grad_logits = logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True)).exp_().neg_()
                grad_logits[torch.arange(len(y), device=y.device), y] += 1.0
                grad_logits = (grad_logits * g[:, None]).to(dtype)
                grad_hidden[start : start + chunk][keep] = (grad_logits @ w).to(hidden.dtype)
                grad_weight += (grad_logits.T @ h).float()
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None


def _label_chunks(hidden, labels, chunk_tokens: int, dtype: torch.dtype):
    """(start, keep `[n_chunk]` bool, hidden rows `[n, H]` in `dtype`, labels `[n]`) per chunk with loss tokens."""
    for start in range(0, hidden.shape[0], chunk_tokens):
        y = labels[start : start + chunk_tokens]
        keep = y != IGNORE_INDEX
        if keep.any():
            yield start, keep, hidden[start : start + chunk_tokens][keep].to(dtype), y[keep]


def chunked_token_log_probs(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, chunk_tokens: int = 4096
) -> torch.Tensor:
    """Per-token `log softmax(hidden @ weight.T)[label]`, never building all logits.

    hidden: [N, H]; weight: [V, H]; labels: [N] int64 (already shifted; -100 = not scored). Returns
    `[N]` fp32, 0 at unscored tokens. Dtypes as `chunked_linear_cross_entropy`. Memory: one
    `[chunk_tokens, V]` fp32 buffer in the forward pass and again in the backward pass, which
    recomputes the chunk's logits.
    """
    return _ChunkedTokenLogProbs.apply(hidden, weight, labels, chunk_tokens, _compute_dtype(hidden, weight))


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def naive_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference: full `[N, V]` fp32 logits, summed CE."""
    logits = (hidden @ weight.T).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def liger_available() -> bool:
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_loss_impl(impl: str) -> str:
    if impl == "auto":
        return "liger" if liger_available() else "chunked"
    if impl == "liger" and not liger_available():
        raise ConfigError("loss_impl=liger needs liger-kernel and a CUDA device (pip install liger-kernel)")
    return impl


class CausalLMWithLoss(nn.Module):
    """Wraps an HF causal LM so that forward returns (summed loss, counted tokens) without full logits.

    The loss is computed inside this module's forward, so FSDP/DeepSpeed wrap it like any model.
    """

    def __init__(self, lm: nn.Module, impl: str = "chunked", chunk_tokens: int = 4096):
        super().__init__()
        self.lm, self.impl, self.chunk_tokens = lm, resolve_loss_impl(impl), chunk_tokens
        # With the causal-conv1d kernel, transformers keeps packed documents apart in the short-conv
        # layers too (seq_idx); its PyTorch fallback cannot, and refuses seq_idx.
        self.conv_seq_idx = importlib.util.find_spec("causal_conv1d") is not None
        self._liger = None
        if self.impl == "liger":
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            self._liger = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")

    def forward(self, input_ids, labels, position_ids=None, per_sequence: bool = False):
        """input_ids, labels, position_ids: `[B, L]` int64 -> (summed loss fp32, number of loss tokens).

        Position ids that restart at 0 mark packed documents: with no cache (use_cache=False),
        transformers turns them into a block-diagonal causal mask, so attention stays inside a document.
        per_sequence: return instead each row's summed log-probability of its labels (`[B]` fp32) and
        its number of labelled tokens (`[B]` int64) (one sequence per row, no packing; `train.dpo`).
        """
        if per_sequence:
            return self._sequence_log_probs(input_ids, labels, position_ids)
        labels = labels[:, 1:].reshape(-1)  # token t predicts label t + 1
        n_tokens = (labels != IGNORE_INDEX).sum()
        if self.impl == "naive":  # the reference: transformers' own forward, full logits
            logits = self.lm(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[:, :-1]
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels,
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            return loss, n_tokens
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        hidden = self._decoder(base, input_ids, position_ids)[:, :-1]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        weight = base.get_output_embeddings().weight
        if self._liger is not None:
            return self._liger(weight, hidden, labels), n_tokens
        return chunked_linear_cross_entropy(hidden, weight, labels, chunk_tokens=self.chunk_tokens), n_tokens

    def _sequence_log_probs(self, input_ids, labels, position_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """`[B]` summed log p(label) per row and `[B]` labelled tokens; full logits only under impl naive
        (liger has no per-token form here: it uses the chunked path)."""
        labels = labels[:, 1:]
        batch = labels.shape[0]
        n_tokens = (labels != IGNORE_INDEX).sum(dim=1)
        if self.impl == "naive":
            logits = self.lm(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[:, :-1]
            logps = torch.log_softmax(logits.float(), dim=-1)
            picked = logps.gather(2, labels.clamp(min=0)[..., None]).squeeze(2)
            return (picked * (labels != IGNORE_INDEX)).sum(dim=1), n_tokens
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        hidden = self._decoder(base, input_ids, position_ids)[:, :-1]
        weight = base.get_output_embeddings().weight
        per_token = chunked_token_log_probs(
            hidden.reshape(-1, hidden.shape[-1]), weight, labels.reshape(-1), chunk_tokens=self.chunk_tokens
        )
        return per_token.view(batch, -1).sum(dim=1), n_tokens

    def _decoder(self, base, input_ids, position_ids) -> torch.Tensor:
        """Last hidden states `[B, L, H]`; packed documents also kept apart in the conv layers when possible."""
        if self.conv_seq_idx and position_ids is not None:
            seq_idx = ((position_ids == 0).cumsum(-1) - 1).clamp(min=0).to(torch.int32)  # document per token
            try:
                return base.model(
                    input_ids=input_ids, position_ids=position_ids, use_cache=False, seq_idx=seq_idx
                ).last_hidden_state
            except torch.OutOfMemoryError:
                raise
            except (TypeError, ValueError, RuntimeError, AssertionError) as err:  # no seq_idx support
                log.warning("packed documents share the short-conv context (seq_idx unsupported: %s)", err)
                self.conv_seq_idx = False
        return base.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
