"""LLaVA conversation JSON: loading through `datasets`, validation, image paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from vdtrain.io import read_records
from vdtrain.models.base import ConversationError

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def load_conversations(path: str | os.PathLike, max_samples: int | None = None) -> list[dict[str, Any]]:
    """Read a LLaVA-format JSON list (or JSONL) of `{"id", "image"?, "conversations": [...]}` records."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        split = "train" if max_samples is None else f"train[:{max_samples}]"
        records = datasets.load_dataset("json", data_files=str(path), split=split).to_list()
    except Exception:  # heterogeneous records that datasets cannot type: plain JSON keeps them as they are
        records = read_records(path)  # a parse error names the file and line
        records = records[:max_samples] if max_samples is not None else records
    for index, record in enumerate(records):
        record.setdefault("id", str(index))
        record["id"] = str(record["id"]) if record["id"] is not None else str(index)
    return records


def to_messages(record: dict[str, Any], source: str = "data") -> list[dict[str, str]]:
    """The record's turns as `[{"role": "user"|"assistant", "content"}]`, checked for what training needs."""
    sample = f"{source}: sample {record.get('id')!r}"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ConversationError(f"{sample} has no 'conversations' list")
    messages = []
    for turn in turns:
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        if role is None:
            raise ConversationError(f"{sample}: unknown speaker {turn.get('from')!r} (expected 'human' or 'gpt')")
        messages.append({"role": role, "content": str(turn.get("value", turn.get("content", "")))})
    if not any(message["role"] == "assistant" for message in messages):
        raise ConversationError(f"{sample} has no assistant ('gpt') turn, so nothing would be supervised")
    placeholders = sum(message["content"].count("<image>") for message in messages)
    has_image = bool(record.get("image"))
    if has_image and placeholders != 1:
        raise ConversationError(
            f"{sample} has an image but {placeholders} '<image>' placeholders; put exactly one in the first human turn"
        )
    if not has_image and placeholders:
        raise ConversationError(f"{sample} has {placeholders} '<image>' placeholders but no 'image' field")
    if has_image and "<image>" not in messages[0]["content"]:
        raise ConversationError(f"{sample}: '<image>' must be in the first human turn")
    return messages


def image_path(record: dict[str, Any], image_folder: str | os.PathLike | None) -> Path | None:
    """Where the record's image file is, or None for a text-only sample."""
    if not record.get("image"):
        return None
    name = record["image"]
    if isinstance(name, list):
        if len(name) != 1:
            raise ConversationError(
                f"sample {record.get('id')!r}: {len(name)} images; vdtrain supports one per sample"
            )
        name = name[0]
    return Path(image_folder or ".") / name


def check_images(records: list[dict[str, Any]], image_folder: str | os.PathLike | None, source: str = "data") -> None:
    """Stop with one error that lists every missing or unreadable image file, before any training starts.

    Reads each file's header only (PIL opens lazily), which catches empty files, non-images and unknown formats
    at about 0.1 ms per image; a file damaged past its header still fails later, naming the sample and the file.
    """
    bad = []
    for record in tqdm(records, desc="checking images", unit="sample", leave=False):
        path = image_path(record, image_folder)
        if path is None:
            continue
        if not path.is_file():
            bad.append((record["id"], f"{path} (missing)"))
            continue
        try:
            with Image.open(path):
                pass
        except (OSError, ValueError) as error:  # UnidentifiedImageError is an OSError
            bad.append((record["id"], f"{path} (cannot be read as an image: {type(error).__name__})"))
    if bad:
        listed = "\n".join(f"  sample {sample_id!r}: {what}" for sample_id, what in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise FileNotFoundError(
            f"{source}: {len(bad)} of {len(records)} images are missing or unreadable (image folder {image_folder}):\n"
            f"{listed}{more}"
        )


def load_image(path: Path, sample_id: str = "?") -> Image.Image:
    """Open an image as RGB, with an error that names the sample and the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"sample {sample_id!r}: image {path} does not exist") from error
    except OSError as error:
        raise ConversationError(f"sample {sample_id!r}: cannot decode image {path}: {error}") from error
