"""Configuration of the native Bunny port (SigLIP + S² multi-scale wrapper + MLP projector + Llama)."""

from __future__ import annotations

import dataclasses
import re

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, PretrainedConfig, SiglipVisionConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

PUBLISHED_MODEL_TYPE = "bunny-llama"

# google/siglip-so400m-patch14-384: the tower every published Bunny-Llama-3 checkpoint uses. The published config.json
# only names it (`mm_vision_tower`), so its shape is spelled out here.
SIGLIP_SO400M_384 = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 384,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
DEFAULT_S2_SCALES = [384, 768, 1152]
# `<|reserved_special_token_0|>` of the Llama-3 tokenizer: inside the vocabulary (no embedding resize, so the published
# weights load unchanged) and never produced by ordinary text. Its embedding is overwritten by image features anyway.
LLAMA3_IMAGE_TOKEN_ID = 128002

# Keys of the published config.json that describe the original training run or the remote code, not the model.
_PUBLISHED_ONLY_KEYS = (
    "auto_map",
    "mm_vision_tower",
    "mm_hidden_size",
    "use_mm_proj",
    "use_s2",
    "s2",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "unfreeze_vision_tower",
    "mm_projector_lr",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "continuous_training",
)


def _llama_field_names() -> set[str]:
    """Names that belong in the text config when a flat (published) config is split."""
    base = {f.name for f in dataclasses.fields(PretrainedConfig)}
    return {f.name for f in dataclasses.fields(LlamaConfig)} - base | {"rope_theta", "rope_scaling"}


def _parse_scales(value: str | list[int] | tuple[int, ...]) -> list[int]:
    if isinstance(value, str):
        value = [int(v) for v in re.split(r"[,\s]+", value.strip()) if v]
    return sorted(int(v) for v in value)


@strict
class BunnyConfig(PretrainedConfig):
    r"""
    Configuration of [`BunnyForConditionalGeneration`], the native port of BAAI's Bunny-v1.1-Llama-3-8B-V.

    It also reads the published checkpoint's flat `bunny-llama` config.json (Llama fields at top level plus
    `mm_projector_type`, `mm_hidden_size`, `use_s2`, `s2_scales`, ...): the Llama fields become `text_config`, the
    vision tower is SigLIP-so400m-patch14-384 unless the file carries a `vision_config`.

    Args:
        vision_config (`dict` or `SiglipVisionConfig`, *optional*):
            The SigLIP tower; its `image_size` must equal the smallest S² scale (the tile size).
        text_config (`dict` or `LlamaConfig`, *optional*):
            The language model.
        s2_scales (`list[int]`, defaults to `[384, 768, 1152]`):
            Square image sizes of the S² wrapper. Each scale is cut into tiles of the smallest scale, every tile goes
            through the tower, and each scale's feature map is area-resized to the smallest scale's grid; the scales
            are concatenated on channels.
        mm_projector_type (`str`, defaults to `"mlp2x_gelu"`):
            `"linear"` or `"mlp{N}x_gelu"`, as in Bunny's projector builder.
        image_token_index (`int`, defaults to 128002):
            Placeholder id; the processor repeats it `image_seq_length` times per image.
        image_seq_length (`int`, *optional*):
            Tokens per image, `(image_size // patch_size) ** 2` (729 for the real model).
        vision_feature_layer (`int`, defaults to -2):
            Index into the tower's `hidden_states` (entry 0 is the embedding output). Published checkpoints use a
            positive index (`num_hidden_layers - 1`) so that a tower saved without its last layer gives the same
            features.
    """

    model_type = "vdtrain_bunny"
    attribute_map = {"image_token_id": "image_token_index"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=SiglipVisionConfig, init_kwargs=SIGLIP_SO400M_384),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PretrainedConfig | None = None
    text_config: dict | PretrainedConfig | None = None
    s2_scales: list[int] | str | None = None
    mm_projector_type: str = "mlp2x_gelu"
    image_token_index: int = LLAMA3_IMAGE_TOKEN_ID
    image_seq_length: int | None = None
    vision_feature_layer: int = -2
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.text_config is None and (
            kwargs.get("model_type") == PUBLISHED_MODEL_TYPE or "mm_hidden_size" in kwargs
        ):
            kwargs = self._split_published_config(kwargs)
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)

        self.s2_scales = _parse_scales(self.s2_scales if self.s2_scales is not None else DEFAULT_S2_SCALES)
        vision = self.vision_config
        tile = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
        patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
        if self.s2_scales[0] != tile:
            raise ValueError(
                f"BunnyConfig: the smallest S² scale ({self.s2_scales[0]}) is the tile size and must equal "
                f"vision_config.image_size ({tile}); fix `s2_scales` or the vision config."
            )
        if any(s % tile for s in self.s2_scales):
            raise ValueError(f"BunnyConfig: every S² scale must be a multiple of {tile}, got {self.s2_scales}.")
        if self.image_seq_length is None:
            self.image_seq_length = (tile // patch) ** 2
        if not self.tie_word_embeddings and self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True

    def _split_published_config(self, kwargs: dict) -> dict:
        """Turn the flat published `bunny-llama` fields into `text_config`/`vision_config`/`s2_scales`."""
        kwargs = dict(kwargs)
        llama_names = _llama_field_names()
        text = {k: kwargs.pop(k) for k in list(kwargs) if k in llama_names}
        for key in ("dtype", "torch_dtype"):
            if key in kwargs:
                text[key] = kwargs[key]
        text.setdefault("tie_word_embeddings", self.tie_word_embeddings)
        self.text_config = {"model_type": "llama", **text}

        if not isinstance(self.vision_config, PretrainedConfig):  # so400m, with whatever config.json overrides
            self.vision_config = {**SIGLIP_SO400M_384, **(self.vision_config or {})}
        vision = self.vision_config
        vision_layers = vision["num_hidden_layers"] if isinstance(vision, dict) else vision.num_hidden_layers
        # Penultimate layer of the full tower, as a positive index: also right for a tower saved without its last
        # layer (hidden_states[-1] there), which the hub code produced.
        self.vision_feature_layer = vision_layers - 1

        scales = _parse_scales(self.s2_scales if self.s2_scales is not None else DEFAULT_S2_SCALES)
        if not kwargs.get("use_s2", kwargs.get("s2", True)):
            scales = scales[:1]
        self.s2_scales = scales
        vision_hidden = vision["hidden_size"] if isinstance(vision, dict) else vision.hidden_size
        mm_hidden = kwargs.get("mm_hidden_size")
        if mm_hidden is not None and mm_hidden != len(scales) * vision_hidden:
            raise ValueError(
                f"Published Bunny config: mm_hidden_size={mm_hidden} but {len(scales)} S² scales of a "
                f"{vision_hidden}-wide tower give {len(scales) * vision_hidden}; add the right `vision_config` or "
                "`s2_scales` to config.json."
            )
        for key in _PUBLISHED_ONLY_KEYS:
            kwargs.pop(key, None)
        return kwargs


__all__ = ["BunnyConfig", "LLAMA3_IMAGE_TOKEN_ID", "PUBLISHED_MODEL_TYPE", "SIGLIP_SO400M_384"]
