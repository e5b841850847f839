"""InstructBLIP-Video (`instructblipvideo`) trained on images: each image given as a static clip."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.models.base import register_adapter, tokenizer_of
from vdtrain.models.generic import _model_image_inputs
from vdtrain.models.plain import PromptAnswerAdapter


@register_adapter("instructblipvideo")
class InstructBlipVideoAdapter(PromptAnswerAdapter):
    """InstructBLIP over a clip: the processor puts `num_query_tokens` video tokens per frame in front of the text
    (for the 4 frames its text assumes), its video processor encodes `(frames, C, H, W)` per clip. An image is given
    as the static clip of that many copies of itself (the frame count read off the processor's text: video tokens
    per `num_query_tokens`), its image token is the video token; otherwise the plain `Question: q Answer: a` format
    of `PromptAnswerAdapter`.
    """

    projector_modules = ("qformer", "query_tokens", "language_projection")  # what InstructBLIP's tuning trains
    vision_modules = ("vision_model",)
    image_tokens_depend_on_size = False  # the processor writes num_query_tokens x frames tokens for any image

    def image_token_id(self, processor: Any) -> int | None:
        """The video token's id (`<video>`, which the processor adds to the tokenizer)."""
        return tokenizer_of(processor).convert_tokens_to_ids(self._placeholder(processor))

    def _placeholder(self, processor: Any) -> str:
        token = getattr(processor, "video_token", None) or getattr(tokenizer_of(processor), "video_token", None)
        return str(getattr(token, "content", token) or "<video>")

    def frames(self, processor: Any) -> int:
        """Frames of a clip as the processor's text assumes them: its video tokens over `num_query_tokens`."""
        return self._prepends_images(processor) // int(processor.num_query_tokens)

    def clips(self, processor: Any, images: list[Image.Image]) -> list[list[Image.Image]]:
        """Each image as the static clip of `frames` copies of itself."""
        return [[image] * self.frames(processor) for image in images]

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The processor's inputs of the images' static clips: `pixel_values` `(images, frames, C, H, W)`."""
        return _model_image_inputs(processor, [self._placeholder(processor)], self.clips(processor, images))

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """Left-padded prompts and the static clips of their images."""
        clips = self.clips(processor, images) if images else None
        tokenizer = tokenizer_of(processor, ensure_pad=True)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            return dict(
                processor(text=prompts, images=clips, return_tensors="pt", padding=True, add_special_tokens=False)
            )
        finally:
            tokenizer.padding_side = side
