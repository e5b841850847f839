"""Conversations checked (and tokenised, unless on access) in one `Dataset.map` pass into an Arrow cache on disk,
as TRL's `SFTTrainer` does: memory-mapped (not Python lists), `num_proc` workers, reused by a rerun with the same
data, tokenizer and settings, and by the other ranks of a launch once the main process has built it.

Every bad sample (turns, `<image>` count, special-token text, truncation, a missing or unreadable image) is listed
before training starts. Each sample becomes one row per training example, or one row naming what is wrong with it.
With `lazy` (`lazy_preprocess`, the default of `vdtrain train`) a row only plans its example (which sample, which of
its examples, a length guess; `vdtrain.data.lazy` shows truncation cannot spoil it) and the trainer tokenises it on
access, as LLaVA's `LazySupervisedDataset` does: the pass costs the checks, not the tokenizer (about 0.1 of it
per sample), so 665k samples start in about a minute. Without it a row holds the tokens (int32/bool lists with every
run of image tokens kept as one token and its count in `image_runs`, expanded again on access): exact lengths for
`group_by_length` and no tokenising while training, for the price of tokenising every sample first.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vdtrain.data.conversations import image_path, special_token_pattern, special_token_problem, to_messages
from vdtrain.data.formats import EMBEDDED, EmbeddedImage, to_record
from vdtrain.data.images import open_image, upright_size
from vdtrain.data.lazy import PrefixBound
from vdtrain.keys import END_OF_TURN_MASK
from vdtrain.models import spans as supervised_spans
from vdtrain.models.base import ConversationError, ModelAdapter, tokenizer_of

logger = logging.getLogger("vdtrain")
CACHE_VERSION = "2"  # bump when the rows' layout changes
PROBLEM_COLUMNS = ("sample", "image_problem", "problem", "problem_kind")
_POOLS: dict[int, ThreadPoolExecutor] = {}  # per process id (a forked worker inherits no live threads)


def default_cache_dir() -> Path:
    """`$HF_DATASETS_CACHE/vdtrain`: beside the Arrow tables `datasets` makes of the data files."""
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "vdtrain"


@contextlib.contextmanager
def main_process_first() -> Iterator[bool]:
    """Run the body on each node's main process first, then on the others (which then find its cache); yields
    whether this process is the one that goes first."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    first = not distributed or int(os.environ.get("LOCAL_RANK", dist.get_rank() if distributed else 0)) == 0
    try:
        if not first:
            dist.barrier()
        yield first
    finally:
        if distributed and first:
            dist.barrier()


@contextlib.contextmanager
def plain_progress() -> Iterator[None]:
    """`datasets`' progress bars (rate, ETA) on a terminal; in a log file none (they would be carriage-return
    spam), the few plain lines vdtrain logs instead."""
    import datasets

    quiet = not sys.stderr.isatty() and datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if quiet:
            datasets.enable_progress_bars()


def _source_files(dataset: Any) -> list[tuple[str, int, int]]:
    """`(file, size, mtime)` of the Arrow files behind a dataset, so a changed file never reuses a stale cache."""
    found = []
    for entry in getattr(dataset, "cache_files", []) or []:
        with contextlib.suppress(OSError):
            stat = os.stat(entry["filename"])
            found.append((entry["filename"], stat.st_size, stat.st_mtime_ns))
    return found


