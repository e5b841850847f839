"""Coverage-aware `vdtrain filter select` strategies (score plus coverage, not a score alone) and the record of every
selection: `selected_indices.json` and coverage metrics for `summary.json`.

- `stratified-lowest` / `stratified-highest`: k-means the embeddings, then remove the fraction *within each cluster*
  (no cluster of at least 1/f members is emptied);
- `coverage`: keep `1 - f` of the samples by k-center greedy (or score-weighted k-means++) inside each cluster;
- `dedup`: remove near-duplicates (cosine >= threshold within a cluster), keeping the higher score, at most `f`.

Torch loads on first use, so `vdtrain filter --help` reads `COVERAGE_STRATEGIES` without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

COVERAGE_STRATEGIES = ("stratified-lowest", "stratified-highest", "coverage", "dedup")
EMBEDDINGS_FILE = "embeddings.npy"
SELECTED_FILE = "selected_indices.json"


class CoverageContext:
    """The scored samples' embeddings and their k-means clusters (computed once, on first need)."""

    def __init__(
        self,
        scores_path: Path,
        rows: list[dict[str, Any]],
        *,
        embeddings: str | os.PathLike | None = None,
        clusters: int | None = None,
        seed: int = 0,
    ) -> None:
        self.rows, self.seed, self.requested_clusters = rows, seed, clusters
        self.indices = [int(row["index"]) for row in rows]
        path = Path(embeddings) if embeddings else scores_path.parent / EMBEDDINGS_FILE
        self.path = path if (embeddings or path.is_file()) else None
        self._x = self._labels = None
        self.fingerprint: dict[str, Any] | None = None

    @property
    def available(self) -> bool:
        """Whether embeddings were given or sit beside the scores."""
        return self.path is not None

    def features(self):
        """`(S, D)` embeddings of the scored rows, in `rows` order."""
        if self._x is None:
            import torch

            from vdtrain.errors import InputError
            from vdtrain.selection.store import load_embeddings

            if self.path is None:
                raise InputError(
                    "this strategy needs embeddings: score with `vdtrain filter score --save-embeddings answer-mean`, "
                    "or pass --embeddings (an (N, D) .npy in record order, e.g. from `vdtrain embed`)"
                )
            x, self.fingerprint = load_embeddings(self.path)
            if self.indices and max(self.indices) >= x.shape[0]:
                raise InputError(f"{self.path}: {x.shape[0]} rows, but the scores reach index {max(self.indices)}")
            x = x[torch.tensor(self.indices, dtype=torch.long)]
            bad = torch.isnan(x).any(dim=1).nonzero().flatten()
            if len(bad):
                raise InputError(f"{self.path}: no embedding for scored sample {self.rows[int(bad[0])]['id']!r}")
            self._x = x
        return self._x

    def labels(self):
        """`(S,)` k-means cluster of every scored row (seeded; `--clusters`, default `round(sqrt(N / 2))`)."""
        if self._labels is None:
            from vdtrain.selection.cluster import kmeans
            from vdtrain.selection.coverage import default_clusters

            x = self.features()
            k = min(self.requested_clusters or default_clusters(len(x)), len(x))
            self._labels = kmeans(x, k, seed=self.seed, sample_size=max(64 * k, 20000)).labels
        return self._labels

    def removed(self, strategy: str, count: int, *, method: str = "kcenter", threshold: float = 0.95) -> list[int]:
        """Record indices of the `count` samples a coverage strategy removes (dedup: at most `count`), sorted."""
        import torch

        from vdtrain.selection.cluster import near_duplicates, stratified_remove
        from vdtrain.selection.coverage import clustered_keep

        scores = torch.tensor([float(row["score"]) for row in self.rows], dtype=torch.float64)
        if strategy.startswith("stratified-"):
            positions = stratified_remove(self.labels(), scores, count, lowest=strategy == "stratified-lowest")
        elif strategy == "coverage":
            rank = torch.empty(len(scores), dtype=torch.float64)
            rank[torch.sort(scores, stable=True).indices] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
            kept = clustered_keep(
                self.features(), self.labels(), len(scores) - count, method=method, weights=rank, seed=self.seed
            )
            mask = torch.ones(len(scores), dtype=torch.bool)
            mask[kept] = False
            positions = mask.nonzero().flatten()
        elif strategy == "dedup":
            drop = near_duplicates(self.features(), threshold, labels=self.labels(), priority=scores)
            positions = drop.nonzero().flatten()
            positions = positions[torch.sort(scores[positions], stable=True).indices[:count]]  # lowest first
        else:
            raise ValueError(f"unknown coverage strategy {strategy!r}: choose one of {', '.join(COVERAGE_STRATEGIES)}")
        return sorted(self.indices[int(p)] for p in positions)

    def report(self, removed: set[int]) -> dict[str, Any] | None:
        """Coverage metrics of the kept samples (None without embeddings)."""
        if not self.available:
            return None
        import torch

        from vdtrain.selection.coverage import coverage_metrics

        kept = torch.tensor([p for p, index in enumerate(self.indices) if index not in removed], dtype=torch.long)
        metrics = coverage_metrics(self.features(), self.labels(), kept, seed=self.seed)
        metrics["embeddings"] = self.fingerprint
        return metrics


def write_selected(
    path: Path, kept: list[int], removed: list[int], selection: dict[str, Any], fingerprint: dict | None
) -> None:
    """`selected_indices.json`: the kept and removed record indices with what produced them (shareable, exact)."""
    from vdtrain.io import atomic_write_json

    atomic_write_json(path, {"kept": kept, "removed": removed, **selection, "embeddings": fingerprint}, indent=None)
