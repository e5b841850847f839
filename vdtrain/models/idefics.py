"""IDEFICS (Flamingo-style): text layers cross-attend to the images each token has seen (`image_attention_mask`)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.models.base import Example, register_adapter, tokenizer_of
from vdtrain.models.generic import ChatTemplateAdapter

IMAGE_ATTENTION_MASK = "image_attention_mask"


@register_adapter("idefics")
class IdeficsAdapter(ChatTemplateAdapter):
    """The chat template (which writes the processor's own `<fake_token_around_image><image>...` text, one `<image>`
    per image), plus the two inputs IDEFICS's processor builds per row: `pixel_values` `(1, images, C, H, W)` of a
    sample, batched one entry per row (`row_image_keys`: text-only rows get zero images, as the processor pads
    them), and `image_attention_mask`, per token a vector over the sample's images (1 for the latest image at or
    before the token, as the processor's mask; empty vectors without an image, zero-padded by the collator)."""

    row_image_keys = ("pixel_values",)
    projector_modules = ("perceiver_resampler",)
    vision_modules = ("vision_model",)
    image_tokens_depend_on_size = False

    def image_token_id(self, processor: Any) -> int | None:
        return tokenizer_of(processor).convert_tokens_to_ids("<image>")

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """One `<image>` per image: the template already writes the processor's image text."""
        self._expansions[1], self._type_keys = self.image_placeholder(processor), []
        return 1

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The sample's images as one row of the processor's `pixel_values` (its image processor returns a tensor)."""
        pixels = processor.image_processor(images, return_tensors="pt")
        return {"pixel_values": (pixels if isinstance(pixels, torch.Tensor) else pixels["pixel_values"])[None]}

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        examples = super().encode(messages, processor, num_image_tokens, sample_id)
        image_id = self.image_token_id(processor)
        for example in examples:
            images = example.input_ids.count(image_id)
            seen, rows = -1, []
            for token in example.input_ids:
                seen += token == image_id
                rows.append([int(index == seen) for index in range(images)])
            example.extra[IMAGE_ATTENTION_MASK] = rows
        return examples