def _tokenizer_state(tokenizer: Any) -> list[str]:
    """What a tokenizer's encodings depend on: its vocabulary and rules, and its special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return [vocabulary, repr(getattr(tokenizer, "special_tokens_map", {}))]


def examples_fingerprint(source: Any, adapter: ModelAdapter, processor: Any, settings: dict[str, Any]) -> str:
    """A hash of everything the examples depend on: the data table, the tokenizer and processor, the adapter's and
    this module's code and the settings."""
    tokenizer = tokenizer_of(processor)
    parts = [
        CACHE_VERSION,
        source._fingerprint,
        repr(_source_files(source)),
        *_tokenizer_state(tokenizer),
        repr(getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)),
        repr(getattr(getattr(processor, "image_processor", None), "to_json_string", lambda: None)()),
        type(adapter).__module__ + "." + type(adapter).__qualname__,
        repr(sorted(settings.items())),
    ]
    attributes = getattr(processor, "get_attributes", None)
    for name in attributes() if callable(attributes) else ():  # other tokenizers (InstructBLIP's Q-Former's)
        if name != "tokenizer" and name.endswith("tokenizer") and getattr(processor, name, None) is not None:
            parts += _tokenizer_state(getattr(processor, name))
    # every class the adapter inherits its encoding from (generic.py under plain.py) and the span rules it applies
    adapter_code = [klass for klass in type(adapter).__mro__ if klass.__module__.startswith("vdtrain.")]
    for module in (*adapter_code, supervised_spans, sys.modules[__name__], to_messages, PrefixBound):
        with contextlib.suppress(OSError, TypeError):
            parts.append(inspect.getsource(inspect.getmodule(module)))
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "replace") + b"\0")
    return digest.hexdigest()[:32]


def _check_header(path: Path | None, embedded: EmbeddedImage | None) -> tuple[Image.Image | None, str | None]:
    """`(image opened lazily, problem)`: the file exists and its header reads as an image (about 0.1 ms)."""
    try:
        if embedded is not None:
            image = embedded.open()
            image.size  # noqa: B018 (the header is read)
            return image, None
        if not path.is_file():
            return None, f"{path} (missing)"
        with open_image(path) as image:
            return image, None
    except ConversationError as error:  # over the pixel limit: the size and the setting that raises it
        where = "(embedded image)" if embedded is not None else str(path)
        return None, f"{where} ({str(error).removeprefix('image ').removeprefix(where).strip()})"
    except (OSError, ValueError) as error:  # UnidentifiedImageError is an OSError
        where = "(embedded image)" if embedded is not None else str(path)
        return None, f"{where} (cannot be read as an image: {type(error).__name__})"


