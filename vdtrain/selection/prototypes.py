"""MMCSAL stage 1, projector-only: prototype-contrastive heads trained on frozen features (thesis eqs. 4.1-4.4).

The thesis trains whole encoders; here only two small projector heads (one per modality) are trained on top of
frozen embeddings, which is enough to put two unrelated spaces (e.g. an image model's and a sentence encoder's) into
one shared space where cross-modal cosines, and so stage 2's alignment term, mean something.
Loss: `½ L_cross + ½ L_uni` after `warmup` epochs (`L_cross` alone before), where `L_cross` is the symmetric InfoNCE
of eq. 4.1 and `L_uni` the uni-modal prototype loss of eq. 4.2 with k-means prototypes per modality re-computed
every epoch and per-prototype concentrations `φ = mean distance / log(|C| + α)` rescaled to mean `τ` (eq. 4.3, as
PCL computes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vdtrain.selection.cluster import kmeans


def projector(in_dim: int, out_dim: int) -> torch.nn.Module:
    """A two-layer MLP head, the projector of a contrastive model."""
    return torch.nn.Sequential(torch.nn.Linear(in_dim, out_dim), torch.nn.GELU(), torch.nn.Linear(out_dim, out_dim))


def cross_modal_infonce(first: torch.Tensor, second: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Eq. 4.1: symmetric InfoNCE over a batch of paired, L2-normalised rows."""
    logits = first @ second.T / tau  # (K, K)
    targets = torch.arange(len(first))
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def concentrations(z: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, tau: float, alpha: float = 10.0):
    """Eq. 4.3: per-prototype `φ_c = E_{i∈C}|z_i - p_c| / log(|C| + α)`, rescaled to mean `τ`."""
    k = centroids.shape[0]
    distance = (z - centroids[labels]).norm(dim=1)
    sizes = torch.bincount(labels, minlength=k).to(z.dtype)
    mean_distance = torch.zeros(k, dtype=z.dtype).index_add_(0, labels, distance) / sizes.clamp_min(1)
    phi = mean_distance / torch.log(sizes + alpha)
    spread = sizes > 1
    fill = phi[spread].max() if bool(spread.any()) else torch.tensor(1.0, dtype=z.dtype)
    phi = torch.where(spread, phi, fill).clamp_min(1e-6)  # a cluster of 0 or 1 rows: the loosest one's (as PCL)
    return phi * (tau / phi.mean())


def prototype_loss(z: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Eq. 4.2 for one modality: cross-entropy of each row against its own prototype, logits `cos(z, p_c) / φ_c`."""
    logits = z @ F.normalize(prototypes, dim=1).T / phi[None]
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def _prototypes(z: torch.Tensor, k: int, seed: int, tau: float, alpha: float):
    result = kmeans(z, k, seed=seed, iters=10)
    return result.centroids, result.labels, concentrations(z, result.centroids, result.labels, tau, alpha)


def train_projectors(
    first: torch.Tensor,
    second: torch.Tensor,
    *,
    dim: int = 128,
    epochs: int = 20,
    warmup: int = 5,
    batch_size: int = 256,
    lr: float = 1e-3,
    tau: float = 0.07,
    num_prototypes: int | None = None,
    alpha: float = 10.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train stage-1 projector heads on frozen paired features and return both modalities projected, L2-normalised.

    Args:
        first, second (`Tensor`): `(N, D_1)`, `(N, D_2)` frozen features of the pairs (row-aligned).
        dim (`int`, defaults to 128): width of the shared space.
        epochs / warmup (`int`): passes over the pool; the prototype term joins after `warmup` epochs.
        batch_size (`int`): pairs per InfoNCE batch.
        lr (`float`): AdamW learning rate of the heads (the thesis' projector rate, 1e-3).
        tau (`float`): temperature of both terms.
        num_prototypes (`int`, *optional*): k-means prototypes per modality (default `max(2, min(100, N // 20))`).
        alpha (`float`): smoothing of the concentrations.
        seed (`int`): seeds the heads, the batches and k-means.

    Returns:
        `(N, dim)` projected features of each modality.
    """
    n = first.shape[0]
    if second.shape[0] != n:
        raise ValueError("both modalities need one row per pair")
    torch.manual_seed(seed)  # the heads' initial weights
    generator = torch.Generator().manual_seed(seed)
    heads = torch.nn.ModuleList([projector(first.shape[1], dim), projector(second.shape[1], dim)])
    optimizer = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.02, betas=(0.9, 0.95))
    inputs = (first.float(), second.float())
    k = num_prototypes or max(2, min(100, n // 20))

    def project(rows: torch.Tensor | None = None) -> list[torch.Tensor]:
        return [F.normalize(head(x if rows is None else x[rows]), dim=1) for head, x in zip(heads, inputs)]

    for epoch in range(epochs):
        protos = None
        if epoch >= warmup:
            with torch.no_grad():
                protos = [_prototypes(z, k, seed + epoch, tau, alpha) for z in project()]
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            if len(rows) < 2:
                continue
            z1, z2 = project(rows)
            loss = cross_modal_infonce(z1, z2, tau)
            if protos is not None:
                uni = sum(prototype_loss(z, c, labels[rows], phi) for z, (c, labels, phi) in zip((z1, z2), protos))
                loss = 0.5 * loss + 0.5 * (uni / 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return tuple(project())  # type: ignore[return-value]


def modality_gap(first: torch.Tensor, second: torch.Tensor) -> float:
    """Eq. 4.5's Δ_gap: distance between the centroids of the two L2-normalised modalities."""
    return float((F.normalize(first.float(), dim=1).mean(0) - F.normalize(second.float(), dim=1).mean(0)).norm())
