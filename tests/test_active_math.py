"""BMMAL's math: gradient embeddings equal autograd, factorised distances equal materialised ones, Shapley values equal
permutation enumeration (exact and Monte Carlo), weights and dominance by hand, and guidelines G1-G3."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vdtrain.selection.active import (
    BMMAL,
    GradientEmbeddings,
    Outputs,
    bmmal_weights,
    contributions,
    dominance,
    modality_shapley,
    shapley_exact,
    shapley_permutations,
)
from vdtrain.selection.active.shapley import fusion_value


def _head_outputs(n=12, widths=(5, 3), classes=4, seed=0, scales=None) -> Outputs:
    """Outputs of a random linear fusion head on random features (probabilities computed from them)."""
    g = torch.Generator().manual_seed(seed)
    features = {f"m{i}": torch.randn(n, w, generator=g, dtype=torch.float64) for i, w in enumerate(widths)}
    weight = torch.randn(classes, sum(widths), generator=g, dtype=torch.float64)
    if scales is not None:
        blocks = torch.split(weight, list(widths), dim=1)
        weight = torch.cat([s * b for s, b in zip(scales, blocks)], dim=1)
    bias = torch.randn(classes, generator=g, dtype=torch.float64)
    probs = (torch.cat(list(features.values()), dim=1) @ weight.T + bias).softmax(dim=1)
    return Outputs(probs=probs, features=features, fusion_weight=weight, fusion_bias=bias)


def _value_by_zeroing(outputs: Outputs, present: tuple[bool, ...]) -> torch.Tensor:
    """V(S) computed directly: absent modalities' features set to zero, the fusion head run, p of argmax p_mm."""
    blocks = [z if keep else torch.zeros_like(z) for z, keep in zip(outputs.features.values(), present)]
    logits = torch.cat(blocks, dim=1) @ outputs.fusion_weight.T + outputs.fusion_bias
    pseudo = outputs.probs.argmax(dim=1, keepdim=True)
    return logits.softmax(dim=1).gather(1, pseudo).squeeze(1)


