"""Embedding files: `{name}.npy` `(N, D)` float32 in record order with a fingerprint beside it, written incrementally
per process (`{name}.rank{r}.f32` rows + `{name}.rank{r}.jsonl` their indices and width) so a killed run resumes, then
merged. Rows of samples that could not be embedded are NaN (and listed in `errors.jsonl`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vdtrain.errors import InputError
from vdtrain.io import read_json, read_jsonl, repair_jsonl

EMBEDDINGS = "embeddings"
RUN_FILE = "run.json"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content (the fingerprint a selection records of its embeddings and data)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def random_projection(x: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """Project rows to `dim` dims by a seeded Gaussian matrix scaled by `1/sqrt(dim)` (Johnson-Lindenstrauss): the same
    seed and input width give the same matrix on every process and run."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(x.shape[-1], dim, generator=generator, dtype=torch.float32) / dim**0.5
    return x.float() @ matrix.to(x.device)


class RankWriter:
    """Appends `(index, row)` pairs of one process: rows to `{name}.rank{r}.f32`, then their indices (the commit)."""

    def __init__(self, output_dir: Path, name: str, rank: int) -> None:
        self.rows_path = output_dir / f"{name}.rank{rank}.f32"
        self.index_path = output_dir / f"{name}.rank{rank}.jsonl"
        self.dim: int | None = None
        repair_jsonl(self.index_path) if self.index_path.is_file() else None
        lines = read_jsonl(self.index_path, missing_ok=True, skip_bad_lines=True)
        committed = len(lines)
        self.dim = int(lines[0]["dim"]) if lines else None
        if self.rows_path.is_file():  # drop rows written after the last committed index line
            with open(self.rows_path, "r+b") as handle:
                handle.truncate(committed * 4 * (self.dim or 0))

    def write(self, indices: list[int], rows: torch.Tensor) -> None:
        """Append rows `(S, D)` (float32) and then their indices; a crash between the two loses only this batch."""
        array = rows.detach().to(torch.float32).cpu().numpy()
        if self.dim is not None and array.shape[1] != self.dim:
            raise ValueError(f"{self.rows_path}: rows of width {self.dim} there, {array.shape[1]} now")
        self.dim = array.shape[1]
        with open(self.rows_path, "ab") as handle:
            handle.write(np.ascontiguousarray(array).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        with open(self.index_path, "a") as handle:
            handle.write("".join(json.dumps({"index": int(i), "dim": self.dim}) + "\n" for i in indices))


def done_indices(output_dir: Path, name: str) -> set[int]:
    """Indices with a committed row in `output_dir` (merged file and rank files)."""
    done: set[int] = set()
    merged = output_dir / f"{name}.npy"
    if merged.is_file():
        array = np.load(merged, mmap_mode="r")
        done |= set(np.flatnonzero(~np.isnan(array[:, 0])).tolist()) if array.size else set()
    for path in output_dir.glob(f"{name}.rank*.jsonl"):
        done |= {int(row["index"]) for row in read_jsonl(path, skip_bad_lines=True)}
    return done


def merge_rank_rows(output_dir: Path, name: str, n: int) -> Path:
    """Merge the rank files (and an earlier `{name}.npy`) into `{name}.npy` `(n, D)`, NaN where no row exists."""
    merged, dim, parts = output_dir / f"{name}.npy", None, []
    for index_path in sorted(output_dir.glob(f"{name}.rank*.jsonl")):
        lines = read_jsonl(index_path, skip_bad_lines=True)
        indices = [int(row["index"]) for row in lines]
        rows_path = index_path.with_suffix(".f32")
        if indices:
            rows = np.fromfile(rows_path, dtype=np.float32)
            dim = int(lines[0]["dim"])
            parts.append((indices, rows[: len(indices) * dim].reshape(len(indices), dim)))
    previous = np.load(merged) if merged.is_file() else None
    if previous is not None:
        dim = previous.shape[1]
    if dim is None:
        raise InputError(f"{output_dir}: no {name} rows were written")
    out = np.full((n, dim), np.nan, dtype=np.float32)
    if previous is not None:
        out[: len(previous)] = previous[:n]
    for indices, rows in parts:
        out[indices] = rows
    tmp = merged.with_name(f".{merged.name}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, out)
    os.replace(tmp, merged)
    for index_path in output_dir.glob(f"{name}.rank*.jsonl"):
        index_path.with_suffix(".f32").unlink(missing_ok=True)
        index_path.unlink()
    return merged


def load_embeddings(path: str | os.PathLike, name: str = EMBEDDINGS) -> tuple[torch.Tensor, dict[str, Any]]:
    """`(rows (N, D) float32, fingerprint)` from a `.npy` file or a directory holding `{name}.npy`; the fingerprint
    holds the file's SHA-256 and the `run.json` beside it (data hash, model, dtype, pooling) when there is one."""
    path = Path(path)
    file = path / f"{name}.npy" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: no embeddings file {file.name}; write one with `vdtrain embed`")
    array = np.load(file)
    if array.ndim != 2:
        raise InputError(f"{file}: embeddings must be a 2-d array (N, D), got shape {array.shape}")
    fingerprint: dict[str, Any] = {"file": str(file), "sha256": file_sha256(file), "shape": list(array.shape)}
    run_file = next((file.parent / n for n in ("embeddings.json", RUN_FILE) if (file.parent / n).is_file()), None)
    if run_file is not None:  # `filter score --save-embeddings` writes embeddings.json, `vdtrain embed` run.json
        run = read_json(run_file)
        fingerprint["run"] = {key: run.get(key) for key in ("data_sha256", "model", "dtype", "pooling", "projection")}
    return torch.from_numpy(array.astype(np.float32, copy=False)), fingerprint
