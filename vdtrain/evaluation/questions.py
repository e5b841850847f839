"""Benchmark question, answer and caption files: reading, matching images to them, writing answer lines (no torch)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vdtrain.errors import DataError, InputError
from vdtrain.io import read_objects, resume_jsonl

FORMATS = ("pope", "chair", "images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_COCO_NAME = re.compile(r"^(?:COCO_[A-Za-z]+\d{4}_)?(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


_IMAGE_FILE_ID = re.compile(r"(\d+)\.[A-Za-z]+$")


def caption_image_id(value: object, where: str) -> int:
    """The COCO image id of a caption record's `image_id` (an int, digits, or a COCO file name); `where` names it."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().isdigit():
            return int(value)
        match = _IMAGE_FILE_ID.search(value)
        if match:
            return int(match.group(1))
    raise DataError(f"{where}: cannot read a COCO image id from {value!r}")


def load_captions(
    path: str | os.PathLike,
    image_id_key: str = "image_id",
    caption_key: str = "caption",
    questions: str | os.PathLike | None = None,
) -> list[dict]:
    """Load generated captions as `{"image_id": int, "caption": str}` records, in file order.

    Args:
        path (`str` or `os.PathLike`): `.jsonl` or `.json` list.
        image_id_key (`str`, defaults to `"image_id"`): key of the image id; records without it may instead give an
            `image` file name (`COCO_val2014_000000012345.jpg`, `000000012345.jpg`).
        caption_key (`str`, defaults to `"caption"`): key of the caption; `text` is used when it is absent.
        questions (`str` or `os.PathLike`, *optional*): a question file mapping `question_id` to `image`, for answer
            files (LLaVA's `model_vqa`) that carry neither an image id nor an image name.
    """
    image_of = {str(q["question_id"]): q.get("image") for q in read_objects(questions)} if questions else {}
    captions = []
    for number, record in enumerate(read_objects(path), 1):
        where = f"{path}: record {number}" + (
            f" (question_id {record['question_id']})" if "question_id" in record else ""
        )
        if image_id_key in record:
            raw = record[image_id_key]
        elif "image" in record:
            raw = record["image"]
        elif str(record.get("question_id")) in image_of:
            raw = image_of[str(record["question_id"])]
        else:
            raise DataError(f"{where} has no {image_id_key!r} or 'image' key: pass --image-id-key or --questions")
        caption = record[caption_key] if caption_key in record else record.get("text")
        if not isinstance(caption, str):
            raise DataError(f"{where} has no caption text under {caption_key!r} (or 'text'): pass --caption-key")
        entry = {"image_id": caption_image_id(raw, where), "caption": caption}
        if "question_id" in record:
            entry["question_id"] = record["question_id"]
        captions.append(entry)
    return captions


def coco_image_id(name: str) -> int | None:
    """The COCO image id in `COCO_val2014_000000012345.jpg` or `000000012345.jpg`, else None."""
    match = _COCO_NAME.match(Path(str(name)).name)
    return int(match.group(1)) if match else None


def load_questions(
    path: str | os.PathLike, fmt: str | None = None, prompt: str | None = None
) -> tuple[list[dict], str]:
    """`(questions, format)`: records `{"question_id", "image", "text", ...}` from a question file or image list.

    Args:
        path: POPE jsonl (has `label`), CHAIR list (`question_id`, `image`, `text`), a folder of images or a `.txt`
            list of image names.
        fmt (`str`, *optional*): `pope`, `chair` or `images`; guessed from the file when not given.
        prompt (`str`, *optional*): replaces every question's text; required for plain image lists.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"question file {path} does not exist")
    if path.is_dir() or path.suffix == ".txt":
        if path.is_dir():
            names = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise DataError(f"{path}: no images listed")
        records = [{"question_id": name, "image": name} for name in names]
        fmt = fmt or "images"
    else:
        records = read_objects(path)
        fmt = fmt or ("pope" if any("label" in record for record in records) else "chair")
    if fmt not in FORMATS:
        raise InputError(f"question format must be one of {FORMATS}, got {fmt!r}")
    seen: set[str] = set()
    for number, record in enumerate(records, 1):
        if not record.get("image"):
            raise DataError(f"{path}: record {number} has no 'image'")
        record.setdefault("question_id", record["image"])
        if prompt is not None:
            record["text"] = prompt
        if not isinstance(record.get("text"), str):
            raise DataError(f"{path}: question_id {record['question_id']!r} has no 'text'; pass --prompt")
        key = str(record["question_id"])
        if key in seen:
            raise DataError(f"{path}: question_id {key!r} appears twice; answers are matched and resumed by id")
        seen.add(key)
    return records, fmt


def resolve_image(image_folder: str | os.PathLike, name: str) -> Path:
    """The image file for `name`, also trying the other COCO naming (`COCO_val2014_` prefix added or dropped)."""
    folder = Path(image_folder)
    path = folder / name
    if path.is_file():
        return path
    image_id = coco_image_id(name)
    if image_id is not None:
        for candidate in (
            f"COCO_val2014_{image_id:012d}.jpg",
            f"COCO_train2014_{image_id:012d}.jpg",
            f"{image_id:012d}.jpg",
        ):
            if (folder / candidate).is_file():
                return folder / candidate
    return path


def read_answers(path: str | os.PathLike) -> list[dict]:
    """Answers already in `path`; a truncated last line (a run killed mid-write) is cut off the file."""
    return resume_jsonl(path)


def answer_record(question: Mapping[str, Any], fmt: str, question_text: str, text: str) -> dict:
    """One output line: the ids the scorers match on, the question as asked, and the answer."""
    record = {"question_id": question["question_id"], "image": question["image"]}
    image_id = coco_image_id(question["image"])
    if image_id is not None:
        record["image_id"] = image_id
    record |= {"prompt": question_text, "text": text}
    if fmt == "pope":
        record["answer"] = text
    elif fmt in ("chair", "images"):
        record["caption"] = text
    return record
