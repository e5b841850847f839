"""Evaluation protocols (eval/*.yaml): read and check a benchmark's config before anything runs.

A config names the benchmark (`chair`, `pope` or `mme`), its question files, the prompt and the decoding; the command
line (`vdtrain eval run`, in `vdtrain.commands.eval_run`) adds the model, the data folders and where results go.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from vdtrain.evaluation.generate import DecodingOptions

CONFIG_KEYS = {
    "benchmark",
    "questions",
    "splits",
    "prompt",
    "prompt_suffix",
    "batch_size",
    "decoding",
    "chair",
    "pope",
    "categories",  # mme: only these categories (default: all present)
}


def load_protocol(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a protocol config; question paths become absolute (they are relative to the config)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"protocol config {path} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a protocol is a mapping of key: value")
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(CONFIG_KEYS)}")
    benchmark = config.get("benchmark")
    if benchmark == "chair":
        if not config.get("questions"):
            raise ValueError(f"{path}: a chair protocol needs `questions` (the image list)")
        config["splits"] = {"chair": config.pop("questions")}
    elif benchmark == "pope":
        if not isinstance(config.get("splits"), dict) or not config["splits"]:
            raise ValueError(f"{path}: a pope protocol needs `splits`, a mapping of split name to question file")
    elif benchmark == "mme":  # the questions come from the release folder given as --image-folder
        config["splits"] = {}
    else:
        raise ValueError(f"{path}: benchmark must be 'chair', 'pope' or 'mme', got {benchmark!r}")
    config["splits"] = {name: str((path.parent / file).resolve()) for name, file in config["splits"].items()}
    batch_size = config.get("batch_size")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"{path}: batch_size must be a whole number of at least 1, got {batch_size!r}")
    try:
        DecodingOptions(**(config.get("decoding") or {}))
    except ValueError as error:  # a value of the wrong type or range
        raise ValueError(f"{path}: decoding: {error}") from None
    except TypeError as error:  # an unknown field
        known = ", ".join(asdict(DecodingOptions()))
        raise ValueError(f"{path}: decoding: {error}; known fields: {known}") from None
    return config
