"""JSON and JSONL files: reads whose errors name the file and line, atomic writes, append-and-resume for JSONL.

Every file vdtrain reads or writes (conversation data, score and answer files, reports, caches) goes through here,
so a half-written file is never left for a reader and a damaged one is reported as `path, line N: ...`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from vdtrain.errors import DataError, StorageError

logger = logging.getLogger(__name__)

FORMATS = ("json", "jsonl")


# ---------------------------------------------------------------------------------------------- reading
def read_json(path: str | os.PathLike) -> Any:
    """The value of a JSON file; a parse error names the file, line and column."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = False, skip_bad_lines: bool = False) -> list[Any]:
    """The rows of a JSONL file (blank lines skipped).

    Args:
        missing_ok (`bool`, defaults to `False`): a missing file reads as no rows instead of raising.
        skip_bad_lines (`bool`, defaults to `False`): log and skip an unparsable line (a killed writer's last)
            instead of raising an error that names the file and the line.
    """
    path = Path(path)
    if missing_ok and not path.is_file():
        return []
    return list(iter_jsonl(path, skip_bad_lines=skip_bad_lines))


def iter_jsonl(path: str | os.PathLike, *, skip_bad_lines: bool = False) -> Iterator[Any]:
    """`read_jsonl`'s rows one at a time (a million score rows need not be a million dicts at once)."""
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                if not skip_bad_lines:
                    raise DataError(f"{path}, line {number}: not a JSON line ({error.msg})") from None
                logger.warning("%s, line %d: unreadable (an interrupted write?), ignored", path, number)
                continue
            yield row


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content (identifies a data file wherever it moves)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def records_format(path: str | os.PathLike) -> str:
    """`"json"` for a file holding one JSON list, else `"jsonl"` (one value per line), from its first character."""
    with open(path, encoding="utf-8-sig") as handle:
        while chunk := handle.read(4096):
            if chunk.strip():
                return "json" if chunk.lstrip().startswith("[") else "jsonl"
    return "jsonl"


def read_records(path: str | os.PathLike) -> list[Any]:
    """The records of a JSON list or a JSONL file exactly as stored, so record `i` is element/line `i` of the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    if records_format(path) == "jsonl":
        return read_jsonl(path)
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list or JSONL, got a JSON {type(records).__name__}")
    return records


def iter_records(path: str | os.PathLike, chunk: int = 1 << 20) -> Iterator[Any]:
    """The records of a JSON list or JSONL file one at a time, as `read_records` has them, holding one chunk of the
    file (not the file) in memory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    if records_format(path) == "jsonl":
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as error:
                        raise DataError(f"{path}, line {number}: not a JSON line ({error.msg})") from None
        return
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as handle:
        buffer, position, count, done = "", 0, 0, False

        def fill() -> bool:  # more text after the unread part; False at the end of the file
            nonlocal buffer, position, done
            more = handle.read(chunk)
            buffer, position, done = buffer[position:] + more, 0, not more
            return bool(more)

        def skip() -> str:  # the next non-blank character ("" at the end of the file)
            nonlocal position
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n":
                    position += 1
                if position < len(buffer) or not fill():
                    return buffer[position : position + 1]

        if skip() != "[":
            raise DataError(f"{path}: expected a JSON list or JSONL")
        position += 1
        if skip() == "]":
            return
        while True:
            skip()
            try:
                value, end = decoder.raw_decode(buffer, position)
                if end == len(buffer) and not done:  # a number or literal may go on in the next chunk
                    raise json.JSONDecodeError("cut", buffer, end)
            except json.JSONDecodeError as error:
                if fill():
                    continue
                raise DataError(f"{path}: record {count + 1} is not valid JSON ({error.msg})") from None
            yield value
            count, position = count + 1, end
            following = skip()
            if following == "]":
                return
            if following != ",":
                raise DataError(f"{path}: expected ',' or ']' after record {count}, found {following!r}")
            position += 1
            if position > chunk:
                buffer, position = buffer[position:], 0


def read_objects(path: str | os.PathLike) -> list[dict[str, Any]]:
    """`read_records` for files whose every record must be a JSON object (questions, answers, captions)."""
    records = read_records(path)
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {number} is a {type(record).__name__}; expected JSON objects")
    return records


# ---------------------------------------------------------------------------------------------- full disks
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}
_NEARLY_FULL = 64 << 20  # bytes: a save that failed with less than this left was most likely cut by the full disk


