"""Embeddings for selection, in record order: pooled from a generative model's hidden states (as a by-product of
`vdtrain filter score`'s clean pass, or one no-grad pass of their own), or from a frozen dual or sentence encoder.
Resumable and sharded like `filter score`: each process appends its rows, the main process merges."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from vdtrain.errors import RunMismatchError
from vdtrain.io import read_records, recorded_run_changes
from vdtrain.selection.encoders import HiddenCapture, pool_hidden
from vdtrain.selection.store import EMBEDDINGS, RUN_FILE, RankWriter, done_indices, file_sha256, merge_rank_rows
from vdtrain.selection.store import random_projection as project

logger = logging.getLogger(__name__)
EMBED_RUN_FILE = "embeddings.json"
CHECKED = ("model", "data_sha256", "dtype", "pooling", "projection")


def check_embedding_run(output_dir: Path, info: dict[str, Any], is_main: bool, name: str = EMBED_RUN_FILE) -> None:
    """Refuse an output directory whose embeddings came from another model, data, dtype, pooling or projection."""
    path = output_dir / name
    changed = recorded_run_changes(path, info, CHECKED, is_main)
    if changed:
        raise RunMismatchError(f"{path} records other embeddings ({'; '.join(changed)}); use another --output-dir")


def image_token_mask(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
    """Where the model's image placeholder tokens sit (None if its config names no image token)."""
    config = getattr(model, "config", None)
    token = getattr(config, "image_token_id", None)
    token = token if token is not None else getattr(config, "image_token_index", None)
    return None if token is None else input_ids == token


