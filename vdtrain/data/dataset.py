"""One data path for training and filtering: a record becomes `Example`s (`encode_record`), an example a feature
dict (`example_features`), features a batch (`VDDataCollator`); `SupervisedDataset` is the training dataset."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from vdtrain.data.conversations import (
    image_path,
    load_image,
    special_token_pattern,
    special_token_problem,
    to_messages,
)
from vdtrain.data.images import upright_size
from vdtrain.errors import ConversationError
from vdtrain.keys import COORDINATE_CHANNELS, END_OF_TURN_MASK, HAS_IMAGE
from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models.base import (
    COORDINATE_DIMS,
    PACKED_DIMS,
    Example,
    FieldGroup,
    ModelAdapter,
    batch_image_field,
    pad_token_id,
    tokenizer_of,
)

logger = logging.getLogger(__name__)
IMAGE_INPUTS = "image_inputs"  # feature entry holding the adapter's image inputs of the one image
ROW_IMAGE_KEYS = "row_image_keys"  # feature entry naming the image inputs batched one per row (`row_image_keys`)
FIELD_GROUPS = "field_groups"  # feature entry holding the example's fields of their own length (`Example.groups`)
# fields as long as `labels`: an encoder-decoder model's labels are the decoder's, of their own length
DECODER_FIELDS = ("labels", END_OF_TURN_MASK, "decoder_input_ids")


@dataclass
class EncodedRecord:
    """What truncation to `max_length` leaves of one record's examples.

    `examples` keep every image token and at least one supervised token; `dropped` holds, per example truncation
    spoiled, `(tokens before truncation, no supervised token left, image tokens cut)`.
    """

    examples: list[Example]
    dropped: list[tuple[int, bool, bool]] = field(default_factory=list)


def encode_record(
    record: dict[str, Any],
    adapter: ModelAdapter,
    processor: Any,
    image_folder: str | os.PathLike | None,
    max_length: int,
    source: str = "data",
    image: Image.Image | None = None,
    messages: list[dict[str, str]] | None = None,
    allow_external_images: bool = False,
) -> EncodedRecord:
    """Tokenise one LLaVA-format record into the adapter's examples, truncated to `max_length` and checked.

    Args:
        image (`PIL.Image`, *optional*): the record's image when the caller has loaded it already; otherwise the
            file is opened only if the adapter's image token count depends on the image size.
        messages (`list[dict]`, *optional*): the record's turns when the caller has checked them already.
        allow_external_images (`bool`): accept an image path that resolves outside `image_folder`.
    """
    sample_id = str(record["id"])
    messages = to_messages(record, source) if messages is None else messages
    path = image_path(record, image_folder, allow_external_images) if image is None else None
    has_image = image is not None or path is not None
    num_tokens = 0
    if has_image:
        size = (64, 64)
        if image is not None:
            size = upright_size(image)  # a header-only image may still carry its EXIF rotation
        elif adapter.image_tokens_depend_on_size:
            size = load_image(path, sample_id).size
        num_tokens = adapter.num_image_tokens(processor, size)
    image_id = adapter.image_token_id(processor)
    encoded = EncodedRecord([])
    for example in adapter.encode(messages, processor, num_tokens, sample_id=sample_id):
        truncated = example.truncate(max_length)
        kept_image_tokens = truncated.input_ids.count(image_id) if has_image else 0
        no_supervised, cuts_image = truncated.num_supervised == 0, kept_image_tokens != num_tokens
        if no_supervised or cuts_image:
            encoded.dropped.append((len(example.input_ids), no_supervised, cuts_image))
        else:
            encoded.examples.append(truncated)
    return encoded


def example_features(
    example: Example, image_inputs: dict[str, torch.Tensor] | None = None, row_keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The collator's input for one example: its token fields, plus its sample's image inputs if it has an image
    (and which of them the processor batches one per row: the adapter's `row_image_keys`)."""
    features: dict[str, Any] = {
        "input_ids": example.input_ids,
        "labels": example.labels,
        END_OF_TURN_MASK: example.end_of_turn_mask,
        **example.extra,
    }
    if example.groups:
        features[FIELD_GROUPS] = dict(example.groups)
    if image_inputs is not None:
        features[IMAGE_INPUTS] = image_inputs
        if row_keys:
            features[ROW_IMAGE_KEYS] = tuple(row_keys)
    return features


