"""The unlabelled pool of pool-based active learning: ids and one embedding matrix per modality, rows aligned."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vdtrain.errors import InputError


class Pool:
    """Ids and per-modality embeddings `{modality: (N, D_m)}` of the samples one may ask labels for.

    Rows are aligned across modalities and with `ids`; a position (row number) is how strategies name a sample.
    Built from arrays, from embedding files (`from_files`) or lazily from records and an embedding function
    (`from_records`), whose rows are computed on first use and kept.
    """

    def __init__(
        self,
        ids: Sequence[Any],
        embeddings: dict[str, Any] | None = None,
        *,
        loader: Callable[[], dict[str, Any]] | None = None,
    ):
        self.ids = [str(i) for i in ids]
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))
            raise InputError(f"pool ids must be unique; {dup!r} appears more than once")
        self._loader = loader
        self._embeddings: dict[str, torch.Tensor] | None = None
        if embeddings is not None:
            self._embeddings = self._check({name: _as_tensor(value) for name, value in embeddings.items()})
        elif loader is None:
            raise ValueError("Pool needs embeddings or a loader")
        self._position = {sample_id: position for position, sample_id in enumerate(self.ids)}

    def _check(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not embeddings:
            raise InputError("a pool needs at least one modality")
        for name, matrix in embeddings.items():
            if matrix.ndim != 2 or matrix.shape[0] != len(self.ids):
                raise InputError(
                    f"modality {name!r}: embeddings of shape {tuple(matrix.shape)} do not match the {len(self.ids)} "
                    "pool ids (expected one row per id)"
                )
            if not torch.isfinite(matrix).all():
                row = int((~torch.isfinite(matrix)).any(dim=1).nonzero()[0])
                raise InputError(f"modality {name!r}: sample {self.ids[row]!r} (row {row}) has a NaN or inf embedding")
        return embeddings

    @property
    def embeddings(self) -> dict[str, torch.Tensor]:
        """`{modality: (N, D_m)}` float32 tensors (computed now if the pool is lazy)."""
        if self._embeddings is None:
            self._embeddings = self._check({k: _as_tensor(v) for k, v in self._loader().items()})
        return self._embeddings

    @property
    def modalities(self) -> list[str]:
        """Modality names in the order the fusion concatenates them."""
        return list(self.embeddings)

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: Sequence[Any]) -> list[int]:
        """Row numbers of `ids`; an unknown id is named."""
        try:
            return [self._position[str(i)] for i in ids]
        except KeyError as error:
            raise InputError(f"id {error.args[0]!r} is not in the pool") from None

    def features(self, positions: Sequence[int] | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`{modality: (n, D_m)}` rows at `positions` (all rows when None)."""
        if positions is None:
            return dict(self.embeddings)
        index = torch.as_tensor(positions, dtype=torch.long)
        return {name: matrix[index] for name, matrix in self.embeddings.items()}

    @classmethod
    def from_records(
        cls,
        records: Sequence[Any],
        embed: Callable[[Sequence[Any]], dict[str, Any]],
        *,
        ids: Sequence[Any] | None = None,
        batch_size: int = 64,
    ) -> Pool:
        """A lazy pool: `embed(batch_of_records) -> {modality: (b, D_m)}` runs in batches on first use."""
        records = list(records)
        ids = ids if ids is not None else [r.get("id", i) if isinstance(r, dict) else i for i, r in enumerate(records)]

        def load() -> dict[str, torch.Tensor]:
            parts: dict[str, list[torch.Tensor]] = {}
            for start in range(0, len(records), batch_size):
                for name, rows in embed(records[start : start + batch_size]).items():
                    parts.setdefault(name, []).append(_as_tensor(rows))
            return {name: torch.cat(rows) for name, rows in parts.items()}

        return cls(ids, loader=load)

    @classmethod
    def from_files(cls, files: dict[str, str | os.PathLike], ids: Sequence[Any] | None = None) -> Pool:
        """A pool from one embedding file per modality (`.npy`, `.pt`, `.safetensors`); ids default to row numbers."""
        embeddings = {name: load_matrix(path) for name, path in files.items()}
        if ids is None:
            ids = range(len(next(iter(embeddings.values()))))
        return cls(ids, embeddings)


def load_matrix(path: str | os.PathLike) -> torch.Tensor:
    """An `(N, D)` float32 matrix from a `.npy`, `.pt` or `.safetensors` file (its one tensor, or `embeddings`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        value: Any = np.load(path, allow_pickle=False)
    elif suffix in (".pt", ".pth"):
        value = torch.load(path, map_location="cpu", weights_only=True)
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        value = load_file(path)
    else:
        raise InputError(f"{path}: unknown embedding format {suffix!r}; use .npy, .pt or .safetensors")
    if isinstance(value, dict):
        if "embeddings" in value:
            value = value["embeddings"]
        elif len(value) == 1:
            value = next(iter(value.values()))
        else:
            raise InputError(f"{path}: holds tensors {sorted(value)}; expected one, or one named 'embeddings'")
    matrix = _as_tensor(value)
    if matrix.ndim != 2:
        raise InputError(f"{path}: expected an (N, D) matrix, got shape {tuple(matrix.shape)}")
    return matrix


def _as_tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).float()
