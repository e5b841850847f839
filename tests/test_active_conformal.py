"""CCMA's parts: JS divergence and entropy equal scipy's, split-conformal sets equal crepes' and cover 1 - α over
1,000 random splits, the target-size mode hits its size, the score by hand, the selection, and the zero-shot teacher
equals the dual encoder's own logits."""

from __future__ import annotations

import importlib
import math
import os

import numpy as np
import pytest
import torch

from vdtrain.selection.active import CCMA, Outputs, Query
from vdtrain.selection.active.conformal import (
    disagreement_scores,
    entropy,
    js_divergence,
    nonconformity,
    prediction_sets,
    split_conformal_threshold,
    target_size_threshold,
)


def _needs(name: str):
    """The peer package `name` (dev extra); skipped where it is missing, a failure under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        return importlib.import_module(name)
    return pytest.importorskip(name)


def _probs(n: int, classes: int, seed: int, sharpness: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (sharpness * torch.randn(n, classes, generator=g, dtype=torch.float64)).softmax(dim=1)


def test_js_divergence_and_entropy_equal_scipy():
    distance = _needs("scipy.spatial.distance")
    stats = _needs("scipy.stats")
    p, q = _probs(50, 7, 0), _probs(50, 7, 1)
    p[3, 2:] = 0  # zeros: 0 log 0 = 0
    p[3] /= p[3].sum()
    ours_js, ours_h = js_divergence(p, q), entropy(p)
    for i in range(50):
        assert math.isclose(float(ours_js[i]), distance.jensenshannon(p[i].numpy(), q[i].numpy()) ** 2, rel_tol=1e-9)
        assert math.isclose(float(ours_h[i]), stats.entropy(p[i].numpy()), rel_tol=1e-12)


def _labelled_pool(n=2000, classes=10, seed=0):
    probs = _probs(n, classes, seed)
    labels = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed + 1)).squeeze(1)
    return probs, labels


def test_split_conformal_sets_equal_crepes():
    crepes_base = _needs("crepes.base")
    probs, labels = _labelled_pool()
    g = torch.Generator().manual_seed(0)
    for alpha in (0.05, 0.1, 0.2):
        order = torch.randperm(len(probs), generator=g)
        cal, test = order[:150], order[150:]
        threshold = split_conformal_threshold(probs[cal], labels[cal], alpha)
        alphas_cal = nonconformity(probs[cal]).gather(1, labels[cal, None]).squeeze(1).numpy()
        peer = crepes_base.ConformalClassifier().fit(alphas_cal)
        expected = peer.predict_set(nonconformity(probs[test]).numpy(), confidence=1 - alpha, smoothing=False)
        ours = prediction_sets(probs[test], threshold).numpy().astype(int)
        assert (ours == expected).all()
        assert 1.0 < ours.sum(axis=1).mean() < probs.shape[1]  # informative sets, not trivial ones


def test_split_conformal_coverage_over_1000_random_splits():
    probs, labels = _labelled_pool(n=3000, classes=10, seed=4)
    alpha, n_cal = 0.1, 104  # (n+1)(1-α) = 94.5: the expected coverage 95/105 sits inside the band
    true_scores = nonconformity(probs).gather(1, labels[:, None]).squeeze(1)
    g = torch.Generator().manual_seed(7)
    coverage = []
    for _ in range(1000):
        order = torch.randperm(len(probs), generator=g)
        threshold = split_conformal_threshold(probs[order[:n_cal]], labels[order[:n_cal]], alpha)
        coverage.append(float((true_scores[order[n_cal:]] <= threshold).double().mean()))
    mean = float(np.mean(coverage))
    assert 1 - alpha <= mean <= 1 - alpha + 1 / (n_cal + 1)
    assert math.isinf(split_conformal_threshold(probs[:5], labels[:5], 0.1))  # 5 samples cannot give 90%


def test_target_size_mode_hits_the_mean_set_size_without_coverage_guarantee():
    probs, labels = _labelled_pool()
    for target in (1.5, 3.0, 5.0):
        sets = prediction_sets(probs, target_size_threshold(probs, target))
        assert abs(float(sets.sum(dim=1).double().mean()) - target) <= 2 / len(probs)


def test_disagreement_score_by_hand():
    student, teacher = _probs(6, 5, 2), _probs(6, 5, 3)
    sets_s, sets_t = prediction_sets(student, 1.2), prediction_sets(teacher, 0.9)
    scores = disagreement_scores(student, teacher, sets_s, sets_t)
    for i in range(6):
        union = (sets_s[i] | sets_t[i]).numpy()
        if not union.any():
            union[:] = True
        ps, pt = student[i].numpy() * union, teacher[i].numpy() * union
        ps, pt = ps / ps.sum(), pt / pt.sum()
        mid = (ps + pt) / 2
        kl = lambda a, mid=mid: sum(x * math.log(x / y) for x, y in zip(a, mid) if x > 0)  # noqa: E731
        w = teacher[i].max() / (teacher[i].max() + student[i].max())
        h = -sum(x * math.log(x) for x in student[i].tolist())
        assert math.isclose(float(scores[i]), float(w * 0.5 * (kl(ps) + kl(pt)) + (1 - w) * h), rel_tol=1e-9)


def _clustered_query(n_per=30, centres=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 10 * torch.randn(centres, 6, generator=g, dtype=torch.float64)
    features = means.repeat_interleave(n_per, 0) + 0.1 * torch.randn(centres * n_per, 6, generator=g)
    n = len(features)
    outputs = Outputs(probs=_probs(n, classes, seed + 1), features={"image": features})
    return Query(candidates=outputs, candidate_positions=torch.arange(n)), _probs(n, classes, seed + 2)


def test_ccma_top_kappa_b_then_one_per_cluster():
    query, teacher = _clustered_query()
    scores = CCMA(teacher, mode="target-size", student_size=2, teacher_size=1).scores(query)
    picks = CCMA(teacher, mode="target-size", student_size=2, teacher_size=1, kappa=1)(
        query, 4, torch.Generator().manual_seed(0)
    )
    assert sorted(picks) == sorted(torch.sort(-scores, stable=True).indices[:4].tolist())  # κ = 1: the top b
    picks = CCMA(teacher, mode="target-size", student_size=2, teacher_size=1, kappa=100)(
        query, 4, torch.Generator().manual_seed(0)
    )
    assert sorted(p // 30 for p in picks) == [0, 1, 2, 3]  # κ·b covers the pool: one sample per cluster
    sub = CCMA(teacher, mode="target-size", space=query.candidates.features["image"], subpool=40, subpool_clusters=4)
    rows = sub._subpool(torch.arange(120), torch.Generator().manual_seed(0))
    assert len(rows) == 40 and sorted(torch.bincount(rows // 30).tolist()) == [10, 10, 10, 10]


def test_ccma_conformal_mode_calibrates_on_labelled_samples():
    probs, labels = _labelled_pool(n=400, classes=4, seed=9)
    features = {"image": torch.randn(400, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)}
    outputs = Outputs(probs=probs, features=features)
    teacher = _probs(400, 4, 11)
    labelled, candidates = torch.arange(200), torch.arange(200, 400)
    query = Query(
        candidates=outputs.subset(candidates),
        labelled=outputs.subset(labelled),
        labels=labels[labelled],
        candidate_positions=candidates,
        labelled_positions=labelled,
    )
    strategy = CCMA(teacher, alpha=0.2)
    t_student, t_teacher = strategy.thresholds(query, probs[candidates], teacher[candidates])
    assert t_student == split_conformal_threshold(probs[labelled], labels[labelled], 0.2)
    assert t_teacher == split_conformal_threshold(teacher[labelled], labels[labelled], 0.2)
    picks = strategy(query, 5, torch.Generator().manual_seed(0))
    assert len(set(picks)) == 5 and all(0 <= p < 200 for p in picks)
    with pytest.raises(ValueError, match="labelled samples"):
        strategy(Query(candidates=outputs.subset(candidates), candidate_positions=candidates), 5, torch.Generator())


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_zero_shot_teacher_equals_the_dual_encoders_logits(family):
    from PIL import Image
    from tiny import tiny_tokenizer
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        SiglipConfig,
        SiglipImageProcessorPil,
        SiglipModel,
        SiglipProcessor,
    )

    from vdtrain.selection.active.teacher import ZeroShotTeacher

    tokenizer = tiny_tokenizer()
    text = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=32, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    torch.manual_seed(0)
    if family == "clip":
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config={**vision, "patch_size": 8}, projection_dim=16))
    else:
        processor = SiglipProcessor(
            image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer
        )
        model = SiglipModel(SiglipConfig(text_config=text, vision_config={**vision, "patch_size": 8}))
        with torch.no_grad():
            model.logit_bias.fill_(-1.5)
    teacher = ZeroShotTeacher(model, processor, ["cat", "dog", "red tree"])
    images = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (32, 32, 3), dtype=np.uint8)) for i in range(5)]
    probs = teacher.probs(images, batch_size=2)
    inputs = processor(text=teacher.prompts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.softmax(dim=-1)
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    assert float((probs.max(dim=1).values - probs.min(dim=1).values).min()) > 1e-3  # not uniform
