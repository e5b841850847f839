"""Modality contributions by the Shapley value (thesis eqs. 3.9–3.11) and BMMAL's weights and dominance
(eqs. 3.5, 3.13).

The outcome V(S) is the fusion head's probability of the pseudo-label ŷ = argmax p_mm when the modalities outside
S are replaced by the zero vector (eq. 3.10's ∅). Exact by enumerating the 2^M coalitions; Monte Carlo over random
permutations when M is large (the thesis' suggestion above two modalities).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from vdtrain.selection.active.learner import Outputs

ValueFn = Callable[[tuple[bool, ...]], torch.Tensor]  # present-modality mask -> (n,) outcome


def fusion_value(outputs: Outputs, target: torch.Tensor | None = None) -> tuple[ValueFn, int]:
    """V(S) for a linear fusion head (zero-vector absence): `(value(mask) -> (n,), M)`, the probability of `target`
    (default: the pseudo-label ŷ = argmax p_mm; the true class for the thesis' test-set contributions, Fig. 3.1).
    Logits are additive in the modality blocks, so each coalition costs one sum of precomputed (n, C) shares."""
    shares = [s.double() for s in outputs.modality_logits().values()]
    bias = outputs.fusion_bias.double() if outputs.fusion_bias is not None else torch.zeros(shares[0].shape[1])
    full = bias + sum(shares)
    pseudo = full.argmax(dim=1, keepdim=True) if target is None else torch.as_tensor(target).long().reshape(-1, 1)

    def value(mask: tuple[bool, ...]) -> torch.Tensor:
        logits = bias + sum((s for s, present in zip(shares, mask) if present), torch.zeros_like(full))
        return logits.softmax(dim=1).gather(1, pseudo).squeeze(1)

    return value, len(shares)


def shapley_exact(value: ValueFn, num_modalities: int) -> torch.Tensor:
    """`(n, M)` Shapley values by eq. 3.9: every coalition S ∌ i weighted |S|!(M−|S|−1)!/M!."""
    m = num_modalities
    cache = {mask: value(mask) for mask in itertools.product((False, True), repeat=m)}
    columns = []
    for i in range(m):
        total = torch.zeros_like(cache[(True,) * m])
        for mask, outcome in cache.items():
            if mask[i]:
                continue
            size = sum(mask)
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            total = total + weight * (cache[mask[:i] + (True,) + mask[i + 1 :]] - outcome)
        columns.append(total)
    return torch.stack(columns, dim=1)


def shapley_permutations(
    value: ValueFn, num_modalities: int, *, num_permutations: int = 64, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo Shapley values `(n, M)` over random permutations, and their standard errors `(n, M)`."""
    m = num_modalities
    cache: dict[tuple[bool, ...], torch.Tensor] = {}

    def cached(mask: tuple[bool, ...]) -> torch.Tensor:
        if mask not in cache:
            cache[mask] = value(mask)
        return cache[mask]

    draws = []
    for _ in range(num_permutations):
        order = torch.randperm(m, generator=generator).tolist()
        mask, marginal = [False] * m, [None] * m
        before = cached(tuple(mask))
        for i in order:
            mask[i] = True
            after = cached(tuple(mask))
            marginal[i] = after - before
            before = after
        draws.append(torch.stack(marginal, dim=1))
    samples = torch.stack(draws)  # (T, n, M)
    spread = samples.std(dim=0) / math.sqrt(num_permutations) if num_permutations > 1 else torch.zeros_like(samples[0])
    return samples.mean(dim=0), spread


def modality_shapley(
    outputs: Outputs,
    *,
    target: torch.Tensor | None = None,
    exact_up_to: int = 4,
    num_permutations: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`(n, M)` Shapley values of each modality for the fusion head's p_ŷ (or p of `target`): exact up to
    `exact_up_to` modalities, Monte Carlo above."""
    value, m = fusion_value(outputs, target)
    if m <= exact_up_to:
        return shapley_exact(value, m)
    return shapley_permutations(value, m, num_permutations=num_permutations, generator=generator)[0]


def contributions(phi: torch.Tensor) -> torch.Tensor:
    """Normalised contributions Φ_m = |φ_m| / Σ_k |φ_k| (eq. 3.11); a sample with all φ = 0 gets 1/M each."""
    magnitude = phi.abs()
    total = magnitude.sum(dim=1, keepdim=True)
    uniform = torch.full_like(magnitude, 1.0 / phi.shape[1])
    return torch.where(total > 0, magnitude / total.clamp_min(1e-30), uniform)


def bmmal_weights(phi_normalised: torch.Tensor) -> torch.Tensor:
    """w_m = 1 − (max_k Φ_k − Φ_m) (eq. 3.13): the dominant modality keeps 1, a weaker one loses its gap."""
    return 1.0 - (phi_normalised.max(dim=1, keepdim=True).values - phi_normalised)


def dominance(phi_normalised: torch.Tensor) -> torch.Tensor:
    """ρ(x) = Σ_i (max_k Φ_k − Φ_i) (eq. 3.5): 0 for perfectly balanced contributions, up to M − 1."""
    return (phi_normalised.max(dim=1, keepdim=True).values - phi_normalised).sum(dim=1)
