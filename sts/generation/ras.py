"""Repetition-aware sampling (RAS): nucleus sampling that redraws a token the output just repeated.

VALL-E 2 (Chen et al., 2024, "repetition aware sampling") and CosyVoice 1/2/3 (their default
`ras_sampling`: top-p 0.8, top-k 25, window 10, tau_r 0.1) decode speech tokens so: draw a token by
nucleus sampling; if it occurs at least `ceil(window * tau)` times among the last `window`
generated tokens, draw again from the full distribution. With the defaults one earlier occurrence
in the last 10 tokens triggers the redraw, which breaks the loops a plain nucleus sampler
falls into while leaving the sampling of non-repeating tokens as it was.

    chosen, redrawn = ras_choose(scores, history, uniforms, temperature=1.0, top_k=25, top_p=0.8, window=10, tau=0.1)

`ras_choose` is the one implementation: `RepetitionAwareProcessor` (transformers) runs it over a
batch, `RepetitionAwareRequest` (vLLM's request-level `(output_token_ids, logits) -> logits`
function, `sts.generation.vllm_ras`) over one row. Both turn the choice into scores that are -inf
everywhere but the chosen id, so the engine's own greedy pick (transformers `do_sample=False`, vLLM
temperature 0) takes it. Each row draws two uniforms per step from its own seeded CPU
`torch.Generator` (one for the nucleus draw, one for the redraw, whether used or not), so a seeded
row gives the same tokens on any device and in any batch.

The nucleus (CosyVoice's `nucleus_sampling`): tokens in order of probability, kept while fewer than
`top_k` are kept (`top_k <= 0`: no limit) and the probability before them is below `top_p`; the
first is always kept. Draws are inverse-CDF draws over that order (ties in the order: lower id first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from sts.generation.request import RAS_ARGS_KEY


def repeats_to_redraw(window: int, tau: float) -> int:
    """Occurrences among the last `window` tokens that make a draw repetitive: ceil(window * tau), >= 1."""
    return max(1, math.ceil(window * tau - 1e-9))


def ras_choose(
    scores: torch.Tensor,
    history: torch.Tensor,
    uniforms: torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    top_k: int | torch.Tensor,
    top_p: float | torch.Tensor,
    window: int | torch.Tensor,
    tau: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One RAS step for `B` rows: the chosen ids `[B]` int64 and whether each was redrawn `[B]` bool.

    Args:
        scores: `[B, V]` logits, already constrained (-inf outside the allowed ids).
        history: `[B, H]` int64 ids generated so far (the last `window` count), -1 where a row has fewer.
        uniforms: `[B, 2]` float in [0, 1): the nucleus draw's and the redraw's.
        temperature, top_k, top_p, window, tau: one value, or `[B]` per row (vLLM rows differ).

    Raises ValueError when a row has no finite score.
    """
    rows, vocab = scores.shape
    device = scores.device

    def per_row(value, dtype):
        return torch.as_tensor(value, dtype=dtype, device=device).reshape(-1).expand(rows)

    if not torch.isfinite(scores).any(dim=1).all():
        raise ValueError("repetition-aware sampling got a row with no allowed id (every score is -inf)")
    temperature = per_row(temperature, torch.float64)
    top_k, window = per_row(top_k, torch.long), per_row(window, torch.long)
    top_p, tau = per_row(top_p, torch.float64), per_row(tau, torch.float64)
    probs = torch.softmax(scores.double() / temperature[:, None], dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p
    rank = torch.arange(vocab, device=device)
    keep = ((before < top_p[:, None]) | (top_p[:, None] >= 1)) & (
        (top_k[:, None] <= 0) | (rank[None] < top_k[:, None])
    )
    keep[:, 0] = True
    uniforms = uniforms.to(device=device, dtype=torch.float64)
    first = order.gather(1, _inverse_cdf(sorted_p * keep, uniforms[:, 0])[:, None]).squeeze(1)
    redraw = order.gather(1, _inverse_cdf(sorted_p, uniforms[:, 1])[:, None]).squeeze(1)
    history = history.to(device=device, dtype=torch.long)
    recent = torch.arange(history.shape[1], device=device)[None] >= history.shape[1] - window[:, None]
    count = ((history == first[:, None]) & recent).sum(dim=1)
    need = torch.clamp(torch.ceil(window.double() * tau - 1e-9), min=1).long()
    redrawn = count >= need
    return torch.where(redrawn, redraw, first), redrawn


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """`[B, V]` non-negative weights whose positive entries come first, `[B]` uniforms -> `[B]` positions."""
    cumulative = weights.cumsum(dim=-1)
    target = (u * cumulative[:, -1])[:, None]
    position = torch.searchsorted(cumulative.contiguous(), target.contiguous(), right=True).squeeze(1)
    return torch.minimum(position, (weights > 0).sum(dim=1) - 1)


def only(chosen: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Scores shaped like `like` (`[B, V]`): 0 at each row's chosen id, -inf elsewhere."""
    out = torch.full_like(like, float("-inf"))
    return out.scatter_(1, chosen[:, None].to(like.device), 0.0)


class RowDraws:
    """A row's own CPU `torch.Generator`: two uniforms per decoding step. None seeds from torch's
    global generator (reproducible under `torch.manual_seed`)."""

    def __init__(self, seed: int | None):
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def uniforms(self) -> torch.Tensor:
        """`[2]` float64 in [0, 1)."""
        return torch.rand(2, generator=self.generator, dtype=torch.float64)


class RepetitionAwareProcessor(LogitsProcessor):
    """Transformers logits processor: per row, RAS picks the token; scores come back -inf but there.

    Put it after the constraint (`AllowedTokensProcessor`) and every other processor, and let
    `generate` decode greedily (`Sampling.generate_kwargs` does): its own temperature/top-k/top-p
    warpers would otherwise run after this and could only see one finite score anyway.
    `redraws[b]` counts the steps where row b's nucleus draw was repetitive and redrawn (kept on the
    scores' device: reading it syncs, counting does not).

    Args:
        sampling: the request's `Sampling` (temperature, top_k, top_p, ras_window, ras_tau).
        prompt_len: left-padded prompt width (generated ids are `input_ids[:, prompt_len:]`).
        seeds: one seed per row (`GenerationRequest.row_seed`); None entries draw one.
    """

    def __init__(self, sampling, *, prompt_len: int, seeds: Sequence[int | None]):
        self.sampling = sampling
        self.prompt_len = prompt_len
        self.rows = [RowDraws(seed) for seed in seeds]
        self.redraws = torch.zeros(len(self.rows), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.rows):
            raise ValueError(f"{scores.shape[0]} rows but {len(self.rows)} seeds")
        s = self.sampling
        history = (
            input_ids[:, self.prompt_len :][:, -s.ras_window :] if s.ras_window > 0 else input_ids[:, :0]
        )
        uniforms = torch.stack([row.uniforms() for row in self.rows])
        chosen, redrawn = ras_choose(
            scores,
            history,
            uniforms,
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            window=s.ras_window,
            tau=s.ras_tau,
        )
        self.redraws = self.redraws.to(redrawn.device) + redrawn
        return only(chosen, scores)


def ras_request_args(sampling, seed: int | None) -> dict:
    """The settings one vLLM request carries in `extra_args[RAS_ARGS_KEY]` (JSON-able)."""
    return {
        "temperature": float(sampling.temperature),
        "top_k": int(sampling.top_k),
        "top_p": float(sampling.top_p),
        "window": int(sampling.ras_window),
        "tau": float(sampling.ras_tau),
        "seed": seed,
    }


class RepetitionAwareRequest:
    """vLLM's request-level logits processor for one request: `(output_token_ids, logits [V]) -> logits [V]`.

    Built from `extra_args[RAS_ARGS_KEY]` (`ras_request_args`); raises ValueError on bad settings.
    """

    def __init__(self, args: dict):
        try:
            self.temperature = float(args["temperature"])
            self.top_k, self.top_p = int(args["top_k"]), float(args["top_p"])
            self.window, self.tau = int(args["window"]), float(args["tau"])
            seed = args.get("seed")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"bad {RAS_ARGS_KEY} settings {args!r}: {err}") from err
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.window < 0 or self.tau <= 0:
            raise ValueError(
                f"bad {RAS_ARGS_KEY} settings {args!r}: need temperature > 0, 0 < top_p <= 1, tau > 0"
            )
        self.draws = RowDraws(None if seed is None else int(seed))

    def choose(self, output_token_ids: Sequence[int], logits: torch.Tensor) -> tuple[int, bool]:
        """The chosen id and whether it was redrawn, for one row `[V]` after `output_token_ids`."""
        recent = list(output_token_ids[-self.window :]) if self.window > 0 else []
        history = torch.tensor([recent], dtype=torch.long).reshape(1, len(recent))
        chosen, redrawn = ras_choose(
            logits[None],
            history,
            self.draws.uniforms()[None],
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            window=self.window,
            tau=self.tau,
        )
        return int(chosen[0]), bool(redrawn[0])

    def __call__(self, output_token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        chosen, _ = self.choose(output_token_ids, logits)
        out = torch.full_like(logits, float("-inf"))
        out[chosen] = 0.0
        return out
