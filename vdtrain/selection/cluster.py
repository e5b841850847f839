"""Clustering building blocks for data selection: k-means++ seeding (D² sampling, optionally weighted), k-center
greedy, seeded Lloyd k-means, per-cluster quotas and near-duplicate removal.

Only torch is imported. Everything is deterministic given a seed (or a `torch.Generator`), and memory beyond the
features themselves is linear in the number of rows: distances are computed one centre, or one row chunk, at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch

SqDist = Callable[[int], torch.Tensor]
DEFAULT_CHUNK = 16384


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(0 if seed is None else int(seed))
    return generator


def _row_sq_norms(x: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    norms = torch.empty(x.shape[0], dtype=x.dtype)
    for start in range(0, x.shape[0], chunk_size):
        block = x[start : start + chunk_size]
        norms[start : start + chunk_size] = (block * block).sum(dim=1)
    return norms


def sq_dist_to_row(x: torch.Tensor, sq_norms: torch.Tensor | None = None) -> SqDist:
    """`sq_dist(j)` for a feature matrix: the `(N,)` squared Euclidean distances of every row of `x` to row `j`.

    Uses `|a|² - 2 a·b + |b|²` (one matrix-vector product, no `(N, D)` temporary), clamped at 0.
    """
    norms = _row_sq_norms(x) if sq_norms is None else sq_norms

    def sq_dist(j: int) -> torch.Tensor:
        return (norms - 2.0 * (x @ x[j]) + norms[j]).clamp_min_(0.0)

    return sq_dist


def d2_probabilities(min_sq: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """k-means++ sampling distribution: `p_i ∝ w_i · D(i)²` (uniform over rows with `D > 0` if every term is 0)."""
    mass = min_sq.to(torch.float64)
    if weights is not None:
        mass = mass * weights.to(torch.float64)
    total = mass.sum()
    if not torch.isfinite(total) or total <= 0:  # every remaining row sits on a centre (duplicates): spread evenly
        mass = (min_sq > 0).to(torch.float64)
        total = mass.sum()
        if total <= 0:
            mass = torch.ones_like(mass)
            total = mass.sum()
    return mass / total


def kmeans_pp_steps(
    n: int,
    k: int,
    sq_dist: SqDist,
    *,
    first: int | None = None,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """k-means++ seeding one centre at a time: yields `(index, probabilities it was drawn from)`.

    The first centre is `first`, else drawn ∝ `weights` (uniform without); each later centre is drawn from
    `d2_probabilities` of the squared distance to the nearest chosen centre. See `kmeans_pp`.
    """
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if weights.numel() != n or bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
            raise ValueError(f"weights must be {n} finite non-negative numbers")
    if k == 0:
        return
    chosen = torch.zeros(n, dtype=torch.bool)
    if first is None:
        probs = d2_probabilities(torch.ones(n, dtype=torch.float64), weights)
        index = int(torch.multinomial(probs, 1, generator=generator))
    else:
        if not 0 <= first < n:
            raise ValueError(f"first must be a row index in [0, {n}), got {first}")
        index, probs = int(first), torch.nn.functional.one_hot(torch.tensor(first), n).to(torch.float64)
    yield index, probs
    chosen[index] = True
    min_sq = sq_dist(index).to(torch.float64).reshape(-1)
    for _ in range(k - 1):
        min_sq[chosen] = 0.0
        probs = d2_probabilities(min_sq, weights)
        if bool((probs[chosen] > 0).any()):  # the uniform fallback of a fully duplicated pool
            probs = (~chosen).to(torch.float64) / float((~chosen).sum())
        index = int(torch.multinomial(probs, 1, generator=generator))
        yield index, probs
        chosen[index] = True
        torch.minimum(min_sq, sq_dist(index).to(torch.float64).reshape(-1), out=min_sq)


def kmeans_pp(
    n: int,
    k: int,
    sq_dist: SqDist,
    *,
    first: int | None = None,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of `k` distinct rows picked by k-means++ seeding (D² sampling), in pick order.

    Generic in the distance: `sq_dist(j)` returns the `(n,)` squared distances of every row to row `j`, so
    factorised distances (BADGE gradient embeddings, `factorised_sq_dist`) never need the embeddings materialised.

    Args:
        n (`int`): number of rows.
        k (`int`): number of centres to pick.
        sq_dist (`Callable[[int], Tensor]`): squared distances of all rows to row `j`.
        first (`int`, *optional*): index of the first centre; drawn (∝ `weights`, else uniformly) when `None`.
        weights (`Tensor`, *optional*): `(n,)` non-negative per-row weights multiplying the D² probabilities.
        generator (`torch.Generator`, *optional*): source of the draws; the global RNG when `None`.
    """
    steps = kmeans_pp_steps(n, k, sq_dist, first=first, weights=weights, generator=generator)
    return torch.tensor([index for index, _ in steps], dtype=torch.long)


