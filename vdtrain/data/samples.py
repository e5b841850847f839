"""One sample at a time for the teacher-forced passes (filter, inspect, analysis): tokenised examples, the sample's
image inputs and its own seeded noise, and the collation of several such samples into one batch."""

from __future__ import annotations

import os
from typing import Any

import torch
from PIL import Image

from vdtrain.data.conversations import image_path, load_image
from vdtrain.data.dataset import VDDataCollator, encode_record, example_features
from vdtrain.data.formats import EmbeddedImage
from vdtrain.data.images import to_rgb
from vdtrain.errors import DataError
from vdtrain.keys import COORDINATE_CHANNELS, HAS_IMAGE, LOSS_ONLY_KEYS
from vdtrain.method.noise import seeded_generator
from vdtrain.models.base import ModelAdapter


def sample_generator(seed: int, index: int) -> torch.Generator:
    """CPU generator for the noise of sample `index`, seeded from `(seed, index)` so batching cannot change it."""
    return seeded_generator("vdtrain-filter", seed, index)


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
            raise DataError(f"{source}: record {index} is a {type(record).__name__}, not a JSON object")
        record = {**record, "id": sample_id}
        if isinstance(record.get("image"), EmbeddedImage):  # a table row's own image (TableRecords)
            image = to_rgb(record["image"].open())
        elif image is None:
            path = image_path(record, image_folder)
            image = load_image(path, sample_id) if path is not None else None
        encoded = encode_record(record, adapter, processor, image_folder, max_length, source, image=image)
        cut_image = next((tokens for tokens, _, cuts_image in encoded.dropped if cuts_image), None)
        if cut_image is not None:
            raise DataError(
                f"{source}: sample {sample_id!r}: truncation to max_length={max_length} cuts its image tokens "
                f"({cut_image} tokens); raise --max-length"
            )
        examples = encoded.examples
        if not examples:
            raise DataError(
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
    HAS_IMAGE: (E,), COORDINATE_CHANNELS: (E,) where the adapter names some, "samples": the scorable samples,
    "errors": the failed ones}`.
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
    has_image, coordinates = inputs[HAS_IMAGE], inputs.get(COORDINATE_CHANNELS)
    for key in LOSS_ONLY_KEYS:  # the scorer's forward takes model inputs only
        inputs.pop(key, None)
    if noises and all(noise is not None for noise in noises):
        batch["noise"] = torch.cat(noises, dim=0)
    batch.update(inputs=inputs, owner=torch.tensor(owner))
    batch[HAS_IMAGE] = has_image
    if coordinates is not None:
        batch[COORDINATE_CHANNELS] = coordinates
    return batch


def approximate_length(record: Any) -> int:
    """Characters of a record's turns: a tokenizer-free proxy of its token count, for grouping batches by length."""
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        return 0
    return sum(len(str(turn.get("value", turn.get("content", "")))) for turn in turns if isinstance(turn, dict))
