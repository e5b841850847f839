"""The conversation formats vdtrain reads, as one record shape: LLaVA/ShareGPT `conversations` and TRL's
`messages` + `images`, with images given as file names, bytes or PIL images.

A row of any of them becomes `(record, image)`: a LLaVA-style record `{"id", "image", "conversations"}` that
`to_messages` checks, and the image when the row embeds it (`EmbeddedImage`; None when `image` names a file).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

from vdtrain.models.base import ConversationError

FORMATS = ("llava", "messages", "json")  # `json`: one column of JSON text, for records datasets cannot type
JSON_COLUMN = "json"
EMBEDDED = "(embedded image)"  # the `image` of a record whose image the row holds itself


@dataclass
class EmbeddedImage:
    """An image the data holds itself: PIL image, or encoded bytes (opened lazily, header first)."""

    value: Any

    def open(self) -> Image.Image:
        """The image as PIL opens it (lazily: the header only until its pixels are used)."""
        if isinstance(self.value, Image.Image):
            return self.value
        from vdtrain.data.images import open_image  # the pixel limit of every image vdtrain reads

        return open_image(io.BytesIO(self.value))


def detect_format(columns: list[str]) -> str:
    """Which format a table's columns are in; an error that names the columns when none fits."""
    if columns == [JSON_COLUMN]:
        return "json"
    if "messages" in columns:
        return "messages"
    if "conversations" in columns:
        return "llava"
    raise ConversationError(
        f"no 'conversations' (LLaVA/ShareGPT) or 'messages' (TRL) column among {columns}; vdtrain reads "
        "{'id', 'image', 'conversations': [{'from', 'value'}]} or {'messages': [{'role', 'content'}], 'images'}"
    )


def _image_value(value: Any) -> tuple[str | None, EmbeddedImage | None]:
    """A file name, or an embedded image, from one image cell (str, PIL, bytes, datasets' {"bytes", "path"})."""
    if value is None or isinstance(value, str):
        return value or None, None
    if isinstance(value, Image.Image):
        return EMBEDDED, EmbeddedImage(value)
    if isinstance(value, (bytes, bytearray)):
        return EMBEDDED, EmbeddedImage(bytes(value))
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return EMBEDDED, EmbeddedImage(value["bytes"])
        return value.get("path") or None, None
    raise ConversationError(f"an image given as {type(value).__name__}; expected a file name, bytes or a PIL image")


def _images(row: dict[str, Any]) -> tuple[Any, EmbeddedImage | None]:
    """The record's `image` value and its embedded image, from an `image` or an `images` column."""
    value = row.get("image")
    if value is None and row.get("images") is not None:
        images = list(row["images"])
        if len(images) > 1:
            return images, None  # image_path names the count: vdtrain supports one image per sample
        value = images[0] if images else None
    if isinstance(value, list):
        return value, None
    return _image_value(value)


def _message_text(content: Any) -> Any:
    """TRL message content as text: a string stays, a list of `{"type": "image"|"text"}` parts joins with `<image>`
    for each image part."""
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            parts.append("<image>")
        elif kind == "text":
            parts.append(part.get("text") or "")
        else:
            raise ConversationError(f"a message part of type {kind!r}; expected 'text' or 'image'")
    return "\n".join(parts)


def to_record(row: dict[str, Any], fmt: str, index: int) -> tuple[dict[str, Any], EmbeddedImage | None]:
    """`(LLaVA-style record, embedded image or None)` of one row of a table in format `fmt`."""
    if fmt == "json":
        record = json.loads(row[JSON_COLUMN])
        if not isinstance(record, dict):
            raise ConversationError(
                f"sample {index} is a JSON {type(record).__name__}, not an object with 'conversations'"
            )
        row = record
    sample_id = row.get("id")
    sample_id = str(sample_id) if sample_id is not None else str(index)
    image, embedded = _images(row)
    if fmt == "messages":
        messages = row.get("messages")
        turns = [
            {"from": message.get("role"), "value": _message_text(message.get("content"))}
            if isinstance(message, dict)
            else message
            for message in (messages if isinstance(messages, list) else [])
        ]
        conversations: Any = turns if isinstance(messages, list) else messages
    else:
        conversations = row.get("conversations")
    return {"id": sample_id, "image": image, "conversations": conversations}, embedded