def kmeans_pp_features(
    x: torch.Tensor,
    k: int,
    *,
    first: str = "largest-norm",
    weights: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """k-means++ seeding on a feature matrix `x` `(N, D)`: the first centre is the row of largest norm (BADGE and
    BMMAL's choice) or a seeded draw (`first="random"`), then weighted D² sampling. Returns `(k,)` row indices."""
    if first not in ("largest-norm", "random"):
        raise ValueError(f"first must be 'largest-norm' or 'random', got {first!r}")
    x = torch.as_tensor(x)
    norms = _row_sq_norms(x)
    start = int(torch.argmax(norms)) if first == "largest-norm" else None
    return kmeans_pp(x.shape[0], k, sq_dist_to_row(x, norms), first=start, weights=weights, generator=_generator(seed))


def factorised_sq_dist(blocks: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]) -> SqDist:
    """`sq_dist(j)` over BADGE-style gradient embeddings `g_i = ⊕_m w_mi · vec(δ_mi ⊗ z_mi)` without building them.

    Each block is `(delta (N, C), z (N, D_m), w (N,) or None)`; the exact identity
    `|g_a - g_b|² = Σ_m w_a²|δ_a|²|z_a|² - 2 w_a w_b (δ_a·δ_b)(z_a·z_b) + w_b²|δ_b|²|z_b|²` costs O(N (C + D)) a call.
    """
    prepared = []
    for delta, z, w in blocks:
        delta64, z64 = delta.to(torch.float64), z.to(torch.float64)
        w64 = torch.ones(delta.shape[0], dtype=torch.float64) if w is None else w.to(torch.float64).reshape(-1)
        self_sq = w64.square() * delta64.square().sum(1) * z64.square().sum(1)
        prepared.append((delta64, z64, w64, self_sq))

    def sq_dist(j: int) -> torch.Tensor:
        total = torch.zeros(prepared[0][0].shape[0], dtype=torch.float64)
        for delta, z, w, self_sq in prepared:
            total += self_sq + self_sq[j] - 2.0 * w * w[j] * (delta @ delta[j]) * (z @ z[j])
        return total.clamp_min_(0.0)

    return sq_dist


