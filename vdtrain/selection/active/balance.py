"""BMMAL's balance measure as a filter (the thesis' own suggestion, ch. 6): each sample's dominance ρ (eq. 3.5) by
a trained fusion model, written as a score file that `vdtrain filter select --strategy balanced` reads to remove the
most modality-dominated samples."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vdtrain.io import atomic_write_json, atomic_write_jsonl, read_records
from vdtrain.selection.active.learner import Outputs
from vdtrain.selection.active.shapley import contributions, dominance, modality_shapley

DOMINANCE_FILE = "dominance.jsonl"


def sample_dominance(outputs: Outputs, *, target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(ρ (n,), Φ (n, M))`: the dominance degree and normalised Shapley contributions of every sample for the
    fusion head's prediction (or the probability of `target`)."""
    phi = contributions(modality_shapley(outputs, target=target))
    return dominance(phi), phi


def write_dominance(
    output_dir: str | os.PathLike, ids: Sequence[Any], outputs: Outputs, data: str | os.PathLike
) -> dict[str, Any]:
    """Write `dominance.jsonl` (`id`, `index` of the record in `data`, `rho`, `score` = ρ, `phi_<modality>`) and a
    `run.json` with `data`'s SHA-256 into `output_dir`, for `vdtrain filter select --strategy balanced`.

    `ids` name the rows of `outputs`; each must be a record's `id` in `data` (or, for records without ids, its index).
    """
    output_dir, data = Path(output_dir), Path(data)
    records = read_records(data)
    index_of = {str(r.get("id", i)) if isinstance(r, dict) else str(i): i for i, r in enumerate(records)}
    missing = [str(i) for i in ids if str(i) not in index_of]
    if missing:
        raise ValueError(f"{data}: no record with id {missing[0]!r} ({len(missing)} ids of the pool are not in it)")
    rho, phi = sample_dominance(outputs)
    rows = []
    for row, sample_id in enumerate(ids):
        entry = {"id": str(sample_id), "index": index_of[str(sample_id)], "score": float(rho[row])}
        entry["rho"] = float(rho[row])
        entry.update({f"phi_{name}": float(phi[row, m]) for m, name in enumerate(outputs.features)})
        rows.append(entry)
    rows.sort(key=lambda r: r["index"])
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(output_dir / DOMINANCE_FILE, rows)
    run = {
        "data": str(data.resolve()),
        "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "score": "dominance rho (thesis eq. 3.5)",
    }
    atomic_write_json(output_dir / "run.json", run)
    return run
