"""Chunked linear cross-entropy: same value and gradients as the full-logits loss, on raw tensors and a tiny LFM2."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sts.tasks import IGNORE_INDEX
from sts.testing.numerics import assert_close_rounding
from train.loss import CausalLMWithLoss, chunked_linear_cross_entropy, naive_cross_entropy, resolve_loss_impl


def _inputs(n=37, h=16, v=101, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) * 0.5
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::3] = IGNORE_INDEX
    labels[:8] = IGNORE_INDEX  # a whole chunk without loss tokens
    return hidden, weight, labels


@pytest.mark.parametrize("chunk", [1, 8, 10, 37, 1000])
def test_chunked_matches_naive_value_and_gradient(chunk):
    hidden, weight, labels = _inputs()
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = naive_cross_entropy(h1, w1, labels)
    got = chunked_linear_cross_entropy(h2, w2, labels, chunk_tokens=chunk)
    (ref * 0.7).backward()
    (got * 0.7).backward()  # the upstream gradient scales the stored gradients
    assert got.dtype == torch.float32
    # float32 on both sides (the naive logits, the chunked loss and weight gradient): a matmul over the
    # hidden width, a log-softmax over the vocabulary, a sum over the tokens
    n = hidden.shape[1] + weight.shape[0] + hidden.shape[0]
    assert_close_rounding(got, ref, reduction_size=n, dtype=torch.float32)
    assert_close_rounding(h2.grad, h1.grad, reduction_size=n, dtype=torch.float32)
    assert_close_rounding(w2.grad, w1.grad, reduction_size=n, dtype=torch.float32)


def test_chunked_all_ignored_is_zero_with_zero_gradient():
    hidden, weight, _ = _inputs()
    labels = torch.full((hidden.shape[0],), IGNORE_INDEX)
    h = hidden.clone().requires_grad_()
    loss = chunked_linear_cross_entropy(h, weight, labels, chunk_tokens=8)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(h.grad) == 0


def test_model_wrapper_chunked_matches_naive(extended_lm_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(extended_lm_dir, dtype=torch.float32)
    vocab_rows = lm.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab_rows, (2, 24))
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX
    positions = torch.cat([torch.arange(10), torch.arange(14)]).expand(2, -1)  # two packed documents

    results = {}
    for impl in ("naive", "chunked"):
        model = CausalLMWithLoss(lm, impl=impl, chunk_tokens=7)
        lm.zero_grad()
        loss, n = model(ids, labels, positions)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in lm.named_parameters()}
        results[impl] = (loss.detach(), n, grads)
    (loss_a, n_a, grads_a), (loss_b, n_b, grads_b) = results["naive"], results["chunked"]
    assert n_a == n_b == int((labels[:, 1:] != IGNORE_INDEX).sum())
    n = lm.config.hidden_size + vocab_rows + ids.numel()  # float32: hidden matmul, vocab softmax, token sum
    assert_close_rounding(loss_b, loss_a, reduction_size=n)
    for k in grads_a:  # magnitude: each gradient's max|g|, which carries the backward pass's amplification
        assert_close_rounding(grads_b[k], grads_a[k], reduction_size=n, msg=k)


def test_resolve_loss_impl_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    assert resolve_loss_impl("auto") == "chunked"
    assert resolve_loss_impl("naive") == "naive"
    from sts.config import ConfigError

    with pytest.raises(ConfigError, match="liger"):  # a setting that cannot run here: one line in the CLI
        resolve_loss_impl("liger")


def test_packed_documents_do_not_attend_to_each_other():
    """Restarting position ids keep attention inside a document (exact for attention-only layers)."""
    from transformers import Lfm2ForCausalLM

    from sts.testing.lm import tiny_lfm2_config

    torch.manual_seed(0)
    config = tiny_lfm2_config(300, layer_types=["full_attention"] * 4)
    model = CausalLMWithLoss(Lfm2ForCausalLM._from_config(config, attn_implementation="sdpa"), impl="chunked")
    a, b = torch.randint(3, 300, (1, 7)), torch.randint(3, 300, (1, 9))
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(9)])[None]
    labels = packed.clone()
    labels[0, :8] = IGNORE_INDEX  # the loss on b's tokens 1.. only
    with torch.no_grad():
        loss_packed, n = model(packed, labels, positions)
        loss_alone, n_alone = model(b, b.clone().index_fill_(1, torch.tensor([0]), IGNORE_INDEX))
        loss_unmasked, _ = model(packed, labels)  # plain positions: b sees a
    assert n == n_alone == 8
    # the same tokens through attention over 16 vs 9 positions (masked), then the loss: float32 rounding
    reduction = config.hidden_size + config.vocab_size + packed.shape[1]
    assert_close_rounding(loss_packed, loss_alone, reduction_size=reduction)
    assert abs(loss_unmasked.item() - loss_alone.item()) > 1e-3


def test_chunked_under_bf16_autocast_matches_autocast_naive():
    hidden, weight, labels = (t.float() if t.is_floating_point() else t for t in _inputs(n=64, h=32, v=256))
    results = []
    for fn in (naive_cross_entropy, lambda h, w, y: chunked_linear_cross_entropy(h, w, y, chunk_tokens=16)):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(h, w, labels)
        loss.backward()
        results.append((loss.float(), h.grad, w.grad))
    (ref, h_ref, w_ref), (got, h_got, w_got) = results
    assert got.dtype == torch.float32 and w_got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-3)  # the same bf16 matmul on both sides
    torch.testing.assert_close(h_got, h_ref, rtol=5e-2, atol=2e-2)
    torch.testing.assert_close(w_got, w_ref, rtol=5e-2, atol=2e-2)


def test_conv_seq_idx_falls_back_when_unsupported(extended_lm_dir, caplog):
    """Without the causal-conv1d kernel, transformers refuses seq_idx: the wrapper warns once and goes on."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(extended_lm_dir, dtype=torch.float32)
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    positions = torch.cat([torch.arange(6), torch.arange(10)])[None]
    plain = CausalLMWithLoss(lm, impl="chunked")
    plain.conv_seq_idx = False
    forced = CausalLMWithLoss(lm, impl="chunked")
    forced.conv_seq_idx = True  # as if causal-conv1d were installed
    with torch.no_grad():
        expected, _ = plain(ids, ids, positions)
        got, _ = forced(ids, ids, positions)
    torch.testing.assert_close(got, expected)
    if importlib.util.find_spec("causal_conv1d") is None:
        assert forced.conv_seq_idx is False and "seq_idx" in caplog.text
