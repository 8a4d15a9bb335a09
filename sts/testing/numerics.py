"""Test tolerances derived from the dtype and the size of the computation, not from one CPU.

    from sts.testing.numerics import assert_close_rounding, rounding_tolerance
    assert_close_rounding(chunked, naive, reduction_size=vocab + hidden, dtype=torch.float32)
    atol = rounding_tolerance(torch.float32, reduction_size=256, magnitude=1.0)

Two correct implementations of one formula (another kernel, batch shape, padding, thread count, fused
vs naive, AVX2 vs AVX-512, Intel vs AMD) add the same terms in another order and so round
differently. How far apart they may land follows from floating-point summation error analysis
(N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, ch. 4): summing
n terms x_i in a precision with unit roundoff u (half the machine epsilon) gives an error of at most

    worst case:     |computed - exact| <= gamma_{n-1} * sum|x_i|,   gamma_k = k u / (1 - k u)

and, when the individual rounding errors behave as independent and mean-zero (N. J. Higham and
T. Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019),

    probabilistic:  |computed - exact| <= lambda * sqrt(n) * u * sum|x_i|   (to first order in u)

with probability at least 1 - 2 n exp(-lambda^2 / 2). `LAMBDA` = 8 makes that failure probability
below 1e-13 per element for any n a test uses; blocked and pairwise summation (BLAS kernels,
`torch.sum`) only lower the error. Two computations that each round compare within twice the bound.
The worst-case bound is the safe choice for a handful of terms, where sqrt(n) statistics mean little;
`rounding_tolerance` takes it whenever it is the smaller of the two.

`magnitude` stands for sum|x_i|. It is at most n * max|x_i|, which can be read from the inputs; for
terms of one sign (log-probabilities summed over positions) it is |result|. A chain of reductions
(a matmul over the hidden width d, then a log-softmax over V vocabulary rows, then a sum over L
positions) has, to first order, the sum of the stages' errors: pass `reduction_size = d + V + L` and
the magnitude of the largest stage. Where later stages amplify earlier errors (backpropagation
through normalisation layers), measure the magnitude on the output (`max|expected|`, a normwise
bound), which already carries that amplification.

The tolerances stay far below what a real bug does: in tests/test_dpo.py's comparison of the chunked
and the naive per-sequence log-probs, the correct code uses a tenth of the tolerance, while a mask or
labels shifted by one position exceed it 15 to 26,000 times (docs/measurements.md).
"""

from __future__ import annotations

import math

import torch

LAMBDA = 8.0
"""Confidence factor of the probabilistic bound: the bound fails with probability <= 2 n exp(-LAMBDA^2 / 2)."""


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2 for a floating dtype (float32: 2**-24 ~ 6.0e-8; bfloat16: 2**-8). Raises TypeError otherwise."""
    if not dtype.is_floating_point:
        raise TypeError(f"rounding tolerances are for floating dtypes, not {dtype}")
    return torch.finfo(dtype).eps / 2


def rounding_tolerance(
    dtype: torch.dtype, reduction_size: int, magnitude: float = 1.0, *, worst_case: bool = False
) -> float:
    """Bound on |computed - exact| for a sum of `reduction_size` terms whose absolute values add to `magnitude`.

    dtype: the precision the sum is accumulated in. reduction_size: n >= 1, the number of terms (for a
    chain of reductions the sum of their lengths). magnitude: sum|x_i| (or an upper bound such as
    n * max|x_i|), in the unit of the result. Returns min(LAMBDA * sqrt(n) * u, gamma_{n-1}) * magnitude
    (probabilistic bound, capped by the worst case), or gamma_{n-1} * magnitude with `worst_case`.
    A single term (n = 1) is exact: 0. Raises ValueError for n < 1 or a negative magnitude.
    """
    if reduction_size < 1:
        raise ValueError(f"reduction_size must be >= 1, got {reduction_size}")
    if not magnitude >= 0:
        raise ValueError(f"magnitude must be >= 0, got {magnitude}")
    u = unit_roundoff(dtype)
    k = reduction_size - 1
    gamma = k * u / (1 - k * u) if k * u < 1 else math.inf  # Higham's gamma_{n-1}
    bound = gamma if worst_case else min(gamma, LAMBDA * math.sqrt(reduction_size) * u)
    return bound * magnitude


def assert_close_rounding(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    reduction_size: int,
    dtype: torch.dtype | None = None,
    magnitude: float | None = None,
    worst_case: bool = False,
    msg: str | None = None,
) -> None:
    """`torch.testing.assert_close` with tolerances for two independently rounded computations of one value.

    actual, expected: tensors (or numpy arrays) of one shape, of any floating dtypes. reduction_size: as `rounding_tolerance`.
    dtype: the precision both were computed in; by default the less precise of the two tensors' dtypes
    (pass it when a float32 result was cast to float64 before the comparison). magnitude: sum|x_i| of
    the terms; by default max|expected| (normwise: right for terms of one sign, and for outputs whose
    magnitude already carries the amplification of earlier errors). Each element must satisfy
    |actual - expected| <= atol + rtol * |expected| with atol = 2 * rounding_tolerance(dtype, n, magnitude)
    and rtol = 2 * rounding_tolerance(dtype, n, 1). Raises AssertionError naming the largest difference.
    """
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if dtype is None:
        floating = [t.dtype for t in (actual, expected) if t.dtype.is_floating_point]
        dtype = max(floating, key=lambda d: torch.finfo(d).eps) if floating else torch.float32
    if magnitude is None:
        magnitude = expected.detach().abs().max().item() if expected.numel() else 0.0
    atol = 2 * rounding_tolerance(dtype, reduction_size, magnitude, worst_case=worst_case)
    rtol = 2 * rounding_tolerance(dtype, reduction_size, 1.0, worst_case=worst_case)
    note = (
        f"{dtype}, reduction of {reduction_size}, magnitude {magnitude:.3g}: atol {atol:.3g}, rtol {rtol:.3g}"
    )
    torch.testing.assert_close(
        actual,
        expected,
        atol=atol,
        rtol=rtol,
        check_dtype=False,  # values are compared; a float32 result may meet a float64 reference
        msg=lambda default: f"{msg + ': ' if msg else ''}{default}\n(rounding tolerance: {note})",
    )