def _listed(problems: list[str], shown: int = 20) -> str:
    """The first `shown` problems, one indented line each, and how many more there are."""
    lines = "\n".join(f"  {line}" for line in problems[:shown])
    return lines + (f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else "")


def conversation_problems(
    records: list[dict[str, Any]], adapter: ModelAdapter, processor: Any, source: str = "data"
) -> tuple[list[tuple[dict[str, Any], list[dict[str, str]]]], list[tuple[str, str]]]:
    """`(checked, invalid)`: each record that can be trained on with its messages, and `(sample id, problem)` of
    each that cannot (turn order, `<image>` count, special-token text in a turn)."""
    placeholders = ("<image>", adapter.image_placeholder(processor))  # the data's image marker is no misuse
    special = special_token_pattern(tokenizer_of(processor), allowed=placeholders)
    checked, invalid = [], []
    for record in records:
        try:
            messages = to_messages(record, source)
            problem = special_token_problem(messages, special, f"{source}: sample {record.get('id')!r}")
            if problem is not None:
                raise ConversationError(problem)
        except ConversationError as error:
            invalid.append((str(record.get("id")), str(error).removeprefix(f"{source}: ")))
            continue
        checked.append((record, messages))
    return checked, invalid


def invalid_samples_message(source: str, invalid: list[tuple[str, str]], total: int) -> str:
    """The one error listing the samples that cannot be trained on, and the two ways on."""
    problems = [problem for _, problem in invalid]
    return (
        f"{source}: {len(invalid)} of {total} sample(s) cannot be trained on:\n{_listed(problems)}\n"
        "Fix them, or set drop_invalid: true to train without them."
    )


