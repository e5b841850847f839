"""Cold-start selection of B image-text pairs from an unlabelled pool (thesis ch. 4, MMCSAL), with the baselines the
thesis compares against: random, k-means centres, k-center greedy, ActiveFT."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vdtrain.selection.cluster import kcenter_greedy, kmeans
from vdtrain.selection.parametric import assign_nearest, parametric_select

METHODS = ("random", "kmeans", "kcenter", "activeft", "mmcsal")


def budget_count(budget: float, n: int) -> int:
    """A budget given as a fraction of the pool (`0 < b < 1`) or a count (`b >= 1`) as a count in `[1, n]`."""
    count = round(budget * n) if 0 < budget < 1 else int(budget)
    if not 1 <= count <= n or (budget >= 1 and budget != int(budget)):
        raise ValueError(f"budget {budget}: give a fraction in (0, 1) or a whole number of pairs in [1, {n}]")
    return count


def joint_features(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Concatenated L2-normalised modalities, scaled to unit norm: the thesis' distance for k-means and KGC."""
    return torch.cat([F.normalize(image.float(), dim=1), F.normalize(text.float(), dim=1)], dim=1) / 2**0.5


def pair_alignment(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """`(N,)` image-text cosine of each pair (both modalities in one space)."""
    return F.cosine_similarity(image.float(), text.float(), dim=1)


def select_pairs(
    image: torch.Tensor,
    text: torch.Tensor,
    budget: int,
    *,
    method: str = "mmcsal",
    seed: int = 0,
    form: str = "thesis",
    lambda_div: float = 1.0,
    lambda_align: float = 1.0,
    tau: float = 0.07,
    steps: int = 300,
    lr: float = 1e-3,
    batch_size: int | None = None,
) -> torch.Tensor:
    """`(budget,)` pool indices (pick order) of the pairs to label or keep.

    Args:
        image, text (`Tensor`): `(N, D_1)`, `(N, D_2)` frozen representations of the pairs (row-aligned).
        budget (`int`): number of pairs B.
        method (`str`): `random`, `kmeans` (the pair nearest each of B k-means centres), `kcenter` (greedy k-center
            on the joint features), `activeft` (stage 2 without the alignment term) or `mmcsal` (with it; needs both
            modalities in one space of one width).
        seed (`int`): seeds every method.
        form, lambda_div, lambda_align, tau, steps, lr, batch_size: the parametric model's settings
            (`vdtrain.selection.parametric.parametric_select`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    n = image.shape[0]
    if text.shape[0] != n:
        raise ValueError(f"{n} image rows but {text.shape[0]} text rows: the pairs must be row-aligned")
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in [1, {n}], got {budget}")
    if method == "random":
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:budget]
    if method in ("kmeans", "kcenter"):
        joint = joint_features(image, text)
        if method == "kcenter":
            return kcenter_greedy(joint, budget)
        centroids = kmeans(joint, budget, seed=seed).centroids
        return assign_nearest([joint], [centroids])
    return parametric_select(
        [image, text],
        budget,
        form=form,
        lambda_div=lambda_div,
        lambda_align=lambda_align if method == "mmcsal" else 0.0,
        tau=tau,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
    )
