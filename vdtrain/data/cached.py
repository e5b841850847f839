"""`SupervisedDataset` over a `datasets.Dataset`: examples built once by `ExampleEncoder` into an Arrow cache,
every bad sample listed before training, items read from the memory-mapped table."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from vdtrain.compat import list_feature
from vdtrain.data.conversations import load_image
from vdtrain.data.dataset import (
    SupervisedDataset,
    _listed,
    encode_record,
    example_features,
    invalid_samples_message,
)
from vdtrain.data.formats import EMBEDDED, detect_format, to_record
from vdtrain.data.images import to_rgb
from vdtrain.data.tokenized import (
    PROBLEM_COLUMNS,
    ExampleEncoder,
    default_cache_dir,
    examples_fingerprint,
    expand_images,
    plain_progress,
)
from vdtrain.keys import END_OF_TURN_MASK
from vdtrain.models.base import ConversationError, Example, FieldGroup, ModelAdapter

logger = logging.getLogger("vdtrain")


def _probe(adapter: ModelAdapter, processor: Any) -> list[Example]:
    """The adapter's examples of a one-turn sample with an image."""
    messages = [{"role": "user", "content": "<image>\nhi"}, {"role": "assistant", "content": "ok"}]
    tokens = adapter.num_image_tokens(processor, (64, 64))  # as `encode_record` does for any sample with an image
    return adapter.encode(messages, processor, tokens)


def _extra_keys(adapter: ModelAdapter, processor: Any) -> list[str]:
    """The adapter's per-token fields besides ids, labels and the end-of-turn mask (`token_type_ids`, ...)."""
    return sorted({key for example in _probe(adapter, processor) for key in example.extra})


def _group_pads(adapter: ModelAdapter, processor: Any) -> dict[str, dict[str, int]]:
    """`{group: {field: pad}}` of the adapter's field groups (`Example.groups`: InstructBLIP's Q-Former text)."""
    return {name: dict(group.pads) for example in _probe(adapter, processor) for name, group in example.groups.items()}


def _features(extra_keys: list[str], lazy: bool, group_keys: tuple[str, ...] = ()) -> Any:
    import datasets

    ints = list_feature(datasets.Value("int32"))
    columns = {name: datasets.Value("string") for name in (*PROBLEM_COLUMNS, "image")}
    columns.update(ok=datasets.Value("bool"), row=datasets.Value("int64"), length=datasets.Value("int32"))
    columns.update(example=datasets.Value("int32"), image_runs=ints)
    if not lazy:
        columns.update(input_ids=ints, labels=ints, **{END_OF_TURN_MASK: list_feature(datasets.Value("bool"))})
        columns.update({key: ints for key in (*extra_keys, *group_keys)})  # a group's: None where not carried
    return datasets.Features(columns)


def build_examples(
    source: Any,
    adapter: ModelAdapter,
    processor: Any,
    *,
    image_folder: str | os.PathLike | None,
    max_length: int,
    source_name: str,
    check_images: bool = True,
    allow_external_images: bool = False,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    lazy: bool = False,
) -> tuple[Any, bool]:
    """`(table, reused)`: one row per training example (its tokens, or with `lazy` only its plan) or per problem
    of `source`'s samples, from the cache when an earlier build with the same inputs left it (`reused`)."""
    fmt = detect_format(source.column_names)
    extra_keys = _extra_keys(adapter, processor)
    group_keys = tuple(key for pads in _group_pads(adapter, processor).values() for key in pads)
    settings = {
        "image_folder": str(Path(image_folder).resolve()) if image_folder is not None else None,
        "max_length": max_length,
        "check_images": check_images,
        "allow_external_images": allow_external_images,
        "source": source_name,
        "lazy": lazy,
    }
    fingerprint = examples_fingerprint(source, adapter, processor, settings)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    reused = any(cache_dir.glob(f"examples-{fingerprint}*.arrow"))
    num_proc = num_proc if num_proc and num_proc > 1 and len(source) >= 2 * num_proc else None
    encoder = ExampleEncoder(
        fmt,
        adapter,
        processor,
        image_folder=image_folder,
        max_length=max_length,
        source=source_name,
        check_images=check_images,
        allow_external_images=allow_external_images,
        extra_keys=extra_keys,
        group_keys=group_keys,
        expected_rows=len(source) // (num_proc or 1),
        lazy=lazy,
    )
    work = "checking" if lazy else "tokenizing and checking"
    if not reused:
        logger.info("vdtrain: %s %d samples of %s into %s", work, len(source), source_name, cache_dir)
    with plain_progress():
        table = source.map(
            encoder,
            with_indices=True,
            batched=True,
            batch_size=500,
            remove_columns=source.column_names,
            features=_features(extra_keys, lazy, group_keys),
            num_proc=num_proc,
            cache_file_name=str(cache_dir / f"examples-{fingerprint}.arrow"),
            new_fingerprint=fingerprint,
            load_from_cache_file=True,
            desc=f"vdtrain: {work} {source_name}",
        )
    return table, reused


