"""`sts.testing.numerics`: the bounds are Higham's, they hold for real reorderings of a sum, and they
still catch an off-by-one."""

from __future__ import annotations

import math

import pytest
import torch

from sts.testing.numerics import LAMBDA, assert_close_rounding, rounding_tolerance, unit_roundoff


def test_the_bounds_are_the_documented_formulas():
    u = 2.0**-24
    assert unit_roundoff(torch.float32) == u and unit_roundoff(torch.bfloat16) == 2.0**-8
    assert rounding_tolerance(torch.float32, 1) == 0.0  # one term: nothing is added
    assert rounding_tolerance(torch.float32, 1000, 3.0) == pytest.approx(LAMBDA * math.sqrt(1000) * u * 3.0)
    gamma = 999 * u / (1 - 999 * u)
    assert rounding_tolerance(torch.float32, 1000, 3.0, worst_case=True) == pytest.approx(gamma * 3.0)
    # for a few terms the worst case is the smaller bound, and is taken
    assert rounding_tolerance(torch.float32, 4, 1.0) == pytest.approx(3 * u / (1 - 3 * u))
    assert rounding_tolerance(torch.bfloat16, 10**6, worst_case=True) == math.inf  # n u >= 1: no bound
    with pytest.raises(ValueError, match="reduction_size"):
        rounding_tolerance(torch.float32, 0)
    with pytest.raises(ValueError, match="magnitude"):
        rounding_tolerance(torch.float32, 10, -1.0)
    with pytest.raises(TypeError, match="floating"):
        rounding_tolerance(torch.int64, 10)


@pytest.mark.parametrize("n", [100, 4096])
def test_reordered_sums_stay_within_the_bound(n):
    dtype = torch.float32  # (bfloat16's bound at these sizes is about |x|'s own scale: nothing to test)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, n, generator=g, dtype=torch.float64)
    exact = x.sum(dim=1)
    low = x.to(dtype)
    forward = low.cumsum(dim=1)[:, -1]  # one order (sequential in low precision)
    backward = low.flip(1).cumsum(dim=1)[:, -1]  # the reverse order
    pairwise = low.sum(dim=1)  # torch's blocked reduction
    magnitude = low.double().abs().sum(dim=1).max().item()  # sum |x_i|, from the inputs
    bound = rounding_tolerance(dtype, n, magnitude)
    # the inputs' own rounding to float32, which no summation order can undo
    rounded_inputs = (low.double() - x).sum(dim=1).abs().max().item()
    for got in (forward, backward, pairwise):
        assert (got.double() - low.double().sum(dim=1)).abs().max().item() <= bound
        assert (got.double() - exact).abs().max().item() <= bound + rounded_inputs
    assert_close_rounding(forward, backward, reduction_size=n, magnitude=magnitude)


def test_a_shifted_sum_is_caught():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(3, 50, generator=g) * 8  # per-token log-probs of three sequences
    mask = torch.zeros(3, 50, dtype=torch.bool)
    mask[:, 10:] = True
    shifted = torch.zeros_like(mask)
    shifted[:, 11:] = True  # one answer token lost
    good, bad = (logp * mask).sum(1), (logp * shifted).sum(1)
    assert_close_rounding((logp * mask).flip(1).sum(1), good, reduction_size=50)  # another order: passes
    with pytest.raises(AssertionError, match="rounding tolerance: torch.float32, reduction of 50"):
        assert_close_rounding(bad, good, reduction_size=50, msg="log-probs")
