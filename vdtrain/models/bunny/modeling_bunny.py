"""Bunny (SigLIP + S² wrapper + MLP projector + Llama) as a native transformers-5 model.

The published remote code splices image features in at LLaVA's `-200` placeholder and re-pads the batch inside the
model. This port follows llava-hf instead: the processor repeats `config.image_token_index` `image_seq_length` times
per image and the model scatters the projected features onto those positions, so `input_ids`, `labels` and
`attention_mask` keep their length and batching needs nothing special.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import logging

from ...compat import output_fields
from .configuration_bunny import BunnyConfig

logger = logging.get_logger(__name__)


def split_chessboard(x: torch.Tensor, num_split: int) -> torch.Tensor:
    """Cut `(B, C, H, W)` into `num_split**2` equal tiles stacked on the batch axis: tile (i, j) major, then B."""
    b, c, h, w = x.shape
    if h % num_split or w % num_split:
        raise ValueError(f"split_chessboard: a {h}x{w} map does not split into {num_split}x{num_split} equal tiles.")
    th, tw = h // num_split, w // num_split
    x = x.reshape(b, c, num_split, th, num_split, tw)  # (B, C, i, th, j, tw)
    return x.permute(2, 4, 0, 1, 3, 5).reshape(num_split * num_split * b, c, th, tw)  # (i*j*B, C, th, tw)


def merge_chessboard(x: torch.Tensor, num_split: int) -> torch.Tensor:
    """Inverse of [`split_chessboard`]: `(n*n*B, C, h, w)` tiles back to `(B, C, n*h, n*w)`."""
    nb, c, h, w = x.shape
    b = nb // (num_split * num_split)
    x = x.reshape(num_split, num_split, b, c, h, w)  # (i, j, B, C, h, w)
    return x.permute(2, 3, 0, 4, 1, 5).reshape(b, c, num_split * h, num_split * w)


def s2_forward(
    features_fn: Callable[[torch.Tensor], torch.Tensor], pixel_values: torch.Tensor, scales: list[int]
) -> torch.Tensor:
    """S² multi-scale features: resize to each scale, tile, encode, merge, area-resize to the base grid, concat.

    Mirrors `s2wrapper.forward(..., img_sizes=scales, max_split_size=scales[0])` as Bunny calls it: images are resized
    bicubically in float32, the output grid is that of the smallest scale and channels are ordered by scale.

    Args:
        features_fn (`Callable`): maps tiles `(N, 3, s0, s0)` to patch features `(N, P, C)` with `P` a square.
        pixel_values (`torch.Tensor`): `(B, 3, H, H)`, normally at the largest scale.
        scales (`list[int]`): ascending square sizes; `scales[0]` is the tile size.

    Returns:
        `torch.Tensor` of shape `(B, P, len(scales) * C)`.
    """
    if pixel_values.ndim != 4 or pixel_values.shape[-1] != pixel_values.shape[-2]:
        raise ValueError(f"S² expects square images (B, C, H, H), got {tuple(pixel_values.shape)}.")
    tile = scales[0]
    maps = []
    for size in scales:
        x = pixel_values
        if x.shape[-1] != size:
            x = F.interpolate(x.float(), size=(size, size), mode="bicubic").to(pixel_values.dtype)
        num_split = math.ceil(size / tile)
        feats = features_fn(split_chessboard(x, num_split))  # (n*n*B, P, C)
        side = math.isqrt(feats.shape[1])
        feats = feats.transpose(1, 2).reshape(feats.shape[0], feats.shape[2], side, side)  # (n*n*B, C, side, side)
        maps.append(merge_chessboard(feats, num_split))  # (B, C, n*side, n*side)
    grid = maps[0].shape[-1]
    out = torch.cat([F.interpolate(m.float(), size=(grid, grid), mode="area").to(m.dtype) for m in maps], dim=1)
    return out.flatten(2).transpose(1, 2)  # (B, grid*grid, S*C)


def build_projector(projector_type: str, in_features: int, hidden_size: int) -> nn.Module:
    """Bunny's `build_vision_projector`: `linear` or `mlp{N}x_gelu` (Linear, then (GELU, Linear) N-1 times)."""
    if projector_type == "linear":
        return nn.Linear(in_features, hidden_size)
    match = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if match is None:
        raise ValueError(f"Unknown mm_projector_type {projector_type!r}; use 'linear' or 'mlp{{N}}x_gelu'.")
    layers: list[nn.Module] = [nn.Linear(in_features, hidden_size)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
    return nn.Sequential(*layers)


def keep_positions(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The positions of `hidden_states` `(B, L, D)` the LM head scores, as transformers' `logits_to_keep` means it:
    an int keeps the last `n` (0 = all), a 1-D tensor these positions, a 2-D boolean mask its `True` positions
    flattened to `(N, D)`, a 2-D integer tensor these positions per row."""
    if isinstance(logits_to_keep, int):
        return hidden_states[:, -logits_to_keep:] if logits_to_keep else hidden_states
    if logits_to_keep.ndim == 2:
        if logits_to_keep.dtype == torch.bool:
            return hidden_states[logits_to_keep]  # (N, D)
        return torch.take_along_dim(hidden_states, logits_to_keep[..., None], dim=1)
    return hidden_states[:, logits_to_keep]


@dataclass
class BunnyModelOutputWithPast(BaseModelOutputWithPast):
    """The language model's outputs plus the projected image features `(n_images, image_seq_length, hidden)`.

    The cache field is inherited from the installed transformers (`past_key_values` before 5.24, `cache` since), and
    the forward fills this output from the language model's own, so no field name is spelled here.
    """

    image_hidden_states: torch.FloatTensor | None = None


class BunnyPreTrainedModel(PreTrainedModel):
    """Shared settings of the Bunny port (attention backends, checkpointing, device-map split points)."""

    config: BunnyConfig
    config_class = BunnyConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "SiglipEncoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]  # the KV-cache keyword, before/after 5.24
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True


class BunnyModel(BunnyPreTrainedModel):
    """SigLIP tower with the S² wrapper, `mm_projector` and a Llama decoder, without the LM head."""

    def __init__(self, config: BunnyConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        in_features = len(config.s2_scales) * config.vision_config.hidden_size
        self.mm_projector = build_projector(config.mm_projector_type, in_features, config.text_config.hidden_size)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def _tower_features(self, tiles: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(tiles, output_hidden_states=True, return_dict=True)
        return out.hidden_states[self.config.vision_feature_layer]  # (N, P, C), all patches: SigLIP has no CLS

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected S² features of `pixel_values` `(n_images, 3, H, H)`: `(n_images, image_seq_length, hidden)`."""
        if pixel_values.shape[-1] != self.config.s2_scales[-1]:
            logger.warning_once(
                f"Bunny: images are {pixel_values.shape[-1]} px but the largest S² scale is "
                f"{self.config.s2_scales[-1]}; preprocess at the largest scale as the original model does."
            )
        pixel_values = pixel_values.to(self.vision_tower.dtype)
        features = s2_forward(self._tower_features, pixel_values, self.config.s2_scales)  # (n, P, S*C)
        return self.mm_projector(features)  # (n, P, hidden)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs,
    ) -> BunnyModelOutputWithPast:
        """Embed the text, scatter the image features onto the image-token positions, run the decoder.

        The KV cache and every other decoder keyword travel in `kwargs` under the language model's own names.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Bunny: pass exactly one of `input_ids` and `inputs_embeds`.")
        if inputs_embeds is None:
            if pixel_values is not None and bool((input_ids < 0).any()):
                raise ValueError(
                    "Bunny: input_ids hold negative ids (the original's -200 image placeholder?). Replace each "
                    f"placeholder by {self.config.image_seq_length} copies of config.image_token_index "
                    f"({self.config.image_token_index})."
                )
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)

        image_features = None
        if pixel_values is not None:
            image_features = self.get_image_features(pixel_values)  # (n, P, D)
            image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            mask = self._image_token_mask(input_ids, inputs_embeds)  # (B, L)
            n_tokens, n_features = int(mask.sum()), image_features.shape[0] * image_features.shape[1]
            if n_tokens != n_features:
                raise ValueError(
                    f"Bunny: {n_tokens} image tokens in input_ids but {image_features.shape[0]} image(s) give "
                    f"{n_features} features; each image needs exactly {self.config.image_seq_length} copies of "
                    f"config.image_token_index ({self.config.image_token_index})."
                )
            inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), image_features)

        outputs = self.language_model(
            attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
        )
        return BunnyModelOutputWithPast(
            **output_fields(BunnyModelOutputWithPast, outputs), image_hidden_states=image_features
        )

    def _image_token_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        if input_ids is not None:
            return input_ids == self.config.image_token_index
        token = torch.tensor(self.config.image_token_index, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token)).all(-1)


class BunnyForConditionalGeneration(BunnyPreTrainedModel, GenerationMixin):
    """Bunny with its LM head; loads both its own checkpoints and the published BAAI ones (see `convert.py`)."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: BunnyConfig):
        super().__init__(config)
        self.model = BunnyModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected S² image features `(n_images, image_seq_length, hidden)`."""
        return self.model.get_image_features(pixel_values)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Causal-LM forward; `labels` are unshifted (-100 ignored), `logits_to_keep` limits the positions scored.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): text with `image_seq_length` image tokens per image.
            pixel_values (`torch.FloatTensor` of shape `(n_images, 3, H, H)`): images, in token order.
            labels (`torch.LongTensor` of shape `(B, L)`, *optional*): targets; the loss shifts them itself.
            logits_to_keep (`int` or `torch.Tensor`): keep the last `n` positions (0 = all) or these indices.
            kwargs: passed to the language model as they are (the KV cache under its own keyword, `use_cache`, ...).
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden_states = keep_positions(outputs.last_hidden_state, logits_to_keep)  # (B, L', D) or (N, D)
        logits = self.lm_head(hidden_states)  # (B, L', V)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, **output_fields(CausalLMOutputWithPast, outputs))

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs) -> dict:
        """Pass `pixel_values` on the prefill step only when decoding with a cache (the image is in the cache then)."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            model_inputs.pop("pixel_values", None)
        return model_inputs

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load a vdtrain Bunny checkpoint, or a published `bunny-llama` one (renamed on the fly, no remote code)."""
        from .convert import PUBLISHED_KEY_MAPPING, drop_published_renamings, published_config_or_none

        published = None
        if kwargs.get("config") is None:
            published = published_config_or_none(pretrained_model_name_or_path, **kwargs)
        if published is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        kwargs["config"] = published
        kwargs.setdefault("key_mapping", PUBLISHED_KEY_MAPPING)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        drop_published_renamings(loaded[0] if isinstance(loaded, tuple) else loaded)  # tuple: output_loading_info
        return loaded


__all__ = [
    "BunnyForConditionalGeneration",
    "BunnyModel",
    "BunnyPreTrainedModel",
    "merge_chessboard",
    "s2_forward",
    "split_chessboard",
]
