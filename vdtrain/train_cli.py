"""`vdtrain train CONFIG.yaml [--field value ...]`: fine-tune with the visual-dependence loss from a recipe."""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from typing import Any

import yaml

from vdtrain.config import DataArguments, ModelArguments, VDTrainingArguments

logger = logging.getLogger("vdtrain")
USAGE = """vdtrain train [CONFIG.yaml] [--field value ...]

Fine-tune a vision-language model with LoRA and the visual-dependence loss. CONFIG.yaml holds any of the fields
below; `--field value` on the command line overrides it. Runs under `accelerate launch -m vdtrain train ...` too.
"""


def parser():
    """The `HfArgumentParser` over the model, data and training dataclasses (also renders `--help`)."""
    from transformers import HfArgumentParser

    return HfArgumentParser((ModelArguments, DataArguments, VDTrainingArguments), usage=USAGE)


def _parse_overrides(argv: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--"):
            raise SystemExit(f"vdtrain train: expected --field value, got {token!r}")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if index + 1 < len(argv) and not argv[index + 1].startswith("--"):
                value, index = argv[index + 1], index + 1
            else:
                value = "true"  # a bare flag
        overrides[key.replace("-", "_")] = value
        index += 1
    return overrides


def load_config(
    config_path: str | os.PathLike | None, overrides: dict[str, Any] | None = None
) -> tuple[ModelArguments, DataArguments, VDTrainingArguments]:
    """Parse a YAML recipe plus overrides into the three dataclasses; unknown fields stop with their names."""
    values: dict[str, Any] = {}
    source = "command line"
    if config_path is not None:
        source = str(config_path)
        with open(config_path) as handle:
            values = yaml.safe_load(handle) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{config_path}: a recipe is a mapping of field: value, got {type(values).__name__}")
    values.update(overrides or {})
    hf_parser = parser()
    known = {action.dest for action in hf_parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        hints = [f"{key} (did you mean {', '.join(difflib.get_close_matches(key, known, n=2))}?)"
                 if difflib.get_close_matches(key, known, n=2) else key for key in unknown]  # fmt: skip
        raise ValueError(f"{source}: unknown field(s): {'; '.join(hints)}. `vdtrain train --help` lists them.")
    try:
        return hf_parser.parse_args_into_dataclasses(args=_to_argv(values), look_for_args_file=False)
    except ValueError as error:  # a field's own check (`vd_start: 2`): say which recipe holds it
        raise ValueError(f"{source}: {error}") from error


def _to_argv(values: dict[str, Any]) -> list[str]:
    """Fields as command-line tokens, so argparse applies each field's type (YAML reads `2e-4` as a string)."""
    argv: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain train`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in argv):
        parser().print_help()
        return 0
    config_path = argv.pop(0) if argv and not argv[0].startswith("--") else None
    model_args, data_args, training_args = load_config(config_path, _parse_overrides(argv))
    from vdtrain.training import run_training

    run_training(model_args, data_args, training_args)
    return 0