def collapse_images(fields: dict[str, np.ndarray], image_id: int | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Keep each run of image tokens as its first token; `(fields, image_runs)` with the run length of every image
    token left. Runs whose other fields are not constant stay as they are (runs of length 1)."""
    ids = fields["input_ids"]
    is_image = ids == image_id if image_id is not None else np.zeros(len(ids), dtype=bool)
    if not is_image.any():
        return fields, np.zeros(0, dtype=np.int32)
    start = is_image.copy()
    start[1:] &= ~is_image[:-1]
    run = np.cumsum(start) - 1  # run number of each image token
    first = np.flatnonzero(start)[run[is_image]]  # where each image token's run starts
    if all(np.array_equal(values[is_image], values[first]) for values in fields.values()):
        keep = ~is_image | start
        return {key: values[keep] for key, values in fields.items()}, np.bincount(run[is_image]).astype(np.int32)
    return fields, np.ones(int(is_image.sum()), dtype=np.int32)


def expand_images(fields: dict[str, list], image_runs: list[int], image_id: int | None) -> dict[str, list]:
    """Undo `collapse_images`: each image token repeated its run length."""
    if not image_runs:
        return fields
    ids = np.asarray(fields["input_ids"])
    repeats = np.ones(len(ids), dtype=np.int64)
    repeats[ids == image_id] = image_runs
    return {key: np.repeat(np.asarray(values), repeats).tolist() for key, values in fields.items()}


class ExampleEncoder:
    """The `map` function: a batch of rows in any supported format becomes example rows and problem rows."""

    def __init__(
        self,
        fmt: str,
        adapter: ModelAdapter,
        processor: Any,
        *,
        image_folder: str | os.PathLike | None,
        max_length: int,
        source: str,
        check_images: bool,
        allow_external_images: bool,
        extra_keys: list[str],
        group_keys: tuple[str, ...] = (),
        expected_rows: int,
        lazy: bool = False,
    ) -> None:
        from vdtrain.data.dataset import encode_record  # noqa: F401 (fail here, not in a worker)

        self.fmt, self.adapter, self.processor, self.source = fmt, adapter, processor, source
        self.image_folder, self.max_length, self.check_images = image_folder, max_length, check_images
        self.allow_external_images, self.extra_keys, self.expected_rows = (
            allow_external_images,
            extra_keys,
            expected_rows,
        )
        self.group_keys = group_keys  # the fields of the adapter's field groups (`Example.groups`)
        self.image_id = adapter.image_token_id(processor)
        placeholders = ("<image>", adapter.image_placeholder(processor))
        self.special = special_token_pattern(tokenizer_of(processor), allowed=placeholders)
        self.lazy = lazy  # rows plan the examples (tokenised on access) instead of holding their tokens
        self.bound = PrefixBound(adapter, processor) if lazy else None
        self.log_progress = not sys.stderr.isatty()
        self._done, self._started, self._logged = 0, time.monotonic(), time.monotonic()

    @property
    def token_keys(self) -> list[str]:
        """The token fields the rows hold: none when the examples are tokenised on access."""
        return [] if self.lazy else ["input_ids", "labels", END_OF_TURN_MASK, *self.extra_keys]

    @property
    def group_columns(self) -> tuple[str, ...]:
        """The field-group fields the rows hold (None where an example does not carry the group)."""
        return () if self.lazy else self.group_keys

    def _empty(self) -> dict[str, list]:
        columns = (*PROBLEM_COLUMNS, "ok", "image", "row", "example", "image_runs", "length", *self.token_keys)
        return {key: [] for key in (*columns, *self.group_columns)}

    def _add(self, out: dict[str, list], item: dict[str, Any], **values: Any) -> None:
        empty = {key: np.zeros(0, dtype=bool if key == END_OF_TURN_MASK else np.int32) for key in self.token_keys}
        tokens = values.pop("tokens", None) or empty  # typed: an untyped [] would be read as float64
        runs = values.pop("image_runs", np.zeros(0, dtype=np.int32))
        groups = values.pop("groups", {})
        for key in self.token_keys:
            out[key].append(tokens[key])
        for key in self.group_columns:
            out[key].append(groups.get(key))
        path, embedded = item["path"], EMBEDDED if item["embedded"] is not None else None
        out["sample"].append(item["sample"])
        out["row"].append(item["index"])
        out["image"].append(str(path) if path is not None else embedded)
        out["image_runs"].append(runs)
        out["example"].append(values.pop("example", 0))
        out["length"].append(values.pop("length", 0))
        out["ok"].append(values.pop("ok", False))
        for key in ("image_problem", "problem", "problem_kind"):
            out[key].append(values.pop(key, None))

    def _prepare(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        """The record, its messages (or the problem with them) and where its image is."""
        item: dict[str, Any] = {"index": index, "sample": str(row.get("id", index)), "path": None, "embedded": None}
        try:
            record, item["embedded"] = to_record(row, self.fmt, index)
            item["sample"] = record["id"]
            item["record"] = record
        except (ConversationError, ValueError, TypeError, AttributeError) as error:
            item["problem"] = f"sample {item['sample']!r}: {error}"
            return item
        try:
            messages = to_messages(record, self.source)
            problem = special_token_problem(messages, self.special, f"{self.source}: sample {record['id']!r}")
            if problem is not None:
                raise ConversationError(problem)
            item["messages"] = messages
        except ConversationError as error:
            item["problem"] = str(error).removeprefix(f"{self.source}: ")
        if item["embedded"] is None:
            try:
                item["path"] = image_path(record, self.image_folder, self.allow_external_images)
            except ConversationError as error:
                item["image_problem"] = str(error).split(": ", 1)[-1]
        return item

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        collecting = gc.isenabled()
        gc.disable()  # the batch makes many acyclic objects: collections would walk the whole heap (1.6x the pass)
        try:
            return self._rows(batch, indices)
        finally:
            if collecting:
                gc.enable()

    def _rows(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        items = [self._prepare(row, index) for row, index in zip(rows, indices)]
        headers = [(None, None)] * len(items)
        if self.check_images:
            if os.getpid() not in _POOLS:  # headers are checked in threads: file access waits, even when cached
                _POOLS[os.getpid()] = ThreadPoolExecutor(max_workers=16)
            pool = _POOLS[os.getpid()]
            wanted = [i for i, item in enumerate(items) if item["path"] is not None or item["embedded"] is not None]
            for position, header in zip(
                wanted, pool.map(lambda i: _check_header(items[i]["path"], items[i]["embedded"]), wanted)
            ):
                headers[position] = header
        out = self._empty()
        for item, (image, image_problem) in zip(items, headers):
            image_problem = item.get("image_problem") or image_problem
            problem = item.get("problem")
            if problem is None and image_problem is None:
                try:
                    if not (self.lazy and self._plan(out, item, image)):
                        self._encode(out, item, image)
                    continue
                except (ConversationError, OSError) as error:
                    problem = str(error).removeprefix(f"{self.source}: ")
            kind = "invalid" if problem is not None else None
            self._add(out, item, image_problem=image_problem, problem=problem, problem_kind=kind)
        self._progress(len(items))
        return out

    def _plan(self, out: dict[str, list], item: dict[str, Any], image: Image.Image | None) -> bool:
        """Rows for the sample's examples, untokenised, when its bound shows truncation cannot spoil any (see
        `vdtrain.data.lazy`); False when only tokenising can tell."""
        messages = item["messages"]
        count = self.adapter.count_examples(messages)
        has_image = item["path"] is not None or item["embedded"] is not None
        if count is None or (has_image and image is None and self.adapter.image_tokens_depend_on_size):
            return False  # images unchecked, and their size matters: only encoding opens them
        size = (upright_size(image) if image is not None else (64, 64)) if has_image else None
        bounds = self.bound.bounds(messages, count, size)
        if bounds is None or max(bounds) >= self.max_length:
            return False
        length = self.bound.length(messages, count, size, self.max_length)
        for example in range(count):
            self._add(out, item, example=example, length=length, ok=True)
        return True

    def _encode(self, out: dict[str, list], item: dict[str, Any], image: Image.Image | None) -> None:
        from vdtrain.data.dataset import encode_record

        record = item["record"]
        if item["embedded"] is not None and image is None:
            image = item["embedded"].open()
        encoded = encode_record(
            record,
            self.adapter,
            self.processor,
            self.image_folder,
            self.max_length,
            self.source,
            image=image,
            messages=item["messages"],
            allow_external_images=self.allow_external_images,
        )
        for tokens, no_supervised, _ in encoded.dropped:
            reason = "no supervised token" if no_supervised else "its image tokens"
            problem = f"sample {record['id']!r}: {tokens} tokens, truncation cuts {reason}"
            self._add(out, item, problem=problem, problem_kind="truncated")
        for ordinal, example in enumerate(encoded.examples):
            if self.lazy:
                self._add(out, item, example=ordinal, length=len(example.input_ids), ok=True)
                continue
            fields = {
                "input_ids": np.asarray(example.input_ids, dtype=np.int32),
                "labels": np.asarray(example.labels, dtype=np.int32),
                END_OF_TURN_MASK: np.asarray(example.end_of_turn_mask, dtype=bool),
                **{key: np.asarray(example.extra[key], dtype=np.int32) for key in self.extra_keys},
            }
            fields, runs = collapse_images(fields, self.image_id)
            groups = {
                key: np.asarray(values, dtype=np.int32)
                for group in example.groups.values()
                for key, values in group.fields.items()
            }
            self._add(
                out,
                item,
                tokens=fields,
                groups=groups,
                image_runs=runs,
                length=len(example.input_ids),
                ok=True,
            )

    def _progress(self, count: int) -> None:
        """A plain log line a minute when stderr is no terminal (tqdm's bars would be carriage-return spam)."""
        self._done += count
        now = time.monotonic()
        if not self.log_progress or now - self._logged < 60:
            return
        self._logged = now
        rate = self._done / max(now - self._started, 1e-9)
        left = max(self.expected_rows - self._done, 0) / rate
        logger.info(
            "vdtrain: %s: tokenized and checked %d samples (%.0f/s, about %.0f s left in this worker)",
            self.source,
            self._done,
            rate,
            left,
        )