def storage_problem(path: str | os.PathLike) -> str | None:
    """Why nothing more can be written under `path` (full, read-only or not ours), from the file system; else None."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    folder = folder if folder.is_dir() else folder.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return STORAGE_ERRNOS[errno.EROFS]
    if not os.access(folder, os.W_OK):
        return STORAGE_ERRNOS[errno.EACCES]
    free = stats.f_bavail * stats.f_frsize
    if free < _NEARLY_FULL:
        return f"{STORAGE_ERRNOS[errno.ENOSPC]} ({free / 2**20:.1f} MiB free)"
    return None


def storage_error(error: BaseException, path: str | os.PathLike) -> StorageError | None:
    """`error` as one `StorageError` line naming the path, when a full, read-only or unwritable disk caused it (an
    `OSError` with that errno, or any library's save error while the disk is in that state); else None."""
    if isinstance(error, StorageError):
        return error
    reason = STORAGE_ERRNOS.get(getattr(error, "errno", None)) if isinstance(error, OSError) else None
    a_save_error = isinstance(error, (OSError, RuntimeError)) or type(error) is Exception  # tokenizers' is bare
    if reason is None and (a_save_error or type(error).__name__ == "SafetensorError"):
        reason = storage_problem(path)
    if reason is None:
        return None
    target = getattr(error, "filename", None) or path
    converted = StorageError(f"cannot write {target}: {reason}")
    converted.errno = getattr(error, "errno", None) or errno.ENOSPC
    return converted


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn any error of the block that a full, read-only or unwritable disk under `path` caused (torch's
    `inline_container.cc` errors, a tokenizers exception, a bare `[Errno 28]`) into a `StorageError` naming it."""
    try:
        yield
    except Exception as error:
        converted = storage_error(error, path)
        if converted is None or converted is error:
            raise
        raise converted from error


# ---------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that go by it still do) to write the whole file to;
    renamed over `path` when the block ends without an error, removed otherwise: readers never see half a file.

    For writers that take a path (a figure's `savefig`, an image's `save`); text goes through `atomic_write_text`.
    """
    path = Path(path)
    if path.is_dir():  # os.replace would name the temporary file
        raise IsADirectoryError(f"{path} is a directory; name the file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.{os.getpid()}{path.suffix}")
    try:
        with writing(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: readers never see half a file.
    `fsync` also forces the bytes to disk before the rename (a completion marker must not outlive a crash alone)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_json(
    path: str | os.PathLike, value: Any, *, indent: int | None = 2, fsync: bool = False, **dump_kwargs: Any
) -> None:
    """`json.dumps(value)` and a final newline, written atomically."""
    atomic_write_text(path, json.dumps(value, indent=indent, **dump_kwargs) + "\n", fsync=fsync)


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any], **dump_kwargs: Any) -> None:
    """One JSON line per row, written atomically."""
    atomic_write_text(path, "".join(json.dumps(row, **dump_kwargs) + "\n" for row in rows))


def write_records(path: str | os.PathLike, records: list[Any], fmt: str) -> None:
    """Records as a JSON list (`fmt="json"`, one-space indent) or JSONL, atomically, keeping non-ASCII text as is."""
    if fmt not in FORMATS:
        raise ValueError(f"record format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "json":
        atomic_write_text(path, json.dumps(records, ensure_ascii=False, indent=1))
    else:
        atomic_write_jsonl(path, records, ensure_ascii=False)


class RecordWriter:
    """`write_records` one record at a time: the same bytes, in a temporary file renamed over `path` on success."""

    def __init__(self, path: str | os.PathLike, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"record format must be one of {FORMATS}, got {fmt!r}")
        self.path, self.fmt, self.count = Path(path), fmt, 0
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory; name the file to write")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp.{os.getpid()}")
        self.handle = open(self.tmp, "w", encoding="utf-8")

    def write(self, record: Any) -> None:
        if self.fmt == "jsonl":
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:  # json.dumps(list, indent=1) indents each element's lines by one space
            text = json.dumps(record, ensure_ascii=False, indent=1).replace("\n", "\n ")
            self.handle.write(("[\n " if not self.count else ",\n ") + text)
        self.count += 1

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if kind is None:
                if self.fmt == "json":
                    self.handle.write("\n]" if self.count else "[]")
                self.handle.close()
                os.replace(self.tmp, self.path)
        finally:
            self.handle.close()
            self.tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- append and resume
def append_jsonl(handle: IO[str], rows: Iterable[Any], *, fsync: bool = False, **dump_kwargs: Any) -> None:
    """Append rows to an open JSONL file and flush (and `fsync`, for results that took minutes to compute), so a
    killed process loses at most the rows in flight."""
    text = "".join(json.dumps(row, **dump_kwargs) + "\n" for row in rows)
    if not text:
        return
    try:
        descriptor = handle.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory handle
        handle.write(text)
        handle.flush()
        return
    handle.flush()
    data = memoryview(text.encode(getattr(handle, "encoding", None) or "utf-8"))
    with writing(getattr(handle, "name", "output")):  # unbuffered: a failed write leaves nothing for close() to retry
        while data:
            data = data[os.write(descriptor, data) :]
        if fsync:
            os.fsync(descriptor)


def repair_jsonl(path: str | os.PathLike) -> None:
    """Cut a JSONL file back to its last complete line, so appending after a killed run starts on a fresh line."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def resume_jsonl(path: str | os.PathLike) -> list[Any]:
    """The complete rows of a JSONL file being appended to; an unfinished last row is cut off the file.

    A missing file has no rows. A damaged line followed by more rows is not an interrupted append, so it raises,
    naming the file and the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    rows, offset = [], 0
    for number, line in enumerate(lines, start=1):
        complete = number < len(lines)  # the last piece has no newline after it
        try:
            row = json.loads(line) if line.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            row = ...
        if row is ... or (row is not None and not complete):
            if complete and any(rest.strip() for rest in lines[number:]):
                raise DataError(f"{path}:{number}: not a JSON line; the file is damaged before its end")
            with open(path, "r+b") as handle:  # drop the unfinished row; the writer produces it again
                handle.truncate(offset)
            break
        if row is not None:
            rows.append(row)
        offset += len(line) + 1
    return rows


def recorded_run_changes(path: Path, info: dict[str, Any], fields: Iterable[str], is_main: bool) -> list[str]:
    """What differs in `fields` between `info` and the run recorded at `path` (`"field: X there, Y now"`), so a
    folder never mixes two runs' outputs; where none is recorded yet, the main process records `info`."""
    if not path.is_file():
        if is_main:
            atomic_write_json(path, info)
        return []
    previous = read_json(path)
    return [
        f"{field}: {previous.get(field)!r} there, {info.get(field)!r} now"
        for field in fields
        if previous.get(field) != info.get(field)
    ]
