"""LLaVA conversation JSON: loading through `datasets`, validation, image paths."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vdtrain.data.images import image_problem
from vdtrain.data.images import load_image as load_image  # re-exported: callers import it from here
from vdtrain.errors import ConversationError
from vdtrain.io import read_records

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def load_conversations(path: str | os.PathLike, max_samples: int | None = None) -> list[dict[str, Any]]:
    """Read a LLaVA-format JSON list (or JSONL) of `{"id", "image"?, "conversations": [...]}` records."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    _check_is_sample_list(path)
    try:
        split = "train" if max_samples is None else f"train[:{max_samples}]"
        records = datasets.load_dataset("json", data_files=str(path), split=split).to_list()
    except Exception:  # heterogeneous records that datasets cannot type: plain JSON keeps them as they are
        records = read_records(path)  # a parse error names the file and line
        records = records[:max_samples] if max_samples is not None else records
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ConversationError(
                f"{path}: sample {index} is a JSON {type(record).__name__}, not an object with 'conversations'"
            )
        record.setdefault("id", str(index))
        record["id"] = str(record["id"]) if record["id"] is not None else str(index)
    return records


def _check_is_sample_list(path: Path) -> None:
    """Refuse a file that is one JSON object or value instead of a list (or JSONL) of samples, saying what it is."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        head = handle.read(1 << 16).lstrip()
    if not head:
        raise ConversationError(f"{path} is empty; expected a JSON list of samples (or JSONL)")
    if head[0] == "[":
        rest = head[1:].lstrip()
        try:  # the first element only (datasets would turn a list of strings into {"text": ...} rows)
            first, _ = json.JSONDecoder().raw_decode(rest) if rest[:1] not in ("", "]") else ({}, 0)
        except json.JSONDecodeError:
            return  # an element longer than the peek, or bad JSON: the full read says which
        if not isinstance(first, dict):
            raise ConversationError(
                f"{path}: sample 0 is a JSON {type(first).__name__}, not an object with 'conversations'"
            )
        return
    if head[0] != "{":
        raise ConversationError(f"{path} is not a JSON list of samples (or JSONL): it starts with {head[:20]!r}")
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError:
        return  # more than one value: JSONL
    if isinstance(value, dict) and not ("conversations" in value and len(value) <= 4):
        keys = ", ".join(map(repr, list(value)[:5])) + (", ..." if len(value) > 5 else "")
        lists = [key for key, item in value.items() if isinstance(item, list)]
        hint = f"; the samples may be the list under {lists[0]!r}: save that list alone" if lists else ""
        raise ConversationError(
            f"{path} holds one JSON object (keys {keys}), not a list of samples{hint}. Expected "
            '[{"id", "image", "conversations": [...]}, ...] or one such object per line (JSONL).'
        )


def to_messages(record: dict[str, Any], source: str = "data") -> list[dict[str, str]]:
    """The record's turns as `[{"role": "user"|"assistant", "content"}]`, checked for what training needs."""
    sample = f"{source}: sample {record.get('id')!r}"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ConversationError(f"{sample} has no 'conversations' list")
    messages = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise ConversationError(
                f"{sample}: turn {number} is a JSON {type(turn).__name__}, not an object with 'from' and 'value'"
            )
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        if role is None:
            raise ConversationError(f"{sample}: unknown speaker {turn.get('from')!r} (expected 'human' or 'gpt')")
        content = turn.get("value", turn.get("content", ""))
        if not isinstance(content, str):
            raise ConversationError(f"{sample}: turn {number}'s 'value' is a JSON {type(content).__name__}, not text")
        messages.append({"role": role, "content": content})
    if not any(message["role"] == "assistant" for message in messages):
        raise ConversationError(f"{sample} has no assistant ('gpt') turn, so nothing would be supervised")
    _check_turn_order(messages, sample)
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


