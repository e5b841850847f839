"""Loading a model and processor for training or evaluation, and wrapping it with LoRA per its adapter."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vdtrain.errors import InputError
from vdtrain.models import ModelAdapter, get_adapter
from vdtrain.models.arguments import ModelArguments

logger = logging.getLogger(__name__)
DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def load_model_and_processor(
    path: str | os.PathLike,
    *,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any, ModelAdapter]:
    """`(model, processor, adapter)` for a local directory or hub id, through the Auto classes."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    import vdtrain.models  # noqa: F401  (registers vdtrain's own architectures with the Auto classes)
    from vdtrain.models.generic import allow_processors_without_torchvision

    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    native = _native_class(path)
    if native is not None:  # a published checkpoint whose hub code does not run on transformers 5: vdtrain's port
        model = native.from_pretrained(path, **kwargs)
    else:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(path, config=config, **kwargs)
    allow_processors_without_torchvision()  # Qwen2-VL's processor would refuse to load without torchvision
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as error:
        processor = get_adapter(model).build_processor(str(path), model.config)
        if processor is None:
            raise InputError(f"{path}: no processor could be loaded ({error})") from error
    if not hasattr(processor, "image_processor"):  # a tokenizer alone: the family builds the rest
        processor = get_adapter(model).build_processor(str(path), model.config) or processor
    return model, processor, get_adapter(model, processor)


def _native_class(path: str | os.PathLike) -> Any | None:
    """vdtrain's own class for checkpoints published as remote code (Bunny's `bunny-llama`), else None."""
    config = _raw_config(path)
    if config is not None and config.get("model_type") == "bunny-llama":
        from vdtrain.models.bunny import BunnyForConditionalGeneration

        return BunnyForConditionalGeneration
    return None


def _raw_config(path: str | os.PathLike) -> dict | None:
    """The checkpoint's `config.json` as written, from a folder or a hub id (the local cache, or a download)."""
    local = Path(path)
    if local.is_dir():
        return json.loads((local / "config.json").read_text()) if (local / "config.json").is_file() else None
    from transformers.utils import cached_file

    try:
        resolved = cached_file(str(path), "config.json", _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):  # not a hub id, or unreachable: AutoConfig says why, with its own message
        return None
    return json.loads(Path(resolved).read_text()) if resolved else None


def _wrappable(model: Any, parts: list[str]) -> list[str]:
    """`parts` for PEFT's `modules_to_save`, a module list (Qwen3-VL's DeepStack mergers) as its items: PEFT copies
    single modules only."""
    modules = dict(model.named_modules())
    names = []
    for part in parts:
        module = modules.get(part)
        if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            names += [f"{part}.{child}" for child, _ in module.named_children()]
        else:
            names.append(part)
    return names


def prepare_for_training(model: Any, adapter: ModelAdapter, args: ModelArguments, gradient_checkpointing: bool) -> Any:
    """Freeze what the recipe keeps fixed and add LoRA to the language model; the projector trains fully.

    With LoRA the projector is a PEFT `modules_to_save` module, so every adapter checkpoint holds it.
    """
    projector_parts, vision_parts = tuple(adapter.projector_modules or ()), tuple(adapter.vision_modules or ())
    if args.train_projector and not projector_parts:
        logger.warning("vdtrain: train_projector is on, but %s has no projector to train", type(model).__name__)
    projector = list(projector_parts) if args.train_projector else []
    if not args.lora:
        for name, param in model.named_parameters():
            in_projector = any(fragment in name for fragment in projector_parts)  # Qwen's merger is in `visual`
            frozen = args.freeze_vision_tower and not in_projector and any(part in name for part in vision_parts)
            frozen |= not args.train_projector and in_projector
            param.requires_grad_(not frozen)
        return model
    from peft import LoraConfig, get_peft_model

    try:  # PEFT looks for weights tied to the input embeddings
        model.get_input_embeddings()
    except NotImplementedError as error:
        raise InputError(
            f"PEFT cannot put LoRA on {type(model).__name__}: transformers has no get_input_embeddings for it "
            f"({error}); train it without LoRA (lora: false)"
        ) from error
    targets = args.lora_target_modules or adapter.lora_target_modules
    if not targets:
        raise InputError(
            f"vdtrain found no linear layer in the language model of {type(model).__name__} to put LoRA on; name "
            "them with lora_target_modules (a PEFT regex over module names)"
        )
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        modules_to_save=_wrappable(model, projector) or None,
        task_type=peft_task_type(model),
    )
    if gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the checkpointed graph
    with quiet_peft():
        model = get_peft_model(model, config, autocast_adapter_dtype=False)
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    total = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())  # ds_numel: ZeRO-3 partitions
    logger.info("vdtrain: %d trainable parameters of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))
    return model


def peft_task_type(model: Any) -> str | None:
    """PEFT's `CAUSAL_LM` task when the model's forward names `inputs_embeds`, else None (PEFT's plain wrapper).

    The causal-LM wrapper calls the model with `inputs_embeds=None`, `output_attentions=None`, ... by name; a forward
    that does not name them takes them in its `**kwargs`, and BLIP's hands those on to its vision tower, which then
    gets `inputs_embeds` twice. The plain wrapper passes the batch through as given.
    """
    import inspect

    return "CAUSAL_LM" if "inputs_embeds" in inspect.signature(model.forward).parameters else None


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT reads `model.is_gradient_checkpointing`, which transformers >= 5.24 deprecates with a `FutureWarning` on
    every LoRA wrap and load: not the user's to act on, so not shown (every other warning is)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def load_for_training(
    model_name_or_path: str | os.PathLike, *, gradient_checkpointing: bool = False, **recipe: Any
) -> tuple[Any, Any, ModelAdapter]:
    """`(model, processor, adapter)` set up as `vdtrain train` trains it, for the library path: the vision tower
    frozen, LoRA (r 128, alpha 256) on the language model's linears and the projector trained fully (kept in every
    adapter save). `recipe` takes the recipes' model fields to change that (`lora=False` for a full fine-tune,
    `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`, `train_projector`, `freeze_vision_tower`) and the
    loading ones (`dtype`, `attn_implementation`, `trust_remote_code`); `gradient_checkpointing` must match the
    `TrainingArguments` one. Pass the processor to the trainer as `processing_class` so every save holds it.
    """
    args = ModelArguments(model_name_or_path=str(model_name_or_path), **recipe)
    model, processor, adapter = load_model_and_processor(
        args.model_name_or_path,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        trust_remote_code=args.trust_remote_code,
    )
    return prepare_for_training(model, adapter, args, gradient_checkpointing), processor, adapter


def load_for_inference(model_path: str | os.PathLike, adapter_path: str | os.PathLike | None = None, **kwargs):
    """`(model, processor, adapter)` in eval mode; a LoRA adapter directory is applied without merging."""
    model, processor, adapter = load_model_and_processor(model_path, **kwargs)
    if adapter_path:
        from peft import PeftModel

        with quiet_peft():
            model = PeftModel.from_pretrained(model, adapter_path)
    return model.eval(), processor, adapter
