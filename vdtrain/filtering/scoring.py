"""Offline scoring of a conversation dataset by visual dependence (thesis 5.4.5): two no-grad forwards per sample.

Each process scores its share of the samples not yet scored, appends one JSON line per sample to
`scores.rank{r}.jsonl` as each batch finishes, and the main process merges them into `scores.jsonl` (ordered by
index) once every sample is scored or failed. The noise of sample `i` comes from a generator seeded from
`(seed, i)`, so a score does not depend on the batch size, the order or the number of processes.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vdtrain.data.samples import approximate_length, collate_samples, prepare_sample
from vdtrain.filtering.runs import (
    ERRORS_FILE,
    barrier,
    check_run,
    distributed,
    drop_nonfinite_scores,
    file_sha256,
    merge_rank_files,
    scored_indices,
)
from vdtrain.io import append_jsonl, read_records, repair_jsonl
from vdtrain.method.dependence import token_groups
from vdtrain.method.passes import batch_dependence, label_shift, supervised_mask
from vdtrain.models.base import ModelAdapter, accepts_logits_mask, get_adapter, pad_token_id, unwrap_model

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- samples and batches
# ---------------------------------------------------------------------------------------------- the hot path
def score_batch(
    model: torch.nn.Module, batch: dict[str, Any], *, noise_step: int, pixel_key: str, logits_mask: bool = True
) -> torch.Tensor:
    """Per-sample `[sum d, n_tokens, n_pos, n_neg]` `(S, 4)` float64 for a collated batch: one clean, one noised pass.

    Text-only examples get `d = 0` (nothing changes under noise) and a batch without images skips the noised pass.
    """
    d, labels = batch_dependence(model, batch, noise_step=noise_step, pixel_key=pixel_key, logits_mask=logits_mask)
    rows = supervised_mask(labels, label_shift(model)).nonzero()[:, 0]  # (N,) example of each target, row-major
    groups = token_groups(d)
    values = torch.stack([d, torch.ones_like(d), groups == 1, groups == -1], dim=1)
    stats = torch.zeros(len(batch["samples"]), 4, dtype=torch.float64, device=labels.device)
    return stats.index_add_(0, batch["owner"].to(labels.device)[rows], values.double())  # (S, 4)


def score_row(sample: dict[str, Any], stats: list[float]) -> dict[str, Any]:
    """The `scores.jsonl` line of one sample from its `[sum d, n_tokens, n_pos, n_neg]`; a score that is not finite
    is an `errors.jsonl` row instead (it has an `error` key), never a score."""
    total, count, positive, negative = stats
    count = int(count)
    if not math.isfinite(total):
        return {
            "id": sample["id"],
            "index": sample["index"],
            "error": f"score is {total}: the model's log-probabilities are not finite (a diverged adapter, or "
            "float16 overflow: score in bfloat16 or float32)",
        }
    return {
        "id": sample["id"],
        "index": sample["index"],
        "score": total,
        "n_tokens": count,
        "mean": total / count,
        "frac_pos": positive / count,
        "frac_neg": negative / count,
    }


class _Samples(torch.utils.data.Dataset):
    """The samples this process scores, prepared (tokenised, image loaded, noise drawn) in DataLoader workers."""

    def __init__(self, records, indices, adapter, processor, image_folder, max_length, seed, source) -> None:
        self.records, self.indices, self.adapter, self.processor = records, indices, adapter, processor
        self.image_folder, self.max_length, self.seed, self.source = image_folder, max_length, seed, source

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.indices[position]
        return prepare_sample(
            self.records[index],
            index,
            self.adapter,
            self.processor,
            self.image_folder,
            max_length=self.max_length,
            seed=self.seed,
            source=self.source,
        )


class _Collate:
    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_samples(samples, self.pad_token_id)


def score_dataset(
    model: torch.nn.Module,
    processor: Any,
    data: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    image_folder: str | os.PathLike | None = None,
    adapter: ModelAdapter | None = None,
    noise_step: int = 900,
    batch_size: int = 8,
    seed: int = 42,
    max_length: int = 2048,
    num_workers: int = 0,
    model_name: str | None = None,
    adapter_name: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    group_by_length: bool = True,
    save_embeddings: str | None = None,
    embedding_dim: int | None = None,
) -> dict[str, Any] | None:
    """Score every sample of `data` by visual dependence into `output_dir`, resuming what an earlier run left.

    Writes `scores.jsonl` (`id, index, score = sum_t d, n_tokens, mean, frac_pos, frac_neg`), `errors.jsonl`
    (`id, index, error`) for samples that cannot be scored, `run.json` and (main process) `summary.json` and
    `score_hist.png`. Run it in every process of a launch; each scores a share and the main one merges.

    Args:
        model (`torch.nn.Module`): the scoring model (a fine-tuned one, as in the paper), on its device, eval mode.
        processor: the model's processor.
        data (`str`): LLaVA-format JSON list or JSONL, or a `datasets.Dataset` or folder in any format training
            reads (`vdtrain.data.sources.load_source`).
        output_dir (`str`): where scores go; rerunning with the same directory resumes.
        image_folder (`str`, *optional*): folder the records' `image` paths are relative to.
        adapter (`ModelAdapter`, *optional*): the model family's adapter (looked up from the model if not given).
        noise_step (`int`, defaults to 900): diffusion step of the noised image.
        batch_size (`int`, defaults to 8): samples per forward.
        seed (`int`, defaults to 42): noise seed; sample `i` uses `sample_generator(seed, i)`.
        max_length (`int`, defaults to 2048): tokens per sequence after image expansion.
        num_workers (`int`, defaults to 0): DataLoader workers that tokenise and load images.
        model_name / adapter_name (`str`, *optional*): recorded in `run.json` and checked on reruns
            (defaults: the model's `name_or_path`, no adapter).
        stop_after (`int`, *optional*): stop after scoring this many samples in this process (time-limited jobs).
        progress (`bool`, defaults to `True`): show a progress bar on the main process.
        group_by_length (`bool`, defaults to `True`): batch samples of similar text length together, longest first
            (scores do not depend on batching; rows are merged by index).
        save_embeddings (`str`, *optional*): also pool the clean pass' last hidden state into `embeddings.npy`
            (record order) for the coverage strategies: `"answer-mean"`, `"image-mean"` or `"last-token"`.
        embedding_dim (`int`, *optional*): project those rows to this width (seeded random projection).

    Returns:
        The summary dict (main process, all samples done), else None.
    """
    from vdtrain.filtering.report import write_report

    rank, world = distributed()
    is_main = rank == 0
    output_dir = Path(output_dir)
    records, data, identity = _records(data)
    adapter = adapter or get_adapter(model, processor)
    info = {
        "model": model_name or str(getattr(unwrap_model(model).config, "_name_or_path", "") or type(model).__name__),
        "adapter": adapter_name,
        **identity,
        "noise_step": int(noise_step),
        "seed": int(seed),
        "max_length": int(max_length),
        "dtype": str(getattr(model, "dtype", "")).replace("torch.", ""),
        "image_folder": str(Path(image_folder).resolve()) if image_folder else None,
    }
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    barrier(world)
    check_run(output_dir, info, is_main)
    sink = _embedding_sink(model, output_dir, rank, info, save_embeddings, embedding_dim, seed)
    if is_main:  # a killed run may have left half a line; failed samples are retried every run
        for path in output_dir.glob("scores.rank*.jsonl"):
            repair_jsonl(path)
        for path in [output_dir / ERRORS_FILE, *output_dir.glob("errors.rank*.jsonl")]:
            path.unlink(missing_ok=True)
        nonfinite = drop_nonfinite_scores(output_dir)
        if nonfinite:
            logger.warning("vdtrain filter: %d earlier scores are not finite; scoring those samples again", nonfinite)
    barrier(world)
    done = scored_indices(output_dir)
    barrier(world)  # every process has read the same `done` before anyone appends
    todo = [index for index in range(len(records)) if index not in done]
    if group_by_length:  # longest first: similar lengths share a batch (less padding), and an OOM shows at once
        todo.sort(key=lambda index: -approximate_length(records[index]))
    mine = todo[rank::world]
    if is_main:
        logger.info("vdtrain filter: %d samples, %d already scored, %d to score", len(records), len(done), len(todo))

    pad = pad_token_id(processor)
    dataset = _Samples(records, mine, adapter, processor, image_folder, max_length, seed, str(data))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=_Collate(pad),
        num_workers=num_workers,
        pin_memory=next(model.parameters()).is_cuda,
    )
    logits_mask = accepts_logits_mask(model)
    scored = failed = 0
    bar = tqdm(total=len(mine), unit="sample", desc="vdtrain filter", disable=not (progress and is_main))
    with (
        open(output_dir / f"scores.rank{rank}.jsonl", "a") as scores_out,
        open(output_dir / f"errors.rank{rank}.jsonl", "a") as errors_out,
    ):
        for batch in loader:
            if sink is not None:
                sink.arm()
            rows, errors = _score_or_split(model, batch, adapter.pixel_key, noise_step, logits_mask, pad, scored)
            errors += [{"id": s["id"], "index": s["index"], "error": s["error"]} for s in batch["errors"]]
            if sink is not None:  # before the scores: a scored sample always has its row
                sink.write(batch, rows)
            append_jsonl(scores_out, rows)
            append_jsonl(errors_out, errors)
            scored, failed = scored + len(rows), failed + len(errors)
            bar.update(len(rows) + len(errors))
            bar.set_postfix(errors=failed, refresh=False)
            if stop_after is not None and scored >= stop_after:
                break
    bar.close()
    if sink is not None:
        sink.close()
    barrier(world)
    if not is_main:
        return None
    errors = merge_rank_files(output_dir, "errors")
    remaining = set(range(len(records))) - scored_indices(output_dir) - {int(row["index"]) for row in errors}
    if remaining:
        logger.warning("vdtrain filter: %d samples not scored yet; rerun to resume", len(remaining))
        return None
    scores = merge_rank_files(output_dir, "scores")
    if sink is not None:
        sink.merge(len(records))
    return write_report(output_dir, scores, errors)


def _records(data: Any) -> tuple[Any, Any, dict[str, Any]]:
    """`(records, name, identity for run.json)` of a JSON/JSONL file, or of a `datasets.Dataset` or folder of any
    format `vdtrain.data.sources.load_source` reads (records converted per access, images embedded or named)."""
    if isinstance(data, (str, os.PathLike)) and Path(data).is_file():
        data = Path(data)
        identity = {"data": str(data.resolve()), "data_sha256": file_sha256(data), "data_size": data.stat().st_size}
        return read_records(data), data, identity
    from vdtrain.data.sources import TableRecords, load_source

    table = data if hasattr(data, "column_names") else load_source(data)
    name = Path(data).resolve() if isinstance(data, (str, os.PathLike)) else table.info.dataset_name or "dataset"
    return TableRecords(table), name, {"data": str(name), "data_sha256": table._fingerprint, "data_size": len(table)}


def _embedding_sink(model, output_dir, rank, info, pooling, dim, seed):
    """The `--save-embeddings` hook on the clean pass (None without it), after checking earlier rows match."""
    if pooling is None:
        return None
    from vdtrain.selection.embed import EmbeddingSink, check_embedding_run

    meta = {"model": info["model"], "data_sha256": info["data_sha256"], "dtype": info["dtype"], "pooling": pooling}
    check_embedding_run(
        output_dir, {**meta, "projection": None if dim is None else {"dim": dim, "seed": seed}}, rank == 0
    )
    return EmbeddingSink(model, output_dir, rank, pooling, dim, seed)


def _score_or_split(model, batch, pixel_key, noise_step, logits_mask, pad, scored_so_far):
    """Score rows of one batch; if the batch forward fails, score its samples one by one and record failures."""
    samples = batch["samples"]
    if not samples:
        return [], []
    if any(s["image_inputs"] is not None for s in samples) and pixel_key not in batch["inputs"]:
        raise KeyError(
            f"the processor's image inputs have no {pixel_key!r} (keys: {sorted(samples[0]['image_inputs'] or [])}); "
            "the model's adapter names the wrong pixel key"
        )
    try:
        stats = score_batch(model, batch, noise_step=noise_step, pixel_key=pixel_key, logits_mask=logits_mask)
        rows = [score_row(sample, row) for sample, row in zip(samples, stats.tolist())]
        return [row for row in rows if "error" not in row], [row for row in rows if "error" in row]
    except Exception as error:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(samples) == 1:
            if scored_so_far == 0:
                raise  # nothing has worked yet: a setup problem, not a bad sample
            return [], [{"id": samples[0]["id"], "index": samples[0]["index"], "error": f"forward failed: {error}"}]
    rows, errors = [], []
    for sample in samples:
        one = collate_samples([sample], pad)
        more_rows, more_errors = _score_or_split(model, one, pixel_key, noise_step, logits_mask, pad, scored_so_far)
        rows, errors, scored_so_far = rows + more_rows, errors + more_errors, scored_so_far + len(more_rows)
    return rows, errors
