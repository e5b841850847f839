"""Selection building blocks (vdtrain/selection/cluster.py) against peers and the formulas they implement."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vdtrain.selection import cluster


def need(module: str):
    """Import a peer from the dev extra: skip without it locally, fail under CI=true."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is a peer from the dev extra")


def _digits() -> np.ndarray:
    return need("sklearn.datasets").load_digits().data.astype(np.float64)


def _blobs(seed: int = 0, per: int = 40, k: int = 4, dim: int = 5, spread: float = 0.1) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=generator, dtype=torch.float64) * 10
    truth = torch.arange(k).repeat_interleave(per)
    x = centres[truth] + spread * torch.randn(k * per, dim, generator=generator, dtype=torch.float64)
    return x, truth


def test_imports_without_transformers():
    code = "import sys, vdtrain.selection.cluster; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("initial", [[0], [3, 500, 1200]])
def test_kcenter_equals_scikit_activeml_coreset(initial):
    pool = need("skactiveml.pool")
    x = _digits()
    y = np.full(len(x), np.nan)
    y[initial] = 0.0
    theirs, _ = pool.k_greedy_center(x, y, batch_size=25, random_state=0)
    ours, radius = cluster.kcenter_greedy(torch.from_numpy(x), 25, initial=initial, chunk_size=300, return_radius=True)
    assert ours.tolist() == theirs.tolist()
    centres = torch.from_numpy(x)[torch.tensor([*initial, *ours.tolist()])]
    brute = torch.cdist(torch.from_numpy(x), centres).min(dim=1).values.max()
    assert radius == pytest.approx(float(brute), rel=1e-9)


