"""Where a vision-language model keeps its language model, its projector and its vision side, read from its module
tree: the LoRA targets, `train_projector` and `freeze_vision_tower` of adapters that do not name them.

transformers names these parts per family (`language_model`/`text_model`/`text_decoder`, `multi_modal_projector`/
`connector`/`aligner`/`visual.merger`, `vision_tower`/`vision_model`/`visual`/`vqmodel`), so fixed name fragments
miss most families (LoRA then finds no target, or the projector silently stays frozen). The language model is the
module `model.get_decoder()` returns; the projector and vision parts are the outermost modules outside its layers
whose names say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

# a module outside the language model's layers is the projector when its own name matches (Qwen's `visual.merger`,
# BLIP-2's Q-Former and `language_projection`, ERNIE's `resampler_model`), and part of the vision side when it
# matches VISION; image-generation heads (Janus' `generation_aligner`) are neither
PROJECTOR = re.compile(r"projector|projection|connector|aligner|merger|resampler|qformer")
VISION = re.compile(r"vision|visual|vqmodel|image_encoder|audio")
NEITHER = re.compile(r"^generation_")
# a mixture-of-experts router: LoRA there would move the routing, not the experts' outputs
ROUTERS = frozenset({"gate", "router"})
# MLP names that PEFT re-maps onto fused expert weights in a model that has them (transformers 5 keeps an MoE
# layer's experts as 3-D parameters; PEFT then wraps those with `ParamWrapper`, which refuses `lora_dropout`)
MLP_NAMES = frozenset({"gate_proj", "up_proj", "down_proj", "gate_up_proj"})


@dataclass(frozen=True)
class Layout:
    """Qualified module names: the language model's LoRA targets (its linear layers), the projector and the vision
    parts (outermost modules: every parameter under them belongs to them)."""

    language_model: str | None
    lora_targets: tuple[str, ...]
    projector: tuple[str, ...]
    vision: tuple[str, ...]


def read_layout(model: nn.Module) -> Layout:
    """The layout of `model` (see the module docstring); empty parts where the model has none."""
    modules = dict(model.named_modules())
    decoder = _decoder(model)
    prefix = next((name for name, module in modules.items() if module is decoder), None)
    lists = [name for name, module in modules.items() if isinstance(module, nn.ModuleList)]
    candidates = [  # outside every layer stack (a tower's per-layer `projection` is no projector)
        name
        for name in modules
        if name
        and not any(name != stack and _under(name, stack) for stack in lists)
        and not _above(name, prefix)
        and not any(NEITHER.search(part) for part in name.split("."))
    ]
    projector = _outermost(  # not a tower's patch embedding (ViT's `patch_embeddings.projection`)
        name for name in candidates if _matches(PROJECTOR, name) and "embed" not in name
    )
    vision = _outermost(
        name
        for name in candidates
        if _matches(VISION, name) and not _matches(PROJECTOR, name) and not any(_under(name, p) for p in projector)
    )
    head, embeddings = _embeddings(model, "get_output_embeddings"), _embeddings(model, "get_input_embeddings")
    vocabulary = getattr(embeddings, "num_embeddings", None)  # a linear onto the vocabulary is an LM head
    fused = prefix is not None and any(  # ZeRO-3 keeps a partitioned parameter's shape as `ds_shape`
        len(getattr(param, "ds_shape", param.shape)) == 3 and _under(name, prefix)
        for name, param in model.named_parameters()
    )
    skipped = ROUTERS | MLP_NAMES if fused else ROUTERS  # an MoE model's LoRA: attention
    lora = tuple(
        name
        for name, module in modules.items()
        if isinstance(module, nn.Linear)
        and prefix is not None
        and _under(name, prefix)
        and module is not head
        and module.out_features != vocabulary
        and name.rsplit(".", 1)[-1] not in skipped
        and not any(_under(name, part) for part in (*projector, *vision))
    )
    return Layout(prefix, lora, projector, vision)


def _decoder(model: nn.Module) -> nn.Module | None:
    """`model.get_decoder()` where transformers can say (None for a model that names no decoder)."""
    try:
        return model.get_decoder() if hasattr(model, "get_decoder") else None
    except (AttributeError, NotImplementedError, ValueError):
        return None


def _embeddings(model: nn.Module, getter: str) -> nn.Module | None:
    """`model.get_input_embeddings()` / `get_output_embeddings()`, None where the model cannot say
    (PP-FormulaNet raises `NotImplementedError`)."""
    try:
        return getattr(model, getter)() if hasattr(model, getter) else None
    except (AttributeError, NotImplementedError, ValueError):
        return None


def _matches(pattern: re.Pattern[str], name: str) -> bool:
    """The module's own name (the last part of `name`) matches `pattern`."""
    return bool(pattern.search(name.rsplit(".", 1)[-1]))


def _under(name: str, prefix: str) -> bool:
    """`name` is `prefix` or inside it (`prefix` "" is the whole model)."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def _above(name: str, prefix: str | None) -> bool:
    """`name` contains the language model (an ancestor of it, or itself)."""
    return prefix is not None and _under(prefix, name)


def _outermost(names: Any) -> tuple[str, ...]:
    """The names not inside another of them, in module order."""
    kept: list[str] = []
    for name in names:
        if not any(_under(name, outer) for outer in kept):
            kept.append(name)
    return tuple(kept)
