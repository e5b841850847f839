"""Offline scoring of a conversation dataset by visual dependence (thesis 5.4.5): two no-grad forwards per sample.

Each process scores its share of the samples not yet scored, appends one JSON line per sample to
`scores.rank{r}.jsonl` as each batch finishes, and the main process merges them into `scores.jsonl` (ordered by
index) once every sample is scored or failed. The noise of sample `i` comes from a generator seeded from
`(seed, i)`, so a score does not depend on the batch size, the order or the number of processes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from vdtrain.data.conversations import image_path, load_image
from vdtrain.data.dataset import VDDataCollator, encode_record, example_features
from vdtrain.data.keys import HAS_IMAGE, LOSS_ONLY_KEYS
from vdtrain.dependence import IGNORE_INDEX, POSITIVE_THRESHOLD, visual_dependence
from vdtrain.filtering.runs import (
    ERRORS_FILE,
    barrier,
    check_run,
    distributed,
    file_sha256,
    merge_rank_files,
    scored_indices,
)
from vdtrain.forward import no_grad_logprobs
from vdtrain.io import append_jsonl, read_records, repair_jsonl
from vdtrain.models.base import ModelAdapter, accepts_logits_mask, get_adapter, pad_token_id, unwrap_model
from vdtrain.noise import add_diffusion_noise, seeded_generator

logger = logging.getLogger(__name__)


def sample_generator(seed: int, index: int) -> torch.Generator:
    """CPU generator for the noise of sample `index`, seeded from `(seed, index)` so batching cannot change it."""
    return seeded_generator("vdtrain-filter", seed, index)


# ---------------------------------------------------------------------------------------------- samples and batches
def prepare_sample(
    record: Any,
    index: int,
    adapter: ModelAdapter,
    processor: Any,
    image_folder: str | os.PathLike | None,
    *,
    max_length: int,
    seed: int,
    source: str = "data",
    image: Image.Image | None = None,
) -> dict[str, Any]:
    """Tokenise one record and load its image and noise; `{"index", "id", "error"}` if the sample cannot be scored.

    Returns `{"index", "id", "examples", "image_inputs", "noise"}`: the adapter's examples truncated to
    `max_length` (those left without supervised tokens dropped), the model's image inputs for the one image and
    `eps` for the pixel tensor drawn from `sample_generator(seed, index)` (None for text-only samples). `image`,
    when given, is the record's image (already loaded) instead of the file its `image` field names.
    """
    sample_id = str(record.get("id", index)) if isinstance(record, dict) else str(index)
    try:
        if not isinstance(record, dict):
            raise ValueError(f"{source}: record {index} is a {type(record).__name__}, not a JSON object")
        record = {**record, "id": sample_id}
        if image is None:
            path = image_path(record, image_folder)
            image = load_image(path, sample_id) if path is not None else None
        encoded = encode_record(record, adapter, processor, image_folder, max_length, source, image=image)
        cut_image = next((tokens for tokens, _, cuts_image in encoded.dropped if cuts_image), None)
        if cut_image is not None:
            raise ValueError(
                f"{source}: sample {sample_id!r}: truncation to max_length={max_length} cuts its image tokens "
                f"({cut_image} tokens); raise --max-length"
            )
        examples = encoded.examples
        if not examples:
            raise ValueError(
                f"{source}: sample {sample_id!r}: nothing supervised after truncation to max_length={max_length}; "
                "raise --max-length"
            )
        image_inputs, noise = None, None
        if image is not None:
            image_inputs = adapter.image_inputs(processor, [image])
            pixels = image_inputs.get(adapter.pixel_key)
            if pixels is not None:  # a missing pixel key is a setup error, reported by the scoring loop
                noise = torch.randn(pixels.shape, generator=sample_generator(seed, index), dtype=torch.float32)
        return {"index": index, "id": sample_id, "examples": examples, "image_inputs": image_inputs, "noise": noise}
    except Exception as error:  # any bad record becomes an error row; the run goes on
        return {"index": index, "id": sample_id, "error": f"{type(error).__name__}: {error}"}


def collate_samples(samples: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Collate every example of the scorable samples with the training collator; each example gets its sample's image.

    Returns `{"inputs": model inputs with labels, "noise", "owner": (E,) sample position of each example,
    HAS_IMAGE: (E,), "samples": the scorable samples, "errors": the failed ones}`.
    """
    ok = [sample for sample in samples if "error" not in sample]
    errors = [sample for sample in samples if "error" in sample]
    features, owner, noises = [], [], []
    for position, sample in enumerate(ok):
        for example in sample["examples"]:
            features.append(example_features(example, sample["image_inputs"]))
            owner.append(position)
            if sample["image_inputs"] is not None:
                noises.append(sample["noise"])
    batch: dict[str, Any] = {"samples": ok, "errors": errors, "inputs": {}, "noise": None}
    if not features:
        return batch
    inputs = VDDataCollator(pad_token_id)(features)
    has_image = inputs[HAS_IMAGE]
    for key in LOSS_ONLY_KEYS:  # the scorer's forward takes model inputs only
        inputs.pop(key)
    if noises and all(noise is not None for noise in noises):
        batch["noise"] = torch.cat(noises, dim=0)
    batch.update(inputs=inputs, owner=torch.tensor(owner))
    batch[HAS_IMAGE] = has_image
    return batch