def test_kcenter_without_initial_starts_at_the_row_nearest_the_mean():
    x, _ = _blobs()
    picks = cluster.kcenter_greedy(x, 4)
    assert int(picks[0]) == int(torch.cdist(x, x.mean(0, keepdim=True)).argmin())
    # one centre per well-separated blob after the first pick lands in one of them
    _, truth = _blobs()
    assert sorted(truth[picks].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans_pp_probabilities_equal_the_d2_formula_at_every_step(weighted):
    x = torch.from_numpy(_digits()[:300])
    weights = torch.rand(300, generator=torch.Generator().manual_seed(1), dtype=torch.float64) if weighted else None
    generator = torch.Generator().manual_seed(7)
    steps = list(cluster.kmeans_pp_steps(300, 12, cluster.sq_dist_to_row(x), weights=weights, generator=generator))
    chosen = []
    for index, probs in steps:
        if chosen:
            d2 = torch.stack([((x - x[c]) ** 2).sum(1) for c in chosen]).min(0).values
        else:
            d2 = torch.ones(300, dtype=torch.float64)
        mass = d2 * (weights if weighted else 1.0)
        torch.testing.assert_close(probs, mass / mass.sum(), rtol=1e-9, atol=1e-12)
        assert probs[index] > 0
        chosen.append(index)
    assert len(set(chosen)) == 12
    again = cluster.kmeans_pp(
        300, 12, cluster.sq_dist_to_row(x), weights=weights, generator=torch.Generator().manual_seed(7)
    )
    assert again.tolist() == chosen


def test_kmeans_pp_features_first_centre_and_zero_weights():
    x, _ = _blobs()
    picks = cluster.kmeans_pp_features(x, 5, first="largest-norm", seed=3)
    assert int(picks[0]) == int(x.norm(dim=1).argmax())
    assert picks.tolist() == cluster.kmeans_pp_features(x, 5, seed=3).tolist()
    weights = torch.zeros(len(x))
    weights[10:20] = 1.0  # only these rows can be drawn after the first centre
    drawn = cluster.kmeans_pp_features(x, 6, first="random", weights=weights, seed=0)
    assert all(10 <= int(i) < 20 for i in drawn)


def test_factorised_distance_equals_materialised_gradient_embeddings():
    generator = torch.Generator().manual_seed(0)
    n, c = 30, 4
    delta = torch.softmax(torch.randn(n, c, generator=generator, dtype=torch.float64), 1)
    delta[torch.arange(n), delta.argmax(1)] -= 1.0
    z1, z2 = (torch.randn(n, d, generator=generator, dtype=torch.float64) for d in (6, 3))
    w1 = torch.rand(n, generator=generator, dtype=torch.float64)
    block1 = (w1[:, None, None] * delta[:, :, None] * z1[:, None]).flatten(1)  # (N, C * D1)
    g = torch.cat([block1, (delta[:, :, None] * z2[:, None]).flatten(1)], 1)
    sq_dist = cluster.factorised_sq_dist([(delta, z1, w1), (delta, z2, None)])
    for j in (0, 7, 29):
        torch.testing.assert_close(sq_dist(j), ((g - g[j]) ** 2).sum(1), rtol=1e-10, atol=1e-12)


def test_kmeans_recovers_planted_clusters_and_is_seeded():
    x, truth = _blobs(seed=2, k=5)
    result = cluster.kmeans(x, 5, seed=0)
    pairs = set(zip(truth.tolist(), result.labels.tolist()))
    assert len(pairs) == 5  # a bijection between planted and found clusters
    inertia = sum(float(((x[result.labels == c] - result.centroids[c]) ** 2).sum()) for c in range(5))
    assert result.inertia == pytest.approx(inertia)
    again = cluster.kmeans(x, 5, seed=0)
    assert torch.equal(again.labels, result.labels) and torch.equal(again.centroids, result.centroids)
    sub = cluster.kmeans(x, 5, seed=1, sample_size=60)
    assert len(set(zip(truth.tolist(), sub.labels.tolist()))) == 5


def test_cluster_quotas_are_proportional_and_capped():
    quotas = cluster.cluster_quotas(torch.tensor([50, 30, 20]), 10)
    assert quotas.tolist() == [5, 3, 2]
    quotas = cluster.cluster_quotas(torch.tensor([5, 3, 2]), 3)
    assert quotas.tolist() == [1, 1, 1]  # exact 1.5/0.9/0.6: floors 1/0/0, the two left go to remainders .9 and .6
    assert int(cluster.cluster_quotas(torch.tensor([5, 3, 2]), 3, cap=torch.tensor([1, 1, 1])).sum()) == 3
    with pytest.raises(ValueError):
        cluster.cluster_quotas(torch.tensor([1, 1]), 3)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
def test_stratified_remove_never_empties_a_cluster_of_at_least_one_over_f(fraction):
    generator = torch.Generator().manual_seed(int(fraction * 100))
    for trial in range(20):
        labels = torch.randint(0, 8, (int(torch.randint(20, 200, (1,), generator=generator)),), generator=generator)
        labels = labels**2 % 8  # uneven sizes
        scores = torch.randn(len(labels), generator=generator)
        count = min(len(labels), int(fraction * len(labels) + 0.5))
        removed = cluster.stratified_remove(labels, scores, count, lowest=bool(trial % 2))
        assert len(removed) == count and len(set(removed.tolist())) == count
        kept = torch.ones(len(labels), dtype=torch.bool)
        kept[removed] = False
        for c in labels.unique():
            members = labels == c
            if int(members.sum()) >= 1 / fraction:
                assert bool(kept[members].any())
            gone = removed[labels[removed] == c]
            rest = (members & kept).nonzero().flatten()
            if len(gone) and len(rest):  # the removed are the lowest (highest) of their own cluster
                if trial % 2:
                    assert scores[gone].max() <= scores[rest].min()
                else:
                    assert scores[gone].min() >= scores[rest].max()


def test_near_duplicates_keeps_the_first_by_priority():
    x, _ = _blobs(seed=3, per=10, spread=1.0)
    dup = torch.cat([x, x[:5] + 1e-6, x[7:8] * 3.0])  # rows 40..44 copy 0..4; row 45 is row 7 scaled (cosine 1)
    drop = cluster.near_duplicates(dup, 0.9999, chunk_size=7)
    assert drop.nonzero().flatten().tolist() == [40, 41, 42, 43, 44, 45]
    priority = torch.zeros(len(dup))
    priority[40:] = 1.0  # the copies come first now, so the originals go
    drop = cluster.near_duplicates(dup, 0.9999, priority=priority, chunk_size=7)
    assert drop.nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 7]
    labels = cluster.kmeans(dup, 4, seed=0).labels
    assert torch.equal(cluster.near_duplicates(dup, 0.9999, labels=labels, priority=priority), drop)


def test_near_duplicates_chain_is_greedy():
    # a ~ b and b ~ c but not a ~ c: keeping a drops b, so c stays
    angles = torch.tensor([0.0, 0.1, 0.2])
    x = torch.stack([angles.cos(), angles.sin()], 1)
    threshold = float(torch.cos(torch.tensor(0.15)))
    assert cluster.near_duplicates(x, threshold).tolist() == [False, True, False]