class SupervisedDataset(torch.utils.data.Dataset):
    """Training examples of LLaVA-format records for one model family.

    Every conversation is checked and tokenised once at construction, so bad samples stop the run before training
    starts, with one error listing every such sample: turns out of order, special-token text in a turn (a literal
    `</s>` would become the real token), a wrong `<image>` count (`drop_invalid=True` drops these with a warning
    instead), an image outside `image_folder` (refused unless `allow_external_images=True`), and samples that
    truncation to `max_length` leaves without supervised tokens or cuts into their image tokens
    (`drop_truncated=True` drops those). Images are read per item.

    Given a `datasets.Dataset` instead of a list (LLaVA `conversations` or TRL `messages` + `images` rows, e.g.
    from `vdtrain.data.sources.load_source`), it is an `ArrowSupervisedDataset`: the same checks in one cached
    `Dataset.map` pass, examples memory-mapped from an Arrow file.

    Args:
        records: LLaVA-format records (`load_conversations`), or a `datasets.Dataset`.
        adapter: the model family's `ModelAdapter`.
        processor: the model's processor (tokenizer + image processor).
        image_folder: folder the records' `image` paths are relative to.
        max_length: tokens per sequence after image expansion.
        source: name of the data file, for error messages.
        drop_truncated: drop over-long samples (with a warning) instead of refusing them.
        drop_invalid: drop samples with bad turns or special-token text (with a warning) instead of refusing them.
        allow_external_images: accept image paths that resolve outside `image_folder`.
    """

    def __new__(cls, records: Any, *args: Any, **kwargs: Any) -> SupervisedDataset:
        """A `datasets.Dataset` of conversations gets the Arrow-cached `ArrowSupervisedDataset`."""
        if cls is SupervisedDataset and not isinstance(records, list) and hasattr(records, "column_names"):
            from vdtrain.data.cached import ArrowSupervisedDataset

            return super().__new__(ArrowSupervisedDataset)
        return super().__new__(cls)

    def __init__(
        self,
        records: list[dict[str, Any]],
        adapter: ModelAdapter,
        processor: Any,
        image_folder: str | os.PathLike | None = None,
        max_length: int = 2048,
        source: str = "data",
        drop_truncated: bool = False,
        drop_invalid: bool = False,
        allow_external_images: bool = False,
    ) -> None:
        self.adapter, self.processor, self.image_folder, self.source = adapter, processor, image_folder, source
        self.allow_external_images = allow_external_images
        self.items: list[tuple[dict[str, Any], Example]] = []
        self.dropped: list[str] = []
        too_long: list[str] = []
        checked, invalid = conversation_problems(records, adapter, processor, source)
        if invalid and not drop_invalid:
            raise ConversationError(invalid_samples_message(source, invalid, len(records)))
        for sample_id, line in invalid:
            self.dropped.append(sample_id)
            logger.warning("%s: dropped %s", source, line)
        for record, messages in tqdm(checked, desc="tokenizing", unit="sample", leave=False):
            encoded = encode_record(
                record,
                adapter,
                processor,
                image_folder,
                max_length,
                source,
                messages=messages,
                allow_external_images=allow_external_images,
            )
            for tokens, no_supervised, _ in encoded.dropped:
                reason = "no supervised token" if no_supervised else "its image tokens"
                self.dropped.append(str(record["id"]))
                too_long.append(f"sample {record['id']!r}: {tokens} tokens, truncation cuts {reason}")
            self.items += [(record, example) for example in encoded.examples]
        if too_long and not drop_truncated:
            raise ConversationError(
                f"{source}: {len(too_long)} sample(s) do not fit max_length={max_length}:\n{_listed(too_long)}\n"
                "Raise max_length, or set drop_truncated: true to train without them."
            )
        for line in too_long:
            logger.warning("%s: dropped %s (max_length=%d)", source, line, max_length)
        if not self.items:
            raise ConversationError(f"{source}: no sample is left to train on ({len(self.dropped)} dropped)")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> list[int]:
        """Tokens per training sequence (after image expansion), for length-grouped sampling without loading images."""
        return [len(example.input_ids) for _, example in self.items]

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, example = self.items[index]
        path = image_path(record, self.image_folder, self.allow_external_images)
        if path is None:
            return example_features(example)
        try:
            image = load_image(path, str(record["id"]))
        except (OSError, ConversationError) as error:  # name the data file too
            raise type(error)(f"{self.source}: {error}") from error
        image_inputs = self.adapter.image_inputs(self.processor, [image])
        return example_features(example, image_inputs, getattr(self.adapter, "row_image_keys", ()))


