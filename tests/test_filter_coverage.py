"""Coverage-aware `vdtrain filter select` strategies on a scored pool written by the test (scores.jsonl, run.json,
embeddings.npy beside them, as `filter score --save-embeddings` leaves them)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from vdtrain import cli
from vdtrain.filtering.selection import select_dataset
from vdtrain.selection.coverage import kcenter_radius


def _scored_pool(tmp_path, *, n_per=(40, 40, 40, 8), seed=0, low_cluster=3, embeddings=True):
    """Blobs of samples; the small blob `low_cluster` holds the lowest scores (a kind a score-only cut wipes out)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per), 8)) * 6
    labels = np.repeat(np.arange(len(n_per)), n_per)
    x = (centres[labels] + rng.normal(size=(len(labels), 8))).astype(np.float32)
    scores = rng.normal(size=len(labels)) + 3.0
    scores[labels == low_cluster] -= 10.0
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": f"s{i}", "image": f"{i}.png", "conversations": []} for i in range(len(x))]))
    out = tmp_path / "scored"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"data_sha256": hashlib.sha256(data.read_bytes()).hexdigest()}))
    rows = [
        {"id": f"s{i}", "index": i, "score": float(s), "n_tokens": 4, "mean": s / 4, "frac_pos": 0.0, "frac_neg": 0.0}
        for i, s in enumerate(scores)
    ]
    (out / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if embeddings:
        np.save(out / "embeddings.npy", x)
    return out / "scores.jsonl", data, x, labels, scores


def _select(tmp_path, scores, data, strategy, fraction=0.1, **kwargs):
    output = tmp_path / strategy / "kept.json"
    output.parent.mkdir(exist_ok=True)
    summary = select_dataset(scores, data, output, strategy=strategy, fraction=fraction, **kwargs)
    chosen = json.loads((output.parent / "selected_indices.json").read_text())
    return summary, chosen


def test_stratified_lowest_removes_within_clusters_and_never_empties_one(tmp_path):
    scores_path, data, x, labels, scores = _scored_pool(tmp_path)
    summary, chosen = _select(tmp_path, scores_path, data, "stratified-lowest", clusters=4)
    assert len(chosen["removed"]) == 13 and len(chosen["kept"]) == 115  # round(0.1 * 128)
    assert chosen["strategy"] == "stratified-lowest" and chosen["seed"] == 0
    assert len(chosen["embeddings"]["sha256"]) == 64
    kept = set(chosen["kept"])
    for c in range(4):  # every blob (all >= 1/f = 10 members, but the 8-member one too) keeps members
        assert kept & set(np.flatnonzero(labels == c).tolist())
    coverage = summary["selection"]["coverage"]
    assert coverage["clusters_emptied"] == 0 and coverage["min_cluster_kept_fraction"] > 0
    assert coverage["kcenter_radius_exact"] and coverage["clusters"] == 4
    # the removed of each blob are its lowest-scored members
    for c in range(4):
        members = np.flatnonzero(labels == c)
        gone = [i for i in members if i not in kept]
        rest = [i for i in members if i in kept]
        if gone:
            assert max(scores[gone]) <= min(scores[rest])
    lowest_summary, lowest = _select(tmp_path, scores_path, data, "lowest")
    assert not set(lowest["kept"]) & set(np.flatnonzero(labels == 3).tolist())  # the score alone wipes blob 3 out
    assert lowest_summary["selection"]["coverage"]["clusters_emptied"] == 1


def test_coverage_has_a_smaller_kcenter_radius_than_lowest(tmp_path):
    scores_path, data, x, _, _ = _scored_pool(tmp_path)
    results = {}
    for strategy in ("coverage", "lowest"):
        summary, chosen = _select(tmp_path, scores_path, data, strategy, fraction=0.2)
        radius, _ = kcenter_radius(torch.from_numpy(x), torch.tensor(chosen["kept"]), max_rows=None)
        assert summary["selection"]["coverage"]["kcenter_radius"] == pytest.approx(radius, rel=1e-5)
        results[strategy] = radius
    assert results["coverage"] < results["lowest"]


@pytest.mark.parametrize(
    "strategy,kwargs",
    [("stratified-highest", {}), ("coverage", {"coverage_method": "kmeans++"}), ("dedup", {"dedup_threshold": 0.9})],
)
def test_two_runs_with_one_seed_give_identical_indices(tmp_path, strategy, kwargs):
    scores_path, data, *_ = _scored_pool(tmp_path)
    _, first = _select(tmp_path, scores_path, data, strategy, seed=5, **kwargs)
    _, second = _select(tmp_path, scores_path, data, strategy, seed=5, **kwargs)
    assert first["kept"] == second["kept"] and first["seed"] == 5


def test_dedup_removes_planted_duplicates_keeping_the_higher_score(tmp_path):
    scores_path, data, x, _, scores = _scored_pool(tmp_path)
    x[100:105] = x[0:5] * 1.001  # five near-copies
    np.save(scores_path.parent / "embeddings.npy", x)
    _, chosen = _select(tmp_path, scores_path, data, "dedup", fraction=0.5, clusters=4, dedup_threshold=0.99999)
    expected = sorted(i if scores[i] < scores[i + 100] else i + 100 for i in range(5))
    assert chosen["removed"] == expected


def test_old_strategies_unchanged_and_cli_errors_without_embeddings(tmp_path, capsys):
    scores_path, data, *_ = _scored_pool(tmp_path, embeddings=False)
    summary, chosen = _select(tmp_path, scores_path, data, "lowest", fraction=0.25)
    assert "coverage" not in summary["selection"] and chosen["embeddings"] is None
    rows = [json.loads(line) for line in scores_path.read_text().splitlines()]
    expected = sorted(r["index"] for r in sorted(rows, key=lambda r: (r["score"], r["index"]))[:32])
    assert chosen["removed"] == expected
    argv = ["filter", "select", "--scores", str(scores_path), "--data", str(data), "--fraction", "0.1"]
    assert cli.main([*argv, "--strategy", "coverage", "--output", str(tmp_path / "o.json")]) == 1
    assert "--save-embeddings" in capsys.readouterr().err
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(128, 4)).astype(np.float32))
    more = ["--embeddings", str(tmp_path / "emb.npy"), "--clusters", "3", "--output", str(tmp_path / "o.json")]
    assert cli.main([*argv, "--strategy", "stratified-lowest", *more]) == 0
    assert len(json.loads((tmp_path / "selected_indices.json").read_text())["removed"]) == 13
