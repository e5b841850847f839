"""ActiveFT / MMCSAL stage-2 parametric selection (thesis eqs. 4.6-4.11): B unit-norm parameters per modality are
optimised to sit where the pool is dense, apart from each other and (MMCSAL) with their modalities aligned; each
parameter then takes its nearest not-yet-chosen sample.

Two loss forms, named:

- `"thesis"` (eqs. 4.6-4.8, 4.11): `L = D - λ_div R - λ_align A`, with
  `D = -E_i[sim(r_i, θ_{s_i}) / τ]`, `s_i = argmax_j sim(r_i, θ_j)`,
  `R = -E_j[log Σ_{k≠j} exp(sim(θ_j, θ_k) / τ)]`, `A = E_j[log Σ_k exp(cos(θ_j^1, θ_k^2) / τ)]`;
- `"contrastive"` (the single term ActiveFT's public code optimises):
  `L = -E_i[log e^{P_i} / (e^{P_i} + λ_div Σ_{k≠s_i} e^{sim(θ_{s_i}, θ_k)/τ})] - λ_align A`
  with `P_i = sim(r_i, θ_{s_i})/τ`.

`sim` is the mean over modalities of the cosine similarities (eq. 4.7's `(cos¹ + cos²) / 2`).

**Sign of the alignment term.** Eq. 4.11 prints `+λ_align A`; minimised, that pushes image parameters away from text
parameters, while the text says the term maximises alignment. Here `λ_align > 0` maximises `A` (`-λ_align A` in
`L`): `tests/test_selection_parametric.py` shows the mean image-text cosine of the selected pairs rising with
`λ_align` under this sign and falling under the printed one (`λ_align < 0` reproduces the print).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

FORMS = ("thesis", "contrastive")


def _unit(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [F.normalize(t, dim=-1) for t in tensors]


def mean_cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """`(N, M)` mean over modalities of the cosine similarity between rows of `a[m]` `(N, D_m)` and `b[m]`."""
    return sum(x @ y.T for x, y in zip(_unit(a), _unit(b))) / len(a)


def alignment(params: Sequence[torch.Tensor], tau: float) -> torch.Tensor:
    """Eq. 4.10: `A = E_j[log Σ_k exp(cos(θ_j^1, θ_k^2) / τ)]` over the first two modalities."""
    if len(params) < 2 or params[0].shape[-1] != params[1].shape[-1]:
        raise ValueError(
            "the alignment term needs two modalities in one space (same width): embed both with a dual encoder "
            "(CLIP, SigLIP) or train the stage-1 projector heads first"
        )
    first, second = _unit(params[:2])
    return torch.logsumexp(first @ second.T / tau, dim=1).mean()


def selection_loss(
    features: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    form: str = "thesis",
    lambda_div: float = 1.0,
    lambda_align: float = 0.0,
    tau: float = 0.07,
) -> torch.Tensor:
    """The stage-2 objective for pool rows `features[m]` `(N, D_m)` and parameters `params[m]` `(B, D_m)`; see the
    module docstring for both forms. Parameters and features are L2-normalised here."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}: choose one of {', '.join(FORMS)}")
    to_params = mean_cosine(features, params) / tau  # (N, B)
    s = to_params.detach().argmax(dim=1)  # (N,) nearest parameter of each row, eq. 4.7
    positive = to_params.gather(1, s[:, None]).squeeze(1)  # (N,)
    between = mean_cosine(params, params) / tau  # (B, B)
    others = between.masked_fill(torch.eye(len(between), dtype=torch.bool), -math.inf)
    if form == "thesis":
        gap = -positive.mean()  # D, eq. 4.7
        diversity = -torch.logsumexp(others, dim=1).mean()  # R, eq. 4.8
        loss = gap - lambda_div * diversity
    else:
        negatives = torch.logsumexp(others, dim=1)[s]  # log Σ_{k≠s_i} e^{sim(θ_{s_i}, θ_k)/τ}
        if lambda_div > 0:
            denominator = torch.logaddexp(positive, math.log(lambda_div) + negatives)
        else:
            denominator = positive
        loss = (denominator - positive).mean()
    if lambda_align:
        loss = loss - lambda_align * alignment(params, tau)
    return loss


def assign_nearest(features: Sequence[torch.Tensor], params: Sequence[torch.Tensor], chunk: int = 256) -> torch.Tensor:
    """`(B,)` distinct rows: parameter `j`, in order, takes the row of largest `sim` not taken by an earlier one."""
    unit_features = [F.normalize(f.float(), dim=-1) for f in features]
    unit_params = [F.normalize(p.detach().float(), dim=-1) for p in params]
    taken = torch.zeros(features[0].shape[0])
    picks: list[int] = []
    for start in range(0, unit_params[0].shape[0], chunk):
        sims = sum(f @ p[start : start + chunk].T for f, p in zip(unit_features, unit_params))  # (N, chunk)
        for column in range(sims.shape[1]):
            index = int(torch.argmax(sims[:, column] + taken))
            picks.append(index)
            taken[index] = -math.inf
    return torch.tensor(picks, dtype=torch.long)


def parametric_select(
    features: Sequence[torch.Tensor],
    budget: int,
    *,
    form: str = "thesis",
    lambda_div: float = 1.0,
    lambda_align: float = 1.0,
    tau: float = 0.07,
    steps: int = 300,
    lr: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Select `budget` rows of a pool by optimising the parametric selection model (ActiveFT, MMCSAL stage 2).

    Args:
        features (`Sequence[Tensor]`): one `(N, D_m)` matrix per modality (frozen representations, row-aligned).
        budget (`int`): number of rows B to select.
        form (`str`): `"thesis"` (gap minus diversity, eq. 4.11) or `"contrastive"` (ActiveFT's code).
        lambda_div (`float`, defaults to 1): weight of the diversity term.
        lambda_align (`float`, defaults to 1): weight of the cross-modal alignment term (0: ActiveFT; > 0 raises
            the alignment of the selected pairs; needs two modalities of one width).
        tau (`float`, defaults to 0.07): temperature.
        steps (`int`, defaults to 300): Adam steps, cosine-annealed learning rate.
        lr (`float`, defaults to 1e-3): Adam learning rate.
        batch_size (`int`, *optional*): pool rows per step (seeded mini-batches for large N); the whole pool when
            `None`.
        seed (`int`): seeds the initial parameters (uniformly drawn rows) and the mini-batches.

    Returns:
        `(budget,)` row indices, in parameter order.
    """
    n = features[0].shape[0]
    if any(f.shape[0] != n for f in features):
        raise ValueError("every modality needs one row per pool sample")
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in [1, {n}], got {budget}")
    generator = torch.Generator().manual_seed(seed)
    pool = [F.normalize(f.float(), dim=-1) for f in features]
    start = torch.randperm(n, generator=generator)[:budget]
    params = [torch.nn.Parameter(f[start].clone()) for f in pool]
    if lambda_align:
        alignment(params, tau)  # fail before optimising when the modalities do not share a space
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    for _ in range(steps):
        rows = None if batch_size is None or batch_size >= n else torch.randperm(n, generator=generator)[:batch_size]
        batch = pool if rows is None else [f[rows] for f in pool]
        loss = selection_loss(batch, params, form=form, lambda_div=lambda_div, lambda_align=lambda_align, tau=tau)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return assign_nearest(pool, params)