class ArrowSupervisedDataset(SupervisedDataset):
    """`SupervisedDataset` of a `datasets.Dataset` (LLaVA `conversations` or TRL `messages` + `images` rows).

    The checks and errors are `SupervisedDataset`'s, run over every sample at construction; the result lives in an
    Arrow file in `cache_dir` (default `$HF_DATASETS_CACHE/vdtrain`), memory-mapped, built by `num_proc` processes
    and reused while the data table, tokenizer, processor and settings stay the same (the image files are checked
    when it is built, not when it is reused). In a distributed launch build it under
    `vdtrain.data.tokenized.main_process_first()`.

    Args:
        records (`datasets.Dataset`): the conversations (`vdtrain.data.sources.load_source`).
        check_images (`bool`, defaults to `True`): check every image's header while building.
        num_proc (`int`, *optional*): processes that build the examples.
        cache_dir (`str`, *optional*): where the examples are kept.
        lazy (`bool`, defaults to `True`): tokenise each example when it is read (LLaVA's `lazy_preprocess`);
            construction then checks without tokenising (`vdtrain.data.lazy`) and `lengths` are estimates.
            `False` tokenises every sample into the cache first: exact `lengths`, no tokenising while training.
        The other arguments are `SupervisedDataset`'s.
    """

    def __init__(
        self,
        records: Any,
        adapter: ModelAdapter,
        processor: Any,
        image_folder: str | os.PathLike | None = None,
        max_length: int = 2048,
        source: str = "data",
        drop_truncated: bool = False,
        drop_invalid: bool = False,
        allow_external_images: bool = False,
        *,
        check_images: bool = True,
        num_proc: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        lazy: bool = True,
    ) -> None:
        self.adapter, self.processor, self.image_folder, self.source = adapter, processor, image_folder, source
        self.allow_external_images, self.table_source = allow_external_images, records
        self.max_length, self.lazy = max_length, lazy
        self.format = detect_format(records.column_names)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        if check_images and image_folder is not None and not Path(image_folder).is_dir() and has_images(records):
            raise FileNotFoundError(f"{source}: the image folder {image_folder} does not exist (image_folder)")
        table, self.reused_cache = build_examples(
            records,
            adapter,
            processor,
            image_folder=image_folder,
            max_length=max_length,
            source_name=source,
            check_images=check_images,
            allow_external_images=allow_external_images,
            num_proc=num_proc,
            cache_dir=self.cache_dir,
            lazy=lazy,
        )
        ok = table.data.column("ok").to_numpy(zero_copy_only=False).astype(bool)
        bad = np.flatnonzero(~ok)
        problems = table.select(bad).select_columns(list(PROBLEM_COLUMNS)).to_list() if len(bad) else []
        try:
            self.dropped = self._report(problems, len(records), drop_invalid, drop_truncated, max_length)
        except FileNotFoundError:  # fixed image files must not meet this build again
            table.cleanup_cache_files()
            for entry in table.cache_files:
                Path(entry["filename"]).unlink(missing_ok=True)
            raise
        keep = np.flatnonzero(ok)
        if not len(keep):
            raise ConversationError(f"{source}: no sample is left to train on ({len(self.dropped)} dropped)")
        self.examples = table if len(keep) == len(table) else table.select(keep)
        self._lengths = table.data.column("length").to_numpy(zero_copy_only=False)[keep]
        self.token_keys = [key for key in table.column_names if key in ("input_ids", "labels", END_OF_TURN_MASK)]
        self.token_keys += [key for key in _extra_keys(adapter, processor)]
        self.group_pads = _group_pads(adapter, processor)
        self.image_id = adapter.image_token_id(processor)

    def _report(
        self, problems: list[dict[str, Any]], total: int, drop_invalid: bool, drop_truncated: bool, max_length: int
    ) -> list[str]:
        """Raise the errors `SupervisedDataset` and `check_images` raise, listing every problem; the dropped ids."""
        images = [f"sample {row['sample']!r}: {row['image_problem']}" for row in problems if row["image_problem"]]
        invalid = [(row["sample"], row["problem"]) for row in problems if row["problem_kind"] == "invalid"]
        too_long = [row["problem"] for row in problems if row["problem_kind"] == "truncated"]
        if images:
            error = (
                f"{self.source}: {len(images)} of {total} images are missing or unreadable (or outside the image "
                f"folder {self.image_folder}):\n{_listed(images)}"
            )
            if invalid and not drop_invalid:
                error += "\n" + invalid_samples_message(self.source, invalid, total)
            raise FileNotFoundError(error)
        if invalid and not drop_invalid:
            raise ConversationError(invalid_samples_message(self.source, invalid, total))
        for _, line in invalid[:20]:
            logger.warning("%s: dropped %s", self.source, line)
        if too_long and not drop_truncated:
            raise ConversationError(
                f"{self.source}: {len(too_long)} sample(s) do not fit max_length={max_length}:\n{_listed(too_long)}\n"
                "Raise max_length, or set drop_truncated: true to train without them."
            )
        for line in too_long[:20]:
            logger.warning("%s: dropped %s (max_length=%d)", self.source, line, max_length)
        if len(invalid) + len(too_long) > 40:
            logger.warning("%s: %d samples dropped in all", self.source, len(invalid) + len(too_long))
        return [sample for sample, _ in invalid] + [
            row["sample"] for row in problems if row["problem_kind"] == "truncated"
        ]

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        """Tokens per training sequence (after image expansion), read from the table: exact, or with `lazy` a
        guess from the text's size that serves `group_by_length`."""
        return self._lengths.tolist()

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.examples[int(index)]
        stored = None  # `(record, embedded image)`, read from the table once when either is needed
        if self.lazy or row["image"] == EMBEDDED:
            stored = to_record(self.table_source[row["row"]], self.format, row["row"])
        image = None
        if row["image"] is not None:
            try:
                image = self._image(row, stored)
            except (OSError, ConversationError) as error:  # name the data file too
                raise type(error)(f"{self.source}: {error}") from error
        example = self._tokenized(row, image, stored[0]) if self.lazy else self._stored(row)
        if image is None:
            return example_features(example)
        image_inputs = self.adapter.image_inputs(self.processor, [image])
        return example_features(example, image_inputs, getattr(self.adapter, "row_image_keys", ()))

    def _stored(self, row: dict[str, Any]) -> Example:
        """The example the cache holds, its image runs expanded."""
        fields = expand_images({key: row[key] for key in self.token_keys}, row["image_runs"], self.image_id)
        extra = {key: fields[key] for key in self.token_keys[3:]}
        groups = {
            name: FieldGroup({key: row[key] for key in pads}, dict(pads))
            for name, pads in self.group_pads.items()
            if all(row[key] is not None for key in pads)  # the examples that carry the group
        }
        return Example(fields["input_ids"], fields["labels"], fields[END_OF_TURN_MASK], extra, groups)

    def _tokenized(self, row: dict[str, Any], image: Any, record: dict[str, Any]) -> Example:
        """The planned example, tokenised now from the conversation the table holds."""
        try:
            encoded = encode_record(
                record,
                self.adapter,
                self.processor,
                self.image_folder,
                self.max_length,
                self.source,
                image=image,
                allow_external_images=self.allow_external_images,
            )
            return encoded.examples[row["example"]]
        except (ConversationError, IndexError) as error:  # the data changed under the cache: never a wrong example
            raise ConversationError(
                f"{self.source}: sample {row['sample']!r} no longer gives the example checked before training "
                f"({error}); delete {self.cache_dir} or the changed data and rerun"
            ) from error

    def _image(self, row: dict[str, Any], stored: tuple[dict[str, Any], Any] | None) -> Any:
        if row["image"] != EMBEDDED:
            return load_image(Path(row["image"]), row["sample"])
        embedded = stored[1]
        try:
            return to_rgb(embedded.open())
        except OSError as error:
            raise ConversationError(f"sample {row['sample']!r}: cannot decode its embedded image: {error}") from error


def has_images(records: Any) -> bool:
    """Whether any sample may name an image (a null-count look at the image columns, no rows read)."""
    for name in ("image", "images"):
        if name in records.column_names:
            column = records.data.column(name)
            if column.null_count < len(column):
                return True
    return "json" in records.column_names  # records kept as JSON text: not known without reading them
