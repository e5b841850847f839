"""`vdtrain merge`: fold a trained LoRA adapter (and its fully trained projector) into the base model's weights."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger("vdtrain")
BASE_MODEL_FILE = "vdtrain_base_model.txt"  # written next to the final adapter by `vdtrain train`
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def base_model_text(name_or_path: str | os.PathLike) -> str:
    """What `vdtrain_base_model.txt` stores for a base model: a local folder as its absolute path (so the adapter
    merges and loads from any working directory), a hub id as is."""
    local = Path(name_or_path).expanduser()
    return str(local.resolve()) if local.exists() else str(name_or_path)


def base_model_source(adapter_dir: str | os.PathLike) -> tuple[str, Path]:
    """The base model an adapter was trained on and the file that names it: `vdtrain_base_model.txt`, else PEFT's
    `adapter_config.json`. A relative path (as older versions wrote it) is read against the adapter folder first,
    then the working directory; one that exists in neither is left as written (a hub id)."""
    adapter_dir = Path(adapter_dir)
    named = adapter_dir / BASE_MODEL_FILE
    config = adapter_dir / "adapter_config.json"
    if named.is_file() and (base := named.read_text().strip()):
        return _resolve(base, adapter_dir), named
    if config.is_file() and (base := json.loads(config.read_text()).get("base_model_name_or_path")):
        return _resolve(base, adapter_dir), config
    raise ValueError(
        f"{adapter_dir}: no {BASE_MODEL_FILE} and no base_model_name_or_path in adapter_config.json; pass --base DIR"
    )


def _resolve(base: str, adapter_dir: Path) -> str:
    path = Path(base).expanduser()
    if path.is_absolute():
        return str(path)
    for candidate in (adapter_dir / path, path):
        if candidate.exists():
            return str(candidate.resolve())
    return base


def base_model_of(adapter_dir: str | os.PathLike) -> str:
    """The base model an adapter was trained on (`base_model_source` without the file's name)."""
    return base_model_source(adapter_dir)[0]


def load_base_model(base: str, source: Path | None, **kwargs: Any) -> tuple[Any, Any, Any]:
    """`load_model_and_processor(base)`; when `base` was read from `source`, a failure names that file."""
    from vdtrain.errors import InputError
    from vdtrain.models.loading import load_model_and_processor

    try:
        return load_model_and_processor(base, **kwargs)
    except (OSError, ValueError) as error:
        if source is None:
            raise
        reason = " ".join(str(error).split())
        raise InputError(
            f"base model {base} (named in {source}) could not be loaded: {reason}; pass the base model with --base"
        ) from error


def merge_adapter(
    adapter_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    base: str | os.PathLike | None = None,
    dtype: str = "auto",
) -> Path:
    """Load `base` + the adapter, merge the LoRA deltas, swap in the trained projector, save model and processor.

    Args:
        adapter_dir: a `vdtrain train` output or `checkpoint-N` directory (`adapter_model.safetensors` inside).
        output_dir: where the merged model and its processor go; a plain `from_pretrained` directory.
        base: the base model (hub id or directory); defaults to the one the adapter names.
        dtype: weights dtype to load and save in (`auto` keeps the base checkpoint's).
    """
    from peft import PeftModel

    from vdtrain.models.loading import quiet_peft

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; is this a LoRA adapter directory?")
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} is a file; --output names a new directory for the merged model")
    if output_dir.resolve() == adapter_dir.resolve() or (output_dir.is_dir() and any(output_dir.iterdir())):
        raise FileExistsError(f"{output_dir}: the output directory must be new or empty; pass another --output")
    base, source = (str(base), None) if base is not None else base_model_source(adapter_dir)
    model, processor, _ = load_base_model(base, source, dtype=dtype)
    with quiet_peft():
        model = PeftModel.from_pretrained(model, adapter_dir)
    merged = model.merge_and_unload()  # LoRA folded in; modules_to_save (the projector) replace the originals
    if any(file.is_file() for file in map(adapter_dir.joinpath, PROCESSOR_FILES)):  # saved by training: prefer it
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(adapter_dir)
        except (OSError, ValueError, TypeError, KeyError) as error:
            logger.warning(
                "vdtrain merge: %s holds no loadable processor (%s); using the base model's", adapter_dir, error
            )
    merged.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    logger.debug("vdtrain merge: %s + %s -> %s", base, adapter_dir, output_dir)  # the command prints its own line
    return output_dir
