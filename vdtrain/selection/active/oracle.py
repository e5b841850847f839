"""Oracles answer the loop's queries with class labels: from an array (simulation), or through files for a person
(`queries.jsonl` out, `labels.jsonl` in)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vdtrain.errors import InputError
from vdtrain.io import atomic_write_jsonl, read_jsonl

QUERIES_FILE, LABELS_FILE = "queries.jsonl", "labels.jsonl"


@runtime_checkable
class Oracle(Protocol):
    """Labels for queried ids, or None while they are not all known yet (the loop then stops and resumes later)."""

    def label(self, ids: Sequence[str], round_index: int) -> list[int] | None:
        """Class indices of `ids`, in order; None if some are still missing."""


class ArrayOracle:
    """Known labels: `labels` is a mapping id → class, or a sequence aligned with `ids`."""

    def __init__(self, labels: Mapping[Any, int] | Sequence[int], ids: Sequence[Any] | None = None):
        if isinstance(labels, Mapping):
            self.labels = {str(k): int(v) for k, v in labels.items()}
        else:
            if ids is None or len(ids) != len(labels):
                raise ValueError("a label sequence needs the ids it is aligned with, one per label")
            self.labels = {str(i): int(v) for i, v in zip(ids, labels)}

    def label(self, ids: Sequence[str], round_index: int) -> list[int]:
        """The stored labels of `ids`."""
        missing = [i for i in ids if str(i) not in self.labels]
        if missing:
            raise InputError(f"the oracle has no label for {len(missing)} queried ids, e.g. {missing[0]!r}")
        return [self.labels[str(i)] for i in ids]


class FileOracle:
    """A person labels in files: each round's queries go to `DIR/queries.jsonl` (`{"id", "round"}` per line), the
    answers are read from `DIR/labels.jsonl` (`{"id", "label"}` per line, any order, earlier rounds may stay).

    Labels are class indices, or class names when `classes` is given.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        classes: Sequence[str] | None = None,
        labels_file: str | os.PathLike | None = None,
    ):
        self.directory = Path(directory)
        self.labels_path = Path(labels_file) if labels_file else self.directory / LABELS_FILE
        self.queries_path = self.directory / QUERIES_FILE
        self.classes = list(classes) if classes is not None else None

    def known(self) -> dict[str, int]:
        """`{id: class index}` of every answer in the labels file so far."""
        known: dict[str, int] = {}
        for number, row in enumerate(read_jsonl(self.labels_path, missing_ok=True), start=1):
            if not isinstance(row, dict) or "id" not in row or "label" not in row:
                raise InputError(f'{self.labels_path}, line {number}: expected {{"id": ..., "label": ...}}')
            known[str(row["id"])] = self._class_index(row["label"], number)
        return known

    def _class_index(self, label: Any, number: int) -> int:
        if self.classes is not None and isinstance(label, str):
            if label not in self.classes:
                raise InputError(f"{self.labels_path}, line {number}: unknown class {label!r} (known: {self.classes})")
            return self.classes.index(label)
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise InputError(f"{self.labels_path}, line {number}: label {label!r} is not a class index")
        return label

    def label(self, ids: Sequence[str], round_index: int) -> list[int] | None:
        """The labels of `ids` if `labels.jsonl` has them all; else writes `queries.jsonl` and returns None."""
        known = self.known()
        if all(str(i) in known for i in ids):
            return [known[str(i)] for i in ids]
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_jsonl(
            self.queries_path, [{"id": str(i), "round": round_index} for i in ids if str(i) not in known]
        )
        return None
