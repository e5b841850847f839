"""`vdtrain merge`: fold a trained LoRA adapter (and its fully trained projector) into the base model's weights."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from vdtrain.errors import InputError

logger = logging.getLogger("vdtrain")
BASE_MODEL_FILE = "vdtrain_base_model.txt"  # written next to the final adapter by `vdtrain train`
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def base_model_of(adapter_dir: str | os.PathLike) -> str:
    """The base model an adapter was trained on: `vdtrain_base_model.txt`, else PEFT's `adapter_config.json`."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / BASE_MODEL_FILE).is_file():
        return (adapter_dir / BASE_MODEL_FILE).read_text().strip()
    config = adapter_dir / "adapter_config.json"
    if config.is_file() and (base := json.loads(config.read_text()).get("base_model_name_or_path")):
        return base
    raise InputError(
        f"{adapter_dir}: no {BASE_MODEL_FILE} and no base_model_name_or_path in adapter_config.json; pass --base DIR"
    )


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

    from vdtrain.models.loading import load_model_and_processor

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; is this a LoRA adapter directory?")
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} is a file; --output names a new directory for the merged model")
    if output_dir.resolve() == adapter_dir.resolve() or (output_dir.is_dir() and any(output_dir.iterdir())):
        raise FileExistsError(f"{output_dir}: the output directory must be new or empty; pass another --output")
    base = str(base) if base is not None else base_model_of(adapter_dir)
    model, processor, _ = load_model_and_processor(base, dtype=dtype)
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
    logger.info("vdtrain merge: %s + %s -> %s", base, adapter_dir, output_dir)
    return output_dir