@dataclass
class VDDataCollator:
    """Right-pads token fields and batches per-image inputs as the processor would (`batch_image_field`; text-only
    samples add none, except to inputs batched one per row (`ROW_IMAGE_KEYS`, IDEFICS's pixels), where they add
    zeros as the processor does). `labels`, `end_of_turn_mask` and `decoder_input_ids` are padded to the longest
    `labels`, the other token fields to the longest `input_ids` (the same length in a causal LM; an encoder-decoder
    model's labels are the decoder's); empty `input_ids` (an encoder that reads pixels only) leave the text inputs out.
    The fields of each field group (`Example.groups`: InstructBLIP's Q-Former text) are padded together to the
    group's longest, one row per example that carries the group.

    Adds `END_OF_TURN_MASK` (B, L) and `HAS_IMAGE` (B,) (`vdtrain.keys`), which the loss takes out before the
    forward.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    @classmethod
    def for_processor(cls, processor: Any, **kwargs: Any) -> VDDataCollator:
        return cls(pad_token_id=pad_token_id(processor), **kwargs)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = {group: self._length(features, group) for group in ("input_ids", "labels")}
        pads = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX, END_OF_TURN_MASK: False}
        pads["decoder_input_ids"] = self.pad_token_id
        token_keys = [key for key in features[0] if key not in (IMAGE_INPUTS, ROW_IMAGE_KEYS, FIELD_GROUPS)]
        if lengths["input_ids"] == 0:  # an encoder that reads pixels only (a vision encoder-decoder): no text input
            token_keys = [key for key in token_keys if key in DECODER_FIELDS]
        batch: dict[str, torch.Tensor] = {}
        for key in token_keys:
            pad, length = pads.get(key, 0), lengths["labels" if key in DECODER_FIELDS else "input_ids"]
            first = next((values[0] for values in (feature[key] for feature in features) if len(values)), None)
            rows = [list(feature[key]) for feature in features]
            if isinstance(first, (list, tuple)):  # vectors per token (UDOP's `bbox`, IDEFICS's per-image mask)
                width = max((len(vector) for row in rows for vector in row), default=0)
                rows = [[list(vector) + [0] * (width - len(vector)) for vector in row] for row in rows]
                pad = [0] * width  # zero vectors, and zeros where a row has fewer images than the widest
            rows = [row + [pad] * (length - len(row)) for row in rows]
            batch[key] = torch.tensor(rows, dtype=torch.bool if key == END_OF_TURN_MASK else torch.long)
        length = lengths["input_ids"]
        # Attention comes from lengths, never from pad_token_id (pad == eos for Llama-3 models).
        if length:
            batch["attention_mask"] = torch.tensor(
                [[1] * len(f["input_ids"]) + [0] * (length - len(f["input_ids"])) for f in features], dtype=torch.long
            )
        batch.update(_field_groups(features))
        images = [feature[IMAGE_INPUTS] for feature in features if IMAGE_INPUTS in feature]
        packed = images[0].get(PACKED_DIMS, {}) if images else {}
        per_row = {key for feature in features for key in feature.get(ROW_IMAGE_KEYS, ())}
        for key in images[0] if images else ():
            if key in (PACKED_DIMS, COORDINATE_DIMS):
                continue
            if key in per_row:  # one entry per row, text-only rows a zero image the shape of the first
                zero = torch.zeros_like(images[0][key])
                values = [f[IMAGE_INPUTS][key] if IMAGE_INPUTS in f else zero for f in features]
                batch[key] = batch_image_field(values, packed.get(key, 0))
            else:
                batch[key] = batch_image_field([image[key] for image in images], packed.get(key, 0))
        batch[HAS_IMAGE] = torch.tensor([IMAGE_INPUTS in f for f in features], dtype=torch.bool)
        if any(COORDINATE_DIMS in image for image in images):  # the adapter's fact, per row (0: text-only)
            counts = [
                max(f[IMAGE_INPUTS].get(COORDINATE_DIMS, {}).values(), default=0) if IMAGE_INPUTS in f else 0
                for f in features
            ]
            batch[COORDINATE_CHANNELS] = torch.tensor(counts, dtype=torch.long)
        return batch

    def _length(self, features: list[dict[str, Any]], key: str) -> int:
        """The padded length of the `key` field: the longest one, rounded up to `pad_to_multiple_of`."""
        length = max(len(feature[key]) for feature in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return length


def _field_groups(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Each field group's fields, right-padded with their pad values to the longest field of the group in the
    batch: one row per feature that carries the group, in order."""
    members: dict[str, list[FieldGroup]] = {}
    for feature in features:
        for name, group in feature.get(FIELD_GROUPS, {}).items():
            members.setdefault(name, []).append(group)
    batch = {}
    for groups in members.values():
        length = max(len(values) for group in groups for values in group.fields.values())
        for key, pad in groups[0].pads.items():
            rows = [list(group.fields[key]) + [pad] * (length - len(group.fields[key])) for group in groups]
            batch[key] = torch.tensor(rows, dtype=torch.long)
    return batch
