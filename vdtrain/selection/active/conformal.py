"""Prediction sets and CCMA's disagreement score.

Two ways to set the threshold on the nonconformity −log p_c, named for what they are:

- `split_conformal_threshold`: the ⌈(n+1)(1−α)⌉-th smallest calibration score, so a fresh exchangeable sample's
  set holds its true class with probability in [1−α, 1−α + 1/(n+1)] (split conformal prediction).
- `target_size_threshold`: bisected so the *mean set size* over the pool hits a target, as CCMA's code does
  (student 5, teacher 3). It carries no coverage guarantee.

The score (CCMA): δ = w·JS(p̃_S ‖ p̃_T) + (1 − w)·H(p_S), p̃ the two distributions renormalised over Γ_S ∪ Γ_T,
w = max p_T / (max p_T + max p_S), natural logarithms.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-12


def nonconformity(probs: torch.Tensor) -> torch.Tensor:
    """`(n, C)` −log p_c, the score of every candidate class."""
    return -torch.log(probs.clamp_min(EPS))


def split_conformal_threshold(
    calibration_probs: torch.Tensor, calibration_labels: torch.Tensor, alpha: float
) -> float:
    """The split-conformal threshold q̂ on −log p: the ⌈(n+1)(1−α)⌉-th smallest calibration score (inf when that
    exceeds n: too few calibration samples for this α)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    labels = torch.as_tensor(calibration_labels, dtype=torch.long)
    scores = nonconformity(calibration_probs).gather(1, labels[:, None]).squeeze(1)
    n = len(scores)
    rank = math.ceil((n + 1) * (1.0 - alpha))
    if rank > n:
        return math.inf
    return float(scores.sort().values[rank - 1])


def target_size_threshold(probs: torch.Tensor, target_size: float, *, iterations: int = 60) -> float:
    """The threshold on −log p whose sets have mean size `target_size` over `probs` (bisection; CCMA's mode)."""
    scores = nonconformity(probs)
    low, high = float(scores.min()) - 1.0, float(scores.max()) + 1.0
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if (scores <= middle).sum(dim=1).double().mean() < target_size:
            low = middle
        else:
            high = middle
    return high


def prediction_sets(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """`(n, C)` bool: class c is in the set when −log p_c ≤ threshold."""
    return nonconformity(probs) <= threshold


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """`(n,)` Shannon entropy in nats (0·log 0 = 0)."""
    p = probs.double()
    return -(p * torch.log(p.clamp_min(EPS))).where(p > 0, torch.zeros_like(p)).sum(dim=1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """`(n,)` Jensen–Shannon divergence in nats between the rows of `p` and `q` (each normalised first)."""
    p = p.double() / p.double().sum(dim=1, keepdim=True)
    q = q.double() / q.double().sum(dim=1, keepdim=True)
    mid = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        terms = a * (torch.log(a.clamp_min(EPS)) - torch.log(mid.clamp_min(EPS)))
        return terms.where(a > 0, torch.zeros_like(a)).sum(dim=1)

    return 0.5 * kl(p) + 0.5 * kl(q)


def disagreement_scores(
    student_probs: torch.Tensor,
    teacher_probs: torch.Tensor,
    student_sets: torch.Tensor,
    teacher_sets: torch.Tensor,
) -> torch.Tensor:
    """`(n,)` CCMA's δ = w·JS(p̃_S‖p̃_T) + (1−w)·H(p_S) over the union of the two prediction sets."""
    union = student_sets | teacher_sets
    empty = ~union.any(dim=1)
    union[empty] = True  # both sets empty (threshold below every score): compare the full distributions
    ps = (student_probs.double() * union).clamp_min(0)
    pt = (teacher_probs.double() * union).clamp_min(0)
    ps = ps / ps.sum(dim=1, keepdim=True).clamp_min(EPS)
    pt = pt / pt.sum(dim=1, keepdim=True).clamp_min(EPS)
    top_s, top_t = student_probs.double().max(dim=1).values, teacher_probs.double().max(dim=1).values
    weight = top_t / (top_t + top_s)
    return weight * js_divergence(ps, pt) + (1.0 - weight) * entropy(student_probs)