def test_gradient_embedding_equals_autograd_block_scaled():
    outputs = _head_outputs()
    weights = torch.rand(12, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    embedded = GradientEmbeddings(outputs, weights).materialise().reshape(12, 4, 8)
    z = torch.cat(list(outputs.features.values()), dim=1)
    for i in range(12):
        weight = outputs.fusion_weight.clone().requires_grad_(True)
        logits = z[i] @ weight.T + outputs.fusion_bias
        loss = F.cross_entropy(logits[None], logits.argmax()[None])  # CE for the pseudo-label ŷ
        (grad,) = torch.autograd.grad(loss, weight)
        scale = torch.cat([weights[i, 0].repeat(5), weights[i, 1].repeat(3)])  # block m's columns times w_m
        torch.testing.assert_close(embedded[i], grad * scale, rtol=1e-12, atol=1e-12)
    badge = GradientEmbeddings(outputs).materialise().reshape(12, 4, 8)
    weight = outputs.fusion_weight.clone().requires_grad_(True)
    loss = F.cross_entropy((z[3] @ weight.T + outputs.fusion_bias)[None], outputs.probs[3].argmax()[None])
    torch.testing.assert_close(badge[3], torch.autograd.grad(loss, weight)[0], rtol=1e-12, atol=1e-12)


def test_factorised_distances_equal_materialised():
    outputs = _head_outputs(n=30, widths=(6, 4, 3), classes=5)
    weights = torch.rand(30, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for embeddings in (GradientEmbeddings(outputs), GradientEmbeddings(outputs, weights)):
        g = embeddings.materialise()
        sq_dist = embeddings.sq_dist_fn()
        full = torch.cdist(g, g) ** 2
        for j in (0, 7, 29):
            torch.testing.assert_close(sq_dist(j), full[:, j], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(embeddings.sq_norms(), (g**2).sum(dim=1), rtol=1e-12, atol=1e-12)


def test_shapley_two_modalities_equals_eq_3_10():
    outputs = _head_outputs()
    phi = modality_shapley(outputs)
    v = {mask: _value_by_zeroing(outputs, mask) for mask in itertools.product((False, True), repeat=2)}
    phi1 = 0.5 * (v[True, True] - v[False, True] + v[True, False] - v[False, False])
    phi2 = 0.5 * (v[True, True] - v[True, False] + v[False, True] - v[False, False])
    torch.testing.assert_close(phi, torch.stack([phi1, phi2], dim=1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(phi.sum(dim=1), v[True, True] - v[False, False])  # efficiency


def _permutation_enumeration(outputs: Outputs, m: int) -> torch.Tensor:
    """Shapley values as the mean marginal contribution over all m! orders."""
    total = torch.zeros(len(outputs.probs), m, dtype=torch.float64)
    orders = list(itertools.permutations(range(m)))
    for order in orders:
        present = [False] * m
        before = _value_by_zeroing(outputs, tuple(present))
        for i in order:
            present[i] = True
            after = _value_by_zeroing(outputs, tuple(present))
            total[:, i] += after - before
            before = after
    return total / len(orders)


def test_shapley_exact_and_monte_carlo_equal_permutation_enumeration_at_three_modalities():
    outputs = _head_outputs(n=100, widths=(4, 3, 5), classes=3, seed=3)
    reference = _permutation_enumeration(outputs, 3)
    value, m = fusion_value(outputs)
    torch.testing.assert_close(shapley_exact(value, m), reference, rtol=1e-12, atol=1e-12)
    estimate, stderr = shapley_permutations(value, m, num_permutations=200, generator=torch.Generator().manual_seed(0))
    deviation = (estimate - reference).abs()
    assert bool((deviation <= 3 * stderr + 1e-12).double().mean() >= 0.99)  # within 3σ (≥ 99% of 300 values)
    assert bool((deviation <= 5 * stderr + 1e-12).all())
    assert float(deviation.max()) > 0  # it is an estimate, not the exact enumeration
    # above `exact_up_to` modalities, modality_shapley estimates
    mc = modality_shapley(outputs, exact_up_to=2, num_permutations=200, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mc, estimate)


def test_contributions_weights_and_dominance_by_hand():
    phi = torch.tensor([[0.3, -0.1], [0.0, 0.0], [0.2, 0.2], [0.1, 0.3, 0.6][:2]], dtype=torch.float64)
    big = contributions(phi)
    torch.testing.assert_close(big, torch.tensor([[0.75, 0.25], [0.5, 0.5], [0.5, 0.5], [0.25, 0.75]]).double())
    torch.testing.assert_close(bmmal_weights(big), torch.tensor([[1.0, 0.5], [1, 1], [1, 1], [0.5, 1.0]]).double())
    torch.testing.assert_close(dominance(big), torch.tensor([0.5, 0.0, 0.0, 0.5]).double())
    three = contributions(torch.tensor([[0.1, 0.3, -0.6]], dtype=torch.float64))  # Φ = .1, .3, .6
    torch.testing.assert_close(bmmal_weights(three), torch.tensor([[0.5, 0.7, 1.0]]).double())
    torch.testing.assert_close(dominance(three), torch.tensor([0.5 + 0.3]).double())


@pytest.fixture(scope="module")
def dominated():
    """A pool where modality 1 (text) dominates: unit-norm features, its head block 1.5x the image block."""
    g = torch.Generator().manual_seed(5)
    n, classes = 400, 5
    labels = torch.randint(0, classes, (n,), generator=g)
    protos = [torch.randn(classes, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    features = {}
    for name, proto, noise in (("image", protos[0], 1.2), ("text", protos[1], 0.9)):
        z = proto[labels] + noise * torch.randn(n, 16, generator=g, dtype=torch.float64)
        features[name] = F.normalize(z, dim=1)
    weight = torch.cat([1.0 * F.normalize(protos[0], dim=1), 1.5 * F.normalize(protos[1], dim=1)], dim=1)
    bias = torch.zeros(classes, dtype=torch.float64)
    probs = (torch.cat(list(features.values()), dim=1) @ weight.T).softmax(dim=1)
    outputs = Outputs(probs=probs, features=features, fusion_weight=weight, fusion_bias=bias)
    phi = contributions(modality_shapley(outputs))
    weights = BMMAL().weights(outputs)
    cal = GradientEmbeddings(outputs).sq_norms().sqrt()
    bal = GradientEmbeddings(outputs, weights).sq_norms().sqrt()
    return outputs, phi, weights, cal, bal


def test_guideline_1_lower_dominance_scores_higher_at_equal_badge_score(dominated):
    outputs, phi, weights, cal, bal = dominated
    rho = dominance(phi)
    ratio = bal / cal  # unit-norm blocks: a_BMMAL / a_CAL = sqrt((1 + (1 - ρ)²) / 2)
    order = torch.sort(rho).indices
    assert bool((ratio[order].diff() <= 1e-12).all())  # lower ρ, higher score at the same a_CAL
    torch.testing.assert_close(ratio, ((1 + (1 - rho) ** 2) / 2).sqrt())
    assert float(rho.max() - rho.min()) > 0.5  # the pool spans balanced and dominated samples


def test_guideline_2_weak_modality_subset_gains_relative_score(dominated):
    outputs, phi, weights, cal, bal = dominated
    assert float(phi[:, 1].mean()) > float(phi[:, 0].mean())  # text is the stronger modality over the pool
    weak, strong = phi[:, 0] >= phi[:, 1], phi[:, 0] < phi[:, 1]
    assert int(weak.sum()) >= 10 and int(strong.sum()) >= 10
    before = cal[weak].mean() / cal[strong].mean()
    after = bal[weak].mean() / bal[strong].mean()
    assert float(after) > float(before)  # eq. 3.8
    assert float(dominance(phi)[strong].mean()) > float(dominance(phi)[weak].mean())  # the mechanism (Fig. 3.5)


def test_guideline_3_dominant_modality_keeps_the_larger_weight(dominated):
    outputs, phi, weights, cal, bal = dominated
    assert bool((weights.argmax(dim=1) == phi.argmax(dim=1)).all())
    torch.testing.assert_close(weights.max(dim=1).values, torch.ones(len(weights), dtype=torch.float64))
    badge, bmmal = GradientEmbeddings(outputs), GradientEmbeddings(outputs, weights)
    block_cal = badge.materialise().reshape(len(cal), 5, 32)
    block_bal = bmmal.materialise().reshape(len(cal), 5, 32)
    for m, cols in enumerate((slice(0, 16), slice(16, 32))):  # each block keeps w_m of its BADGE magnitude
        scale = block_bal[:, :, cols].norm(dim=(1, 2)) / block_cal[:, :, cols].norm(dim=(1, 2))
        torch.testing.assert_close(scale, weights[:, m])
    assert math.isclose(float(weights.min()), float(1 - dominance(phi).max()), rel_tol=1e-9)


def test_badge_and_bmmal_start_at_the_largest_norm_and_pick_distinct_samples(dominated):
    from vdtrain.selection.active import Query
    from vdtrain.selection.active.strategies import badge_strategy

    outputs, phi, weights, cal, bal = dominated
    query = Query(candidates=outputs)
    badge = badge_strategy(query, 25, torch.Generator().manual_seed(0))
    bmmal = BMMAL()(query, 25, torch.Generator().manual_seed(0))
    assert badge[0] == int(cal.argmax()) and bmmal[0] == int(bal.argmax())
    assert len(set(badge)) == 25 and len(set(bmmal)) == 25
    assert badge == badge_strategy(query, 25, torch.Generator().manual_seed(0))  # seeded
    assert badge != bmmal  # the weights change the picks
