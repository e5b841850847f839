"""Files of the filtering workflow: data in its own format (JSON list or JSONL), append-only JSONL, atomic writes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


def read_records(path: str | os.PathLike) -> tuple[list[Any], str]:
    """`(records, "json" | "jsonl")` exactly as stored, so that record `i` is line/element `i` of the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    text = path.read_text()
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON: {error}") from error
        return records, "json"
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not valid JSON (expected a JSON list or JSONL): {error}"
                ) from error
    return records, "jsonl"


def write_records(path: str | os.PathLike, records: list[Any], fmt: str) -> None:
    """Write records as a JSON list (`fmt="json"`) or JSONL, atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        if fmt == "json":
            json.dump(records, handle, ensure_ascii=False, indent=1)
        else:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """`json.dump` to a temporary file renamed over `path`, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a missing file is empty, and an unparsable line (a killed writer's last) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s, line %d: unreadable (an interrupted write?), ignored", path, number)
    return rows


def repair_jsonl(path: str | os.PathLike) -> None:
    """Cut a JSONL file back to its last complete line, so appending after a killed run starts on a fresh line."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def append_jsonl(handle: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    """Append rows and flush, so a killed process loses at most the batch in flight."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if text:
        handle.write(text)
        handle.flush()