def pool_batch(model: torch.nn.Module, batch: dict[str, Any], hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    """`(S, H)` float32 rows of a collated batch (`collate_samples`) from its clean pass' last hidden state
    `(E, L, H)`: each example pooled, then the examples of one sample averaged (weighted by pooled tokens)."""
    inputs = batch["inputs"]
    attention = inputs["attention_mask"].to(hidden.device)
    labels = inputs["labels"].to(hidden.device)
    image_mask = image_token_mask(model, inputs["input_ids"].to(hidden.device))
    rows = pool_hidden(hidden, pooling, attention_mask=attention, labels=labels, image_mask=image_mask)  # (E, H)
    if pooling == "answer-mean":
        weight = (labels != -100).sum(1).float()
    elif pooling == "image-mean":
        weight = image_mask.sum(1).float() if image_mask is not None else torch.ones(len(rows), device=rows.device)
    else:
        weight = torch.ones(len(rows), device=rows.device)
    usable = torch.isfinite(rows).all(1) & (weight > 0)
    weight = torch.where(usable, weight, torch.zeros_like(weight))
    owner = batch["owner"].to(rows.device)
    samples = len(batch["samples"])
    total = torch.zeros(samples, rows.shape[1], device=rows.device).index_add_(
        0, owner, torch.nan_to_num(rows) * weight[:, None]
    )
    count = torch.zeros(samples, device=rows.device).index_add_(0, owner, weight)
    return torch.where(count[:, None] > 0, total / count.clamp_min(1e-12)[:, None], torch.nan).cpu()


class EmbeddingSink:
    """Pools the scoring model's clean-pass hidden states into `embeddings.npy` beside the scores.

    Usage per batch: `arm()` before scoring it, `write(batch, rows)` after (before the scores are appended, so a
    scored sample always has its row); `merge(n)` once every sample is done; `close()` at the end.
    """

    def __init__(self, model, output_dir: Path, rank: int, pooling: str, dim: int | None, seed: int = 0) -> None:
        self.model, self.output_dir, self.pooling, self.dim, self.seed = model, output_dir, pooling, dim, seed
        self.capture = HiddenCapture(model)
        self.writer = RankWriter(output_dir, EMBEDDINGS, rank)

    def arm(self) -> None:
        """Keep the next forward's hidden state (the batch's clean pass)."""
        self.capture.arm()

    def write(self, batch: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Append the pooled (and projected) rows of the batch's scored samples."""
        hidden, self.capture.hidden = self.capture.hidden, None
        if not rows:
            return
        samples = batch["samples"]
        if hidden is None or hidden.shape[0] != len(batch["owner"]):
            hidden = self._clean_hidden(batch)  # the batch was split after a failure: one more pass for its rows
        pooled = pool_batch(self.model, batch, hidden, self.pooling)
        if self.dim is not None:
            pooled = project(pooled, self.dim, self.seed)
        position = {sample["index"]: p for p, sample in enumerate(samples)}
        keep = [position[row["index"]] for row in rows]
        self.writer.write([samples[p]["index"] for p in keep], pooled[keep])

    @torch.no_grad()
    def _clean_hidden(self, batch: dict[str, Any]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        dtype = getattr(self.model, "dtype", torch.float32)
        inputs = {
            key: value.to(device, dtype) if value.is_floating_point() else value.to(device)
            for key, value in batch["inputs"].items()
            if key != "labels"
        }
        self.capture.arm()
        self.model(**inputs)
        hidden, self.capture.hidden = self.capture.hidden, None
        return hidden

    def merge(self, n: int) -> Path:
        """Write `embeddings.npy` `(n, D)` from every process' rows."""
        return merge_rank_rows(self.output_dir, EMBEDDINGS, n)

    def close(self) -> None:
        """Remove the hidden-state hook."""
        self.capture.close()


def embedding_info(model_name: str, data: Path, dtype: str, pooling: str, dim: int | None, seed: int) -> dict:
    """The fingerprint of an embedding run (run.json, or embeddings.json beside scores): data, model, pooling."""
    return {
        "model": model_name,
        "data": str(data.resolve()),
        "data_sha256": file_sha256(data),
        "dtype": dtype,
        "pooling": pooling,
        "projection": None if dim is None else {"dim": int(dim), "seed": int(seed)},
    }


def answer_text(record: Any) -> str:
    """The assistant turns of a LLaVA-format record, joined: the text side of an image-text pair."""
    turns = record.get("conversations", []) if isinstance(record, dict) else []
    return "\n".join(
        str(t.get("value", "")) for t in turns if isinstance(t, dict) and t.get("from") in ("gpt", "assistant")
    )


def encoder_dataset(
    model,
    processor,
    dual: bool,
    data: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    image_folder: str | os.PathLike | None = None,
    batch_size: int = 32,
    info: dict[str, Any],
    rank: int = 0,
    world: int = 1,
) -> dict[str, Path] | None:
    """Embed every record with a frozen encoder: `text.npy` (the answers) and, for a dual encoder, `image.npy`.

    Resumes what an earlier run left; records whose image cannot be read get NaN rows and an `errors.jsonl` line.
    Returns the merged files (main process, all done), else None.
    """
    from vdtrain.data.images import open_image, to_rgb  # the one image loader (EXIF, 16-bit, pixel limit)
    from vdtrain.selection.encoders import encode_images, encode_texts

    output_dir, data = Path(output_dir), Path(data)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_embedding_run(output_dir, info, rank == 0, RUN_FILE)
    records = read_records(data)
    names = ["text", "image"] if dual else ["text"]
    done = set.intersection(*(done_indices(output_dir, name) for name in names))
    todo = [i for i in range(len(records)) if i not in done][rank::world]
    writers = {name: RankWriter(output_dir, name, rank) for name in names}
    errors = []
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        if dual:
            images, ok = [], []
            for index in chunk:
                record = records[index]
                try:
                    path = Path(image_folder or "") / record["image"]
                    with open_image(path) as image:
                        images.append(to_rgb(image))
                    ok.append(index)
                except (OSError, ValueError, KeyError, TypeError) as error:
                    errors.append({"id": str(record.get("id", index)), "index": index, "error": f"image: {error}"})
            chunk = ok
            if chunk:
                writers["image"].write(chunk, encode_images(model, processor, images))
        if chunk:
            texts = [answer_text(records[i]) for i in chunk]
            writers["text"].write(chunk, encode_texts(model, processor, texts, dual=dual))
    if errors:
        from vdtrain.io import atomic_write_jsonl

        atomic_write_jsonl(output_dir / f"errors.rank{rank}.jsonl", errors)
    return _merge_when_done(output_dir, names, len(records), rank, world)


def _merge_when_done(output_dir: Path, names: list[str], n: int, rank: int, world: int) -> dict[str, Path] | None:
    from vdtrain.filtering.runs import barrier

    barrier(world)
    if rank != 0:
        return None
    return {name: merge_rank_rows(output_dir, name, n) for name in names}


def pooled_dataset(
    model,
    processor,
    data: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    pooling: str,
    info: dict[str, Any],
    image_folder: str | os.PathLike | None = None,
    dim: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int = 2048,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Path] | None:
    """Embed every record by pooling a generative model's last hidden state over one no-grad clean pass
    (`embeddings.npy`), resuming what an earlier run left; unpreparable records get NaN rows and an error line."""
    from vdtrain.data.samples import collate_samples, prepare_sample
    from vdtrain.models.base import get_adapter, pad_token_id

    output_dir, data = Path(output_dir), Path(data)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_embedding_run(output_dir, info, rank == 0, RUN_FILE)
    records = read_records(data)
    done = done_indices(output_dir, EMBEDDINGS)
    todo = [i for i in range(len(records)) if i not in done][rank::world]
    adapter, pad = get_adapter(model, processor), pad_token_id(processor)
    sink = EmbeddingSink(model, output_dir, rank, pooling, dim, seed)
    errors = []
    try:
        for start in range(0, len(todo), batch_size):
            samples = [
                prepare_sample(records[i], i, adapter, processor, image_folder, max_length=max_length, seed=seed)
                for i in todo[start : start + batch_size]
            ]
            batch = collate_samples(samples, pad)
            errors += [{"id": s["id"], "index": s["index"], "error": s["error"]} for s in batch["errors"]]
            if batch["samples"]:
                sink.write(batch, [{"index": s["index"]} for s in batch["samples"]])
    finally:
        sink.close()
    if errors:
        from vdtrain.io import atomic_write_jsonl

        atomic_write_jsonl(output_dir / f"errors.rank{rank}.jsonl", errors)
    return _merge_when_done(output_dir, [EMBEDDINGS], len(records), rank, world)