def _initial_min_sq(x: torch.Tensor, norms: torch.Tensor, centres: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Squared distance of every row to its nearest row of `centres` (indices), in row chunks."""
    min_sq = torch.empty(x.shape[0], dtype=x.dtype)
    c, c_norms = x[centres], norms[centres]
    for start in range(0, x.shape[0], chunk_size):
        block = x[start : start + chunk_size]
        sq = norms[start : start + chunk_size, None] - 2.0 * (block @ c.T) + c_norms[None]
        min_sq[start : start + chunk_size] = sq.min(dim=1).values.clamp_min_(0.0)
    return min_sq


def kcenter_greedy(
    x: torch.Tensor,
    budget: int,
    *,
    initial: Sequence[int] | torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    return_radius: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, float]:
    """Greedy k-center (Core-Set): repeatedly pick the row farthest from every chosen centre.

    Args:
        x (`Tensor`): `(N, D)` features.
        budget (`int`): number of new rows to pick.
        initial (`Sequence[int]`, *optional*): rows already chosen (labelled); without them the first pick is the
            row nearest the mean.
        chunk_size (`int`): rows per distance block for the initial set; extra memory is O(N + chunk · |initial|).
        return_radius (`bool`): also return the covering radius (max distance to the nearest centre) after.

    Returns:
        `(budget,)` row indices in pick order (ties go to the lower index), and the radius if asked.
    """
    x = torch.as_tensor(x)
    n = x.shape[0]
    initial_t = torch.as_tensor([] if initial is None else initial, dtype=torch.long).reshape(-1)
    if not 0 <= budget <= n - initial_t.numel():
        raise ValueError(f"budget must be in [0, {n - initial_t.numel()}], got {budget}")
    norms = _row_sq_norms(x, chunk_size)
    sq_dist = sq_dist_to_row(x, norms)
    picks: list[int] = []
    if initial_t.numel():
        min_sq = _initial_min_sq(x, norms, initial_t, chunk_size)
        min_sq[initial_t] = -1.0
    elif budget:
        mean = x.mean(dim=0)
        first = int(torch.argmin(norms - 2.0 * (x @ mean)))
        picks.append(first)
        min_sq = sq_dist(first)
        min_sq[first] = -1.0
    else:
        min_sq = torch.full((n,), -1.0, dtype=x.dtype)
    while len(picks) < budget:
        index = int(torch.argmax(min_sq))
        picks.append(index)
        torch.minimum(min_sq, sq_dist(index), out=min_sq)
        min_sq[index] = -1.0
    result = torch.tensor(picks, dtype=torch.long)
    if return_radius:
        return result, math.sqrt(max(float(min_sq.max()), 0.0)) if n else 0.0
    return result


class KMeansResult(NamedTuple):
    """Centroids `(K, D)`, the label of every row `(N,)` and the sum of squared distances to the own centroid."""

    centroids: torch.Tensor
    labels: torch.Tensor
    inertia: float


def nearest_centroid(
    x: torch.Tensor, centroids: torch.Tensor, chunk_size: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(labels, squared distances)` of every row of `x` to its nearest centroid, in row chunks."""
    labels = torch.empty(x.shape[0], dtype=torch.long)
    sq = torch.empty(x.shape[0], dtype=centroids.dtype)
    c_norms = (centroids * centroids).sum(dim=1)
    for start in range(0, x.shape[0], chunk_size):
        block = x[start : start + chunk_size].to(centroids.dtype)
        d = c_norms[None] - 2.0 * (block @ centroids.T)
        best = d.min(dim=1)
        labels[start : start + chunk_size] = best.indices
        sq[start : start + chunk_size] = (best.values + (block * block).sum(dim=1)).clamp_min_(0.0)
    return labels, sq


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    seed: int = 0,
    iters: int = 20,
    tol: float = 1e-6,
    sample_size: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> KMeansResult:
    """Lloyd k-means with k-means++ initialisation, deterministic given `seed`.

    Args:
        x (`Tensor`): `(N, D)` features (float32 or float64; the centroids keep that dtype).
        k (`int`): number of clusters.
        seed (`int`): seeds the initial draws and the subsample.
        iters (`int`): maximum Lloyd iterations.
        tol (`float`): stop when the inertia improves by less than this relative amount.
        sample_size (`int`, *optional*): fit the centroids on a seeded subsample of this many rows (large N), then
            label every row.
        chunk_size (`int`): rows per distance block.
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.float32)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    generator = _generator(seed)
    fit = x
    if sample_size is not None and sample_size < n:
        fit = x[torch.randperm(n, generator=generator)[: max(sample_size, k)].sort().values]
    norms = _row_sq_norms(fit, chunk_size)
    centroids = fit[kmeans_pp(fit.shape[0], k, sq_dist_to_row(fit, norms), generator=generator)].clone()
    previous = math.inf
    for _ in range(iters):
        labels, sq = nearest_centroid(fit, centroids, chunk_size)
        inertia = float(sq.sum())
        sums = torch.zeros_like(centroids).index_add_(0, labels, fit.to(centroids.dtype))
        counts = torch.bincount(labels, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():  # re-seed an empty cluster with the rows farthest from their centroids
            far = torch.topk(sq, empty.numel()).indices
            sums[empty], counts[empty] = fit[far].to(centroids.dtype), 1
        centroids = sums / counts[:, None].to(centroids.dtype)
        if previous - inertia <= tol * max(previous, 1e-30) and not empty.numel():
            break
        previous = inertia
    labels, sq = nearest_centroid(x, centroids, chunk_size)
    return KMeansResult(centroids, labels, float(sq.sum()))


def cluster_quotas(sizes: torch.Tensor, total: int, *, cap: torch.Tensor | None = None) -> torch.Tensor:
    """Split `total` over clusters in proportion to `sizes` (largest remainder, ties to the lower cluster), never
    giving a cluster more than `cap` (default: its size). Returns `(K,)` counts summing to `total`."""
    sizes = torch.as_tensor(sizes, dtype=torch.long)
    cap = sizes.clone() if cap is None else torch.minimum(torch.as_tensor(cap, dtype=torch.long), sizes)
    if not 0 <= total <= int(cap.sum()):
        raise ValueError(f"total must be in [0, {int(cap.sum())}], got {total}")
    n = int(sizes.sum())
    exact = sizes.to(torch.float64) * (total / n) if n else torch.zeros(len(sizes), dtype=torch.float64)
    quotas = torch.minimum(exact.floor().to(torch.long), cap)
    while int(quotas.sum()) < total:  # hand out the rest by largest remainder among clusters with room
        room = quotas < cap
        remainder = torch.where(room, exact - quotas.to(torch.float64), torch.tensor(-math.inf, dtype=torch.float64))
        need = total - int(quotas.sum())
        order = torch.sort(-remainder, stable=True).indices[: min(need, int(room.sum()))]
        quotas[order] += 1
    return quotas


def quota_select(labels: torch.Tensor, scores: torch.Tensor, quotas: torch.Tensor, *, largest: bool) -> torch.Tensor:
    """Sorted row indices: in each cluster `c`, the `quotas[c]` rows of largest (or smallest) score; ties go to the
    lower index."""
    labels, scores = torch.as_tensor(labels, dtype=torch.long), torch.as_tensor(scores, dtype=torch.float64)
    key = -scores if largest else scores
    order = torch.sort(key, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]  # grouped by cluster, by score inside
    sizes = torch.bincount(labels, minlength=len(quotas))
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(len(order)) - starts[labels[order]]
    return order[rank < quotas[labels[order]]].sort().values


def stratified_remove(labels: torch.Tensor, scores: torch.Tensor, count: int, *, lowest: bool = True) -> torch.Tensor:
    """Sorted indices of `count` rows to remove: each cluster gives its lowest (or highest) scoring rows in
    proportion to its size, and no cluster is emptied while another can still give."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    sizes = torch.bincount(labels)
    cap = (sizes - 1).clamp_min(0)
    if count > int(cap.sum()):  # more than every cluster but one member each: then clusters may empty
        cap = sizes
    quotas = cluster_quotas(sizes, count, cap=cap)
    return quota_select(labels, scores, quotas, largest=not lowest)


def near_duplicates(
    x: torch.Tensor,
    threshold: float,
    *,
    labels: torch.Tensor | None = None,
    priority: torch.Tensor | None = None,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Boolean `(N,)` mask of near-duplicates to drop: walking rows by descending `priority` (index order without),
    a row is dropped when its cosine similarity to an earlier kept row is at least `threshold`.

    With `labels` (k-means clusters) only rows of one cluster are compared, which keeps large N tractable; memory is
    one `(chunk, chunk)` similarity block plus the duplicate pairs found.
    """
    x = torch.as_tensor(x)
    n = x.shape[0]
    unit = torch.nn.functional.normalize(x.to(torch.float32), dim=1)
    order = torch.arange(n) if priority is None else torch.sort(-torch.as_tensor(priority), stable=True).indices
    groups = [order] if labels is None else [order[labels[order] == c] for c in torch.unique(labels)]
    drop = torch.zeros(n, dtype=torch.bool)
    for group in groups:
        m = len(group)
        pairs = []
        for row_start in range(0, m, chunk_size):
            rows = unit[group[row_start : row_start + chunk_size]]
            for col_start in range(row_start, m, chunk_size):
                sims = rows @ unit[group[col_start : col_start + chunk_size]].T  # (chunk, chunk)
                hit = (sims >= threshold).nonzero()
                hit[:, 0] += row_start
                hit[:, 1] += col_start
                pairs.append(hit[hit[:, 1] > hit[:, 0]])
        found = torch.cat(pairs) if pairs else torch.zeros(0, 2, dtype=torch.long)
        if not len(found):
            continue
        found = found[torch.sort(found[:, 0], stable=True).indices]
        firsts, counts = torch.unique_consecutive(found[:, 0], return_counts=True)
        removed = torch.zeros(m, dtype=torch.bool)
        for first, later in zip(firsts.tolist(), torch.split(found[:, 1], counts.tolist())):
            if not removed[first]:  # a kept row removes everything near it that comes after it
                removed[later] = True
        drop[group[removed]] = True
    return drop
