"""Where conversations come from: a LLaVA JSON/JSONL file, a local parquet/arrow/jsonl folder, a dataset saved with
`save_to_disk`, or a hub id, each read by `datasets` into an Arrow table (memory-mapped, cached on disk)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vdtrain.compat import list_feature, list_feature_types
from vdtrain.data.formats import JSON_COLUMN, detect_format, to_record
from vdtrain.errors import InputError
from vdtrain.io import iter_records, records_format

FOLDER_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def _undecoded_images(dataset: Any) -> Any:
    """The same table with its image columns left encoded (`{"bytes", "path"}`): decoding every image to check a
    header or count tokens would cost what training costs."""
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, list_feature_types()) and isinstance(feature.feature, datasets.Image):
            dataset = dataset.cast_column(name, list_feature(datasets.Image(decode=False)))
    return dataset


def _rows(path: str, size: int, mtime: int) -> Iterator[dict[str, Any]]:
    """The records of a JSON list one at a time (`size` and `mtime` key datasets' cache of them); a text-only
    sample gets `image: None`, so its row has the columns of the others."""
    for record in iter_records(path):
        yield {"image": None, **record} if isinstance(record, dict) and "conversations" in record else record


def _json_rows(path: str, size: int, mtime: int) -> Iterator[dict[str, str]]:
    """Each record as its JSON text, for files whose records datasets cannot type alike."""
    for record in iter_records(path):
        yield {JSON_COLUMN: json.dumps(record)}


def _folder(path: Path, split: str) -> Any:
    """A folder: a `save_to_disk` dataset (or DatasetDict), else the data files in it by their extension."""
    import datasets

    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    files = [file for file in sorted(path.rglob("*")) if file.suffix in FOLDER_BUILDERS and file.is_file()]
    kinds = {FOLDER_BUILDERS[file.suffix] for file in files}
    if len(kinds) != 1:
        found = ", ".join(sorted(kinds)) or "none"
        raise FileNotFoundError(
            f"data folder {path}: expected data files of one kind (parquet, arrow, jsonl/json or csv), found {found}"
        )
    return datasets.load_dataset(str(path), split=split)


def load_source(
    data_path: str | os.PathLike | None = None,
    *,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    max_samples: int | None = None,
) -> Any:
    """Conversations as a `datasets.Dataset` in one of the `vdtrain.data.formats` formats, images not decoded.

    Args:
        data_path (`str`): a LLaVA-format JSON list or JSONL file, or a folder (parquet/arrow/jsonl files, or a
            dataset saved with `save_to_disk`).
        dataset_name (`str`): a hub dataset id (or any name `datasets.load_dataset` takes), instead of `data_path`.
        dataset_config (`str`, *optional*): the hub dataset's configuration.
        split (`str`, defaults to `"train"`): the split to train on.
        max_samples (`int`, *optional*): keep only the first N samples.
    """
    import datasets

    from vdtrain.data.conversations import _check_is_sample_list

    if (data_path is None) == (dataset_name is None):
        raise InputError("give the conversations as data_path (a file or folder) or dataset_name (a hub id), not both")
    if dataset_name is not None:
        dataset = datasets.load_dataset(dataset_name, dataset_config, split=split)
    else:
        path = Path(data_path)
        if path.is_dir():
            dataset = _folder(path, split)
        elif not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        else:
            _check_is_sample_list(path)  # one JSON object, or a list of strings, is named as such
            stamp = {"path": str(path.resolve()), "size": path.stat().st_size, "mtime": path.stat().st_mtime_ns}
            try:
                if records_format(path) == "json":  # datasets' json builder would load the whole list (8x the file)
                    dataset = datasets.Dataset.from_generator(_rows, gen_kwargs=stamp)
                else:
                    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
                detect_format(dataset.column_names)
            except Exception:  # records datasets cannot type alike: each kept as its JSON text, checked per sample
                for _ in iter_records(path):  # a parse error names the file and the record
                    pass
                dataset = datasets.Dataset.from_generator(_json_rows, gen_kwargs=stamp)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    detect_format(dataset.column_names)
    return _undecoded_images(dataset)


def source_name(data_path: str | os.PathLike | None, dataset_name: str | None, split: str = "train") -> str:
    """How errors name the data: the file or folder, else the hub id and split."""
    return str(data_path) if data_path is not None else f"{dataset_name}[{split}]"


class TableRecords(Sequence):
    """A table's rows as LLaVA-style records, converted on access: the input of `vdtrain filter score`. An image
    the row holds itself is the record's `image` as an `EmbeddedImage`; a row that cannot be read is returned as
    `{"id", "conversations": None}` with its problem, which the scorer records as that sample's error."""

    def __init__(self, table: Any) -> None:
        self.table, self.format = table, detect_format(table.column_names)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            record, embedded = to_record(self.table[int(index)], self.format, int(index))
        except (ValueError, TypeError, AttributeError) as error:
            return {"id": str(index), "conversations": None, "problem": str(error)}
        if embedded is not None:
            record["image"] = embedded
        return record
