"""`vdtrain select pairs` end to end on embedding files written by the test, and stage 1's projector heads."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from vdtrain import cli
from vdtrain.selection.prototypes import concentrations, cross_modal_infonce, modality_gap, train_projectors


def _write_pool(tmp_path, n=60, image_dim=6, text_dim=6):
    generator = np.random.default_rng(0)
    image = generator.normal(size=(n, image_dim)).astype(np.float32)
    text = (image[:, :text_dim] if text_dim <= image_dim else generator.normal(size=(n, text_dim))).astype(np.float32)
    text = text + 0.1 * generator.normal(size=text.shape).astype(np.float32)
    text[:10] = generator.normal(size=(10, text_dim))  # misaligned pairs
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "text.npy", text)
    records = [{"id": f"s{i}", "image": f"{i}.png", "conversations": []} for i in range(n)]
    (tmp_path / "pool.json").write_text(json.dumps(records))
    return image, text, records


def test_select_pairs_writes_indices_records_and_is_seeded(tmp_path, capsys):
    _, _, records = _write_pool(tmp_path)
    argv = ["select", "pairs", "--embeddings", str(tmp_path), "--budget", "0.1", "--method", "mmcsal", "--steps", "5"]
    assert cli.main([*argv, "--output-dir", str(tmp_path / "a"), "--data", str(tmp_path / "pool.json")]) == 0
    assert cli.main([*argv, "--output-dir", str(tmp_path / "b")]) == 0
    first = json.loads((tmp_path / "a" / "selected_indices.json").read_text())
    second = json.loads((tmp_path / "b" / "selected_indices.json").read_text())
    assert first["indices"] == second["indices"] and len(first["indices"]) == 6
    assert first["seed"] == 42 and first["method"] == "mmcsal"  # every command's default seed
    assert len(first["embeddings"]["image"]["sha256"]) == 64
    selected = json.loads((tmp_path / "a" / "selected.json").read_text())
    assert [r["id"] for r in selected] == [records[i]["id"] for i in first["indices"]]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["budget"] == 6 and summary["pool_size"] == 60
    assert "6 of 60 pairs by mmcsal" in capsys.readouterr().out


def test_select_pairs_skips_rows_that_failed_to_embed(tmp_path):
    _write_pool(tmp_path)
    image = np.load(tmp_path / "image.npy")
    image[[3, 4]] = np.nan
    np.save(tmp_path / "image.npy", image)
    out = tmp_path / "out"
    argv = ["select", "pairs", "--embeddings", str(tmp_path), "--budget", "50", "--method", "kcenter"]
    assert cli.main([*argv, "--output-dir", str(out)]) == 0
    chosen = json.loads((out / "selected_indices.json").read_text())
    assert chosen["skipped_rows"] == [3, 4] and not {3, 4} & set(chosen["indices"])
    assert len(set(chosen["indices"])) == 50


def test_mmcsal_across_two_spaces_needs_stage1(tmp_path, capsys):
    _write_pool(tmp_path, text_dim=4)
    argv = ["select", "pairs", "--embeddings", str(tmp_path), "--budget", "5", "--output-dir", str(tmp_path / "o")]
    assert cli.main([*argv, "--steps", "3"]) == 1
    assert "stage-1 projector heads" in capsys.readouterr().err
    stage1 = ["--stage1", "--stage1-dim", "8", "--stage1-epochs", "2", "--stage1-warmup", "1", "--steps", "3"]
    assert cli.main([*argv, *stage1]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["budget"] == 5 and "mean_alignment" in summary


def test_select_group_lists_its_subcommands(capsys):
    assert cli.main(["select", "--help"]) == 0
    assert "pairs" in capsys.readouterr().out
    assert cli.main(["select", "nope"]) == 2


def test_infonce_and_concentrations_by_hand():
    a = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    b = F.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0]]), dim=1)
    logits = a @ b.T / 0.5
    by_hand = -0.5 * (
        sum(torch.log_softmax(logits, 1)[i, i] for i in range(2)) / 2
        + sum(torch.log_softmax(logits.T, 1)[i, i] for i in range(2)) / 2
    )
    assert torch.allclose(cross_modal_infonce(a, b, 0.5), by_hand)
    z = torch.tensor([[0.0, 1.0], [0.0, 3.0], [2.0, 0.0]])
    centroids = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    z = torch.cat([z, torch.tensor([[2.0, 1.0]])])  # cluster 1: rows at distance 0 and 1 from (2, 0)
    phi = concentrations(z, centroids, torch.tensor([0, 0, 1, 1]), tau=0.1)
    raw = torch.tensor([1.0 / math.log(12.0), 0.5 / math.log(12.0)])
    assert torch.allclose(phi, raw * 0.1 / raw.mean())
    lone = concentrations(z[:3], centroids, torch.tensor([0, 0, 1]), tau=0.1)  # a one-row cluster: no zero φ
    assert torch.allclose(lone, torch.tensor([0.1, 0.1]))


def test_stage1_shrinks_the_distance_between_paired_rows():
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(200, 4, generator=generator)
    first = latent @ torch.randn(4, 10, generator=generator)  # two unrelated views of one latent
    second = torch.tanh(latent @ torch.randn(4, 7, generator=generator))
    z1, z2 = train_projectors(first, second, dim=8, epochs=20, warmup=5, batch_size=64, lr=1e-2, seed=0)
    paired = F.cosine_similarity(z1, z2).mean()
    shuffled = F.cosine_similarity(z1, z2[torch.randperm(200, generator=generator)]).mean()
    assert paired > shuffled + 0.3
    assert modality_gap(z1, z2) < 1.0
