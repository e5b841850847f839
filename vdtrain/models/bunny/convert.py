"""Name mapping between the published BAAI Bunny checkpoint (`bunny-llama` remote code) and the port.

Published layout (`BunnyLlamaForCausalLM`, a `LlamaForCausalLM` whose `model` also holds the tower and projector):

    model.embed_tokens.weight, model.layers.{i}..., model.norm.weight, lm_head.weight
    model.vision_tower.vision_tower.vision_model.{embeddings,encoder.layers.{j},post_layernorm,head}...
    model.mm_projector.{0,2}.{weight,bias}

Port layout (llava-hf style): `model.language_model.*`, `model.vision_tower.*` (transformers-5 `SiglipVisionModel`
has no `vision_model.` level), `model.mm_projector.*`, `lm_head.weight`.

`BunnyForConditionalGeneration.from_pretrained` detects a published config.json (`model_type: bunny-llama`), builds
the config from it and the checkpoint's tensor names, and loads with `key_mapping=PUBLISHED_KEY_MAPPING`.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch
from safetensors import safe_open
from transformers.utils import cached_file

from .configuration_bunny import PUBLISHED_MODEL_TYPE, BunnyConfig

# Published prefix -> port prefix; applied in order by transformers' `key_mapping` (regexes, anchored).
_PREFIXES = [
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
]
PUBLISHED_KEY_MAPPING: dict[str, str] = {"^" + re.escape(src): dst for src, dst in _PREFIXES}

_VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
_HUB_KWARGS = ("cache_dir", "revision", "local_files_only", "token", "subfolder", "force_download", "proxies")


def published_to_port_key(key: str) -> str:
    """Port name of a published checkpoint tensor (unchanged if it needs no renaming)."""
    for src, dst in _PREFIXES:
        if key.startswith(src):
            return dst + key[len(src) :]
    return key


def port_to_published_key(key: str) -> str:
    """Published name of a port tensor; inverse of [`published_to_port_key`]."""
    for src, dst in _PREFIXES:
        if key.startswith(dst):
            return src + key[len(dst) :]
    return key


def checkpoint_tensor_names(path: str, **hub_kwargs: Any) -> list[str]:
    """Tensor names of a safetensors checkpoint (sharded via its index, or a single `model.safetensors`)."""
    index = cached_file(
        path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if index is not None:
        with open(index) as f:
            return list(json.load(f)["weight_map"])
    single = cached_file(path, "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if single is None:
        raise FileNotFoundError(
            f"{path}: no model.safetensors(.index.json); convert .bin shards to safetensors first."
        )
    with safe_open(single, framework="pt") as f:
        return list(f.keys())


def published_config(config_dict: dict[str, Any], tensor_names: list[str]) -> BunnyConfig:
    """Port config for a published checkpoint: the config.json fields plus the tower depth/head found in the weights.

    Bunny's trainer saves the full SigLIP tower (27 layers and the pooling head), the hub code builds it without its
    last layer and head; both give the same penultimate-layer features, so the tower is sized to what the file holds.
    """
    config = BunnyConfig(**config_dict)
    layer_ids = {
        int(m.group(1))
        for n in tensor_names
        if (m := re.match(re.escape(_VISION_PREFIX) + r"encoder\.layers\.(\d+)\.", n))
    }
    if not layer_ids:
        raise ValueError(
            "Published Bunny checkpoint holds no vision tower weights (expected "
            f"'{_VISION_PREFIX}encoder.layers.*'); this port needs the tuned tower saved in the checkpoint."
        )
    num_layers = max(layer_ids) + 1
    if config.vision_feature_layer > num_layers:
        raise ValueError(
            f"Published Bunny checkpoint has {num_layers} vision layers but features come from layer "
            f"{config.vision_feature_layer}; the vision_config in config.json does not match the weights."
        )
    config.vision_config.num_hidden_layers = num_layers
    config.vision_config.vision_use_head = any(n.startswith(_VISION_PREFIX + "head.") for n in tensor_names)
    return config


def published_config_or_none(path: str | os.PathLike, **kwargs: Any) -> BunnyConfig | None:
    """[`published_config`] if `path` holds a published `bunny-llama` checkpoint, else `None`."""
    hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    path = str(path)
    config_file = cached_file(path, "config.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if config_file is None:
        return None
    with open(config_file) as f:
        config_dict = json.load(f)
    if config_dict.get("model_type") != PUBLISHED_MODEL_TYPE:
        return None
    return published_config(config_dict, checkpoint_tensor_names(path, **hub_kwargs))


def drop_published_renamings(model: torch.nn.Module) -> None:
    """Forget the published renamings after loading, so `save_pretrained` writes the port layout."""
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [
            c for c in conversions if not set(getattr(c, "_original_source_patterns", ())) & set(PUBLISHED_KEY_MAPPING)
        ]


__all__ = [
    "PUBLISHED_KEY_MAPPING",
    "checkpoint_tensor_names",
    "published_config",
    "published_config_or_none",
    "published_to_port_key",
    "port_to_published_key",
]
