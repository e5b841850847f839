"""ActiveFT / MMCSAL stage-2 selection (vdtrain/selection/parametric.py): both loss forms against loops over the
equations, and the properties that settle the sign of eq. 4.11's alignment term."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vdtrain.selection.pairs import select_pairs
from vdtrain.selection.parametric import alignment, parametric_select, selection_loss


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _naive_loss(features, params, form, lambda_div, lambda_align, tau):
    """Eqs. 4.7, 4.8, 4.10 and the contrastive form written as loops over rows and parameters."""
    n, b, m = len(features[0]), len(params[0]), len(features)

    def sim(xs, i, ys, j):
        return sum(_cos(xs[q][i], ys[q][j]) for q in range(m)) / m

    nearest = [max(range(b), key=lambda j: sim(features, i, params, j)) for i in range(n)]
    if form == "thesis":
        gap = -sum(sim(features, i, params, nearest[i]) / tau for i in range(n)) / n
        diversity = (
            -sum(
                math.log(sum(math.exp(sim(params, j, params, k) / tau) for k in range(b) if k != j)) for j in range(b)
            )
            / b
        )
        loss = gap - lambda_div * diversity
    else:
        loss = 0.0
        for i in range(n):
            s = nearest[i]
            positive = math.exp(sim(features, i, params, s) / tau)
            negatives = sum(math.exp(sim(params, s, params, k) / tau) for k in range(b) if k != s)
            loss -= math.log(positive / (positive + lambda_div * negatives)) / n
    align = (
        sum(math.log(sum(math.exp(_cos(params[0][j], params[1][k]) / tau) for k in range(b))) for j in range(b)) / b
    )
    return loss - lambda_align * align


@pytest.mark.parametrize("form", ["thesis", "contrastive"])
@pytest.mark.parametrize("lambdas", [(1.0, 0.0), (0.5, 2.0)])
def test_loss_at_fixed_parameters_equals_a_loop_over_the_equations(form, lambdas):
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(9, 4, generator=generator, dtype=torch.float64) for _ in range(2)]
    params = [torch.randn(5, 4, generator=generator, dtype=torch.float64) * 3 for _ in range(2)]  # not unit norm
    lambda_div, lambda_align = lambdas
    ours = selection_loss(features, params, form=form, lambda_div=lambda_div, lambda_align=lambda_align, tau=0.5)
    expected = _naive_loss(features, params, form, lambda_div, lambda_align, 0.5)
    assert float(ours) == pytest.approx(expected, rel=1e-10)


def test_alignment_needs_one_space():
    with pytest.raises(ValueError, match="stage-1 projector"):
        alignment([torch.randn(3, 4), torch.randn(3, 5)], 0.07)
    with pytest.raises(ValueError, match="stage-1 projector"):
        select_pairs(torch.randn(20, 4), torch.randn(20, 5), 3, method="mmcsal", steps=1)
    assert len(select_pairs(torch.randn(20, 4), torch.randn(20, 5), 3, method="activeft", steps=1)) == 3


@pytest.fixture
def one_thread():
    """Hundreds of tiny Adam steps: one thread is several times faster than two fighting over 300 x 8 matrices."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pool(n: int = 300, dim: int = 3):
    """A dense pool in one space: half the pairs aligned (text = image + small noise), half with shuffled texts."""
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
    text = F.normalize(image + 0.1 * torch.randn(n, dim, generator=generator), dim=1)
    bad = torch.randperm(n, generator=generator)[: n // 2]
    text[bad] = text[bad[torch.randperm(len(bad), generator=generator)]]
    return image, text


def _mean_selected_alignment(form: str, lambda_align: float, seeds: int = 6) -> float:
    image, text = _pool()
    total = 0.0
    for seed in range(seeds):
        picks = parametric_select(
            [image, text], 8, form=form, lambda_align=lambda_align, seed=seed, steps=100, lr=0.05
        )
        total += float(F.cosine_similarity(image[picks], text[picks]).mean())
    return total / seeds


@pytest.mark.parametrize("form", ["thesis", "contrastive"])
def test_selected_pairs_alignment_rises_with_lambda_align(form, one_thread):
    # λ_align > 0 maximises A (our sign); λ_align = -1 is eq. 4.11 as printed
    means = [_mean_selected_alignment(form, value) for value in (-1.0, 0.0, 1.0, 4.0)]
    assert means[1] < means[2] < means[3], means
    assert means[0] < means[2], means


def _min_pairwise_distance(image, text, picks) -> float:
    joint = torch.cat([image[picks], text[picks]], dim=1)
    distances = torch.cdist(joint, joint) + torch.eye(len(picks)) * 1e9
    return float(distances.min())


@pytest.mark.parametrize("form", ["thesis", "contrastive"])
def test_min_pairwise_distance_rises_with_lambda_div(form, one_thread):
    image, text = _pool()
    means = []
    for lambda_div in (0.0, 1.0):
        values = [
            _min_pairwise_distance(
                image,
                text,
                parametric_select(
                    [image, text], 8, form=form, lambda_div=lambda_div, lambda_align=0.0, seed=s, steps=100, lr=0.05
                ),
            )
            for s in range(6)
        ]
        means.append(sum(values) / len(values))
    assert means[0] < means[1], means


def test_selection_is_deterministic_given_a_seed_and_mini_batches_work():
    image, text = _pool(120)
    one = parametric_select([image, text], 6, steps=20, lr=0.05, batch_size=32, seed=3)
    two = parametric_select([image, text], 6, steps=20, lr=0.05, batch_size=32, seed=3)
    assert one.tolist() == two.tolist() and len(set(one.tolist())) == 6
    for method in ("random", "kmeans", "kcenter", "activeft", "mmcsal"):
        picks = select_pairs(image, text, 6, method=method, seed=1, steps=5)
        assert len(set(picks.tolist())) == 6
        assert picks.tolist() == select_pairs(image, text, 6, method=method, seed=1, steps=5).tolist()