def approximate_length(record: Any) -> int:
    """Characters of a record's turns: a tokenizer-free proxy of its token count, for grouping batches by length."""
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        return 0
    return sum(len(str(turn.get("value", turn.get("content", "")))) for turn in turns if isinstance(turn, dict))


# ---------------------------------------------------------------------------------------------- the hot path
@torch.no_grad()
def teacher_forced_logprobs(
    model: torch.nn.Module, batch: dict[str, Any], *, noise_step: int, pixel_key: str, logits_mask: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`(log p_clean, log p_noisy, labels)` of a collated batch (`collate_samples`): one clean and one noised no-grad
    pass, `(N,)` float32 log-probs of every supervised target in row-major order, and the labels on the model's
    device. `log p_noisy` is None for a batch without images (nothing to noise)."""
    device = next(model.parameters()).device
    dtype = getattr(model, "dtype", torch.float32)
    inputs = {key: value.to(device, non_blocking=True) for key, value in batch["inputs"].items()}
    pixels = inputs.get(pixel_key)
    if pixels is not None and pixels.is_floating_point():
        inputs[pixel_key] = pixels.to(dtype)
    labels = inputs.pop("labels")
    logp_clean = no_grad_logprobs(model, inputs, labels, logits_mask)  # (N,)
    if pixels is None:
        return logp_clean, None, labels
    noise = batch["noise"].to(device, non_blocking=True)
    inputs[pixel_key] = add_diffusion_noise(pixels.float(), noise_step, noise=noise).to(dtype)  # f32 math
    return logp_clean, no_grad_logprobs(model, inputs, labels, logits_mask), labels


def batch_dependence(
    model: torch.nn.Module, batch: dict[str, Any], *, noise_step: int, pixel_key: str, logits_mask: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(d, labels)`: Eq. 5.1's `d` `(N,)` of every supervised target of a collated batch in row-major order (0 for
    text-only examples: nothing changes under noise), and the labels on the model's device."""
    logp_clean, logp_noisy, labels = teacher_forced_logprobs(
        model, batch, noise_step=noise_step, pixel_key=pixel_key, logits_mask=logits_mask
    )
    if logp_noisy is None:
        return torch.zeros_like(logp_clean), labels
    rows = (labels[:, 1:] != IGNORE_INDEX).nonzero()[:, 0]  # (N,) example of each target, row-major
    return visual_dependence(logp_clean, logp_noisy) * batch[HAS_IMAGE].to(labels.device)[rows], labels


def score_batch(
    model: torch.nn.Module, batch: dict[str, Any], *, noise_step: int, pixel_key: str, logits_mask: bool = True
) -> torch.Tensor:
    """Per-sample `[sum d, n_tokens, n_pos, n_neg]` `(S, 4)` float64 for a collated batch: one clean, one noised pass.

    Text-only examples get `d = 0` (nothing changes under noise) and a batch without images skips the noised pass.
    """
    d, labels = batch_dependence(model, batch, noise_step=noise_step, pixel_key=pixel_key, logits_mask=logits_mask)
    rows = (labels[:, 1:] != IGNORE_INDEX).nonzero()[:, 0]  # (N,) example of each target, row-major
    values = torch.stack([d, torch.ones_like(d), d > POSITIVE_THRESHOLD, d < -POSITIVE_THRESHOLD], dim=1)
    stats = torch.zeros(len(batch["samples"]), 4, dtype=torch.float64, device=labels.device)
    return stats.index_add_(0, batch["owner"].to(labels.device)[rows], values.double())  # (S, 4)


def score_row(sample: dict[str, Any], stats: list[float]) -> dict[str, Any]:
    """The `scores.jsonl` line of one sample from its `[sum d, n_tokens, n_pos, n_neg]`."""
    total, count, positive, negative = stats
    count = int(count)
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
) -> dict[str, Any] | None:
    """Score every sample of `data` by visual dependence into `output_dir`, resuming what an earlier run left.

    Writes `scores.jsonl` (`id, index, score = sum_t d, n_tokens, mean, frac_pos, frac_neg`), `errors.jsonl`
    (`id, index, error`) for samples that cannot be scored, `run.json` and (main process) `summary.json` and
    `score_hist.png`. Run it in every process of a launch; each scores a share and the main one merges.

    Args:
        model (`torch.nn.Module`): the scoring model (a fine-tuned one, as in the paper), on its device, eval mode.
        processor: the model's processor.
        data (`str`): LLaVA-format JSON list or JSONL.
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

    Returns:
        The summary dict (main process, all samples done), else None.
    """
    from vdtrain.filtering.report import write_report

    rank, world = distributed()
    is_main = rank == 0
    output_dir, data = Path(output_dir), Path(data)
    adapter = adapter or get_adapter(model, processor)
    info = {
        "model": model_name or str(getattr(unwrap_model(model).config, "_name_or_path", "") or type(model).__name__),
        "adapter": adapter_name,
        "data": str(data.resolve()),
        "data_sha256": file_sha256(data),
        "data_size": data.stat().st_size,
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
    if is_main:  # a killed run may have left half a line; failed samples are retried every run
        for path in output_dir.glob("scores.rank*.jsonl"):
            repair_jsonl(path)
        for path in [output_dir / ERRORS_FILE, *output_dir.glob("errors.rank*.jsonl")]:
            path.unlink(missing_ok=True)
    barrier(world)
    records = read_records(data)
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
            rows, errors = _score_or_split(model, batch, adapter.pixel_key, noise_step, logits_mask, pad, scored)
            errors += [{"id": s["id"], "index": s["index"], "error": s["error"]} for s in batch["errors"]]
            append_jsonl(scores_out, rows)
            append_jsonl(errors_out, errors)
            scored, failed = scored + len(rows), failed + len(errors)
            bar.update(len(rows) + len(errors))
            bar.set_postfix(errors=failed, refresh=False)
            if stop_after is not None and scored >= stop_after:
                break
    bar.close()
    barrier(world)
    if not is_main:
        return None
    errors = merge_rank_files(output_dir, "errors")
    remaining = set(range(len(records))) - scored_indices(output_dir) - {int(row["index"]) for row in errors}
    if remaining:
        logger.warning("vdtrain filter: %d samples not scored yet; rerun to resume", len(remaining))
        return None
    scores = merge_rank_files(output_dir, "scores")
    return write_report(output_dir, scores, errors)


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
        return [score_row(sample, row) for sample, row in zip(samples, stats.tolist())], []
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
