"""Coverage-aware keeping and its measures: k-center or score-weighted k-means++ inside k-means clusters (quotas in
proportion to cluster size, so the cost is about `keep · N · D / K` instead of `keep · N · D`), the k-center radius
of a kept set, and cluster occupancy. Torch only."""

from __future__ import annotations

import math

import torch

from vdtrain.selection.cluster import DEFAULT_CHUNK, _row_sq_norms, cluster_quotas, kcenter_greedy, kmeans_pp_features

COVERAGE_METHODS = ("kcenter", "kmeans++")


def default_clusters(n: int) -> int:
    """Clusters used when none are asked for: `round(sqrt(N / 2))`, between 1 and 1000."""
    return max(1, min(1000, round(math.sqrt(n / 2))))


def clustered_keep(
    x: torch.Tensor,
    labels: torch.Tensor,
    keep: int,
    *,
    method: str = "kcenter",
    weights: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Sorted indices of `keep` rows that cover `x`: each k-means cluster keeps its size-proportional share, chosen
    by greedy k-center (`method="kcenter"`) or k-means++ seeding weighted by `weights` (`"kmeans++"`) among its
    members. With a single cluster this is the global selection."""
    if method not in COVERAGE_METHODS:
        raise ValueError(f"unknown coverage method {method!r}: choose one of {', '.join(COVERAGE_METHODS)}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    sizes = torch.bincount(labels)
    quotas = cluster_quotas(sizes, keep)
    kept = []
    for c in torch.nonzero(quotas).flatten().tolist():
        members = (labels == c).nonzero().flatten()
        quota = int(quotas[c])
        if quota == len(members):
            kept.append(members)
        elif method == "kcenter":
            kept.append(members[kcenter_greedy(x[members], quota)])
        else:
            w = None if weights is None else weights[members]
            kept.append(members[kmeans_pp_features(x[members], quota, first="random", weights=w, seed=seed + c)])
    return torch.cat(kept).sort().values if kept else torch.zeros(0, dtype=torch.long)


def kcenter_radius(
    x: torch.Tensor,
    kept: torch.Tensor,
    *,
    max_rows: int | None = 4096,
    seed: int = 0,
    chunk_size: int = 1024,
    kept_chunk: int = DEFAULT_CHUNK,
) -> tuple[float, int]:
    """`(radius, rows measured)`: the largest distance from a row to its nearest kept row (k-center objective).

    Kept rows are at distance 0, so only the others are measured; above `max_rows` of them a seeded sample is, and
    the radius is a lower bound. Memory: one `(chunk_size, kept_chunk)` block.
    """
    mask = torch.zeros(x.shape[0], dtype=torch.bool)
    mask[kept] = True
    others = (~mask).nonzero().flatten()
    if not len(others) or not len(kept):
        return (0.0 if not len(others) else math.inf), len(others)
    if max_rows is not None and len(others) > max_rows:
        others = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[:max_rows]]
    centres = x[kept]
    centre_norms = _row_sq_norms(centres)
    worst = 0.0
    for start in range(0, len(others), chunk_size):
        rows = x[others[start : start + chunk_size]]
        best = torch.full((len(rows),), math.inf, dtype=rows.dtype)
        row_norms = (rows * rows).sum(1)
        for c_start in range(0, len(centres), kept_chunk):
            block = centres[c_start : c_start + kept_chunk]
            sq = row_norms[:, None] - 2.0 * (rows @ block.T) + centre_norms[None, c_start : c_start + kept_chunk]
            best = torch.minimum(best, sq.min(dim=1).values)
        worst = max(worst, float(best.max()))
    return math.sqrt(max(worst, 0.0)), len(others)


def occupancy_entropy(labels: torch.Tensor, num_clusters: int) -> float:
    """Entropy (nats) of the cluster occupancy `p_c = |C_c| / N`: `log K` when every cluster is equally full."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_clusters).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def coverage_metrics(
    x: torch.Tensor, labels: torch.Tensor, kept: torch.Tensor, *, max_rows: int | None = 4096, seed: int = 0
) -> dict:
    """The coverage of a kept set: k-center radius, occupancy entropy before and after, per-cluster kept fraction."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    k = int(labels.max()) + 1 if len(labels) else 0
    sizes = torch.bincount(labels, minlength=k)
    kept_sizes = torch.bincount(labels[kept], minlength=k)
    fractions = (kept_sizes.to(torch.float64) / sizes.clamp_min(1)).tolist()
    radius, measured = kcenter_radius(x, kept, max_rows=max_rows, seed=seed)
    return {
        "clusters": k,
        "kcenter_radius": radius,
        "kcenter_radius_rows": measured,
        "kcenter_radius_exact": measured == len(labels) - len(torch.unique(kept)),
        "occupancy_entropy": {"before": occupancy_entropy(labels, k), "after": occupancy_entropy(labels[kept], k)},
        "clusters_emptied": int(((kept_sizes == 0) & (sizes > 0)).sum()),
        "per_cluster_kept_fraction": [round(f, 6) for f in fractions],
        "min_cluster_kept_fraction": min(fractions) if fractions else None,
    }