def _check_turn_order(messages: list[dict[str, str]], sample: str) -> None:
    """Start with a user turn, alternate user/assistant, end with an assistant turn (what the templates assume)."""
    speaker = {"user": "human", "assistant": "gpt"}
    if messages[0]["role"] != "user":
        raise ConversationError(
            f"{sample}: turn 1 is a {speaker[messages[0]['role']]!r} turn; a conversation starts with a 'human' turn"
        )
    for number, (before, after) in enumerate(zip(messages, messages[1:]), start=2):
        if before["role"] == after["role"]:
            raise ConversationError(
                f"{sample}: turns {number - 1} and {number} are both {speaker[after['role']]!r}; turns alternate "
                "'human', 'gpt' (merge the two, or drop the sample)"
            )
    if messages[-1]["role"] != "assistant":
        raise ConversationError(
            f"{sample}: the last turn ({len(messages)}) is a 'human' turn nothing answers; "
            "end with a 'gpt' turn (or drop the last turn)"
        )


def special_token_pattern(tokenizer: Any, allowed: tuple[str, ...] = ()) -> re.Pattern | None:
    """A regex of the tokenizer's special-token texts (`</s>`, `<|eot_id|>`, ...) other than `allowed`, longest
    first; None when there are none."""
    texts = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            texts.add(str(token))
    texts = sorted((t for t in texts if t and t not in allowed), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, texts))) if texts else None


def special_token_problem(messages: list[dict[str, str]], pattern: re.Pattern | None, sample: str) -> str | None:
    """Why a conversation cannot be trained on as written: special-token text in a turn would become the real
    token (a literal `</s>` inside an answer ends the turn mid-answer)."""
    if pattern is None:
        return None
    for number, message in enumerate(messages, start=1):
        found = pattern.search(message["content"])
        if found:
            return (
                f"{sample}: turn {number} ({message['role']}) contains the special-token text {found.group()!r}, "
                "which would be read as that token; remove it (or set drop_invalid: true to drop such samples)"
            )
    return None


def image_path(
    record: dict[str, Any], image_folder: str | os.PathLike | None, allow_external: bool = False
) -> Path | None:
    """Where the record's image file is, or None for a text-only sample. With an image folder, a path that leads
    outside it as written (absolute elsewhere, or `../`) is refused unless `allow_external`; symlinks inside the
    folder are the user's layout and are followed."""
    if not record.get("image"):
        return None
    name = record["image"]
    if isinstance(name, list):
        if len(name) != 1:
            raise ConversationError(
                f"sample {record.get('id')!r}: {len(name)} images; vdtrain supports one per sample"
            )
        name = name[0]
    if not isinstance(name, str):
        raise ConversationError(
            f"sample {record.get('id')!r}: 'image' is a JSON {type(name).__name__}, not a file name "
            "(relative to the image folder)"
        )
    path = Path(image_folder or ".") / name
    if image_folder is not None and not allow_external:
        # lexically, as written: a symlinked subfolder (LLaVA's `coco -> /datasets/coco`) stays inside
        root = os.path.normpath(image_folder)
        inside = os.path.normpath(os.path.join(root, name))
        if inside != root and not inside.startswith(root.rstrip(os.sep) + os.sep):
            raise ConversationError(
                f"sample {record.get('id')!r}: image {name!r} resolves outside the image folder {image_folder}; "
                "set allow_external_images: true to allow it"
            )
    return path


def check_images(
    records: list[dict[str, Any]],
    image_folder: str | os.PathLike | None,
    source: str = "data",
    allow_external: bool = False,
) -> None:
    """Stop with one error that lists every missing or unreadable image file, before any training starts.

    Reads each file's header only (PIL opens lazily), which catches empty files, non-images and unknown formats
    at about 0.1 ms per image; a file damaged past its header still fails later, naming the sample and the file.
    """
    if image_folder is not None and not Path(image_folder).is_dir() and any(r.get("image") for r in records):
        raise FileNotFoundError(f"{source}: the image folder {image_folder} does not exist (image_folder)")
    bad = []
    for record in tqdm(records, desc="checking images", unit="sample", leave=False):
        try:
            path = image_path(record, image_folder, allow_external)
        except ConversationError as error:
            bad.append((record["id"], str(error).split(": ", 1)[-1]))
            continue
        if path is None:
            continue
        if not path.is_file():
            bad.append((record["id"], f"{path} (missing)"))
            continue
        if (problem := image_problem(path)) is not None:
            bad.append((record["id"], f"{path} ({problem})"))
    if bad:
        listed = "\n".join(f"  sample {sample_id!r}: {what}" for sample_id, what in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise FileNotFoundError(
            f"{source}: {len(bad)} of {len(records)} images are missing or unreadable (or outside the image "
            f"folder {image_folder}):\n{listed}{more}"
        )
