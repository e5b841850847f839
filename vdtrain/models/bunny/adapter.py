"""Bunny-v1.1-Llama-3-8B-V (vdtrain's native port, `vdtrain/models/bunny/`) in Bunny's own conversation format."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.models.base import Example, ModelAdapter, pad_token_id, register_adapter, tokenize_spans, tokenizer_of
from vdtrain.models.llava import VICUNA_SYSTEM, examples_from_pieces, vicuna_pieces

BUNNY_MODEL_TYPE = "vdtrain_bunny"
END_OF_TEXT = "<|end_of_text|>"
IMAGE_TOKEN = "<|reserved_special_token_0|>"  # id 128002 in Llama-3: the port's `config.image_token_index`


@register_adapter(BUNNY_MODEL_TYPE)
class BunnyAdapter(ModelAdapter):
    """Bunny's `conv_llama` template (BAAI-DCAI/Bunny `bunny/conversation.py`, separator style TWO).

    `<|begin_of_text|>SYSTEM USER: <image>\\nq ASSISTANT: a<|end_of_text|>USER: q2 ASSISTANT: a2<|end_of_text|>`: the
    Vicuna system prompt, `sep=" "`, `sep2="<|end_of_text|>"`, which closes every assistant turn and is supervised and
    flagged. Pad == eos == `<|end_of_text|>` in Bunny, so nothing here (nor in the collator) reads `pad_token_id`.
    The image placeholder `<|reserved_special_token_0|>` becomes `image_seq_length` copies (729 for the real model).
    """

    pixel_key = "pixel_values"
    projector_modules = ("mm_projector",)
    vision_modules = ("vision_tower",)
    # LoRA on the Llama decoder only: the SigLIP tower has q/k/v projections too, outside `language_model`.
    lora_target_modules = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    image_tokens_depend_on_size = False  # every image is resized to the largest S² scale

    def build_processor(self, path: str, config: Any) -> Any:
        """The published checkpoint ships only a tokenizer: SigLIP preprocessing at the largest S² scale (mean and
        std 0.5) plus a `LlavaProcessor` that expands the image token to the tile grid (27 x 27 = 729 tokens)."""
        from transformers import AutoTokenizer, LlavaProcessor, SiglipImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = END_OF_TEXT  # Bunny: pad == eos
        side = max(config.s2_scales)
        grid = config.vision_config.image_size // config.vision_config.patch_size
        image_processor = SiglipImageProcessorPil(
            size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=side // grid,
            vision_feature_select_strategy="full",
            num_additional_image_tokens=0,
            image_token=IMAGE_TOKEN,
        )

    def end_of_turn_id(self, processor: Any) -> int:
        """`<|end_of_text|>` (128001), Bunny's `sep2`; not `<|eot_id|>`, which Bunny never trains."""
        return tokenizer_of(processor).convert_tokens_to_ids(END_OF_TEXT)

    def image_placeholder(self, processor: Any) -> str:
        return getattr(processor, "image_token", None) or IMAGE_TOKEN

    def image_token_id(self, processor: Any) -> int | None:
        return tokenizer_of(processor).convert_tokens_to_ids(self.image_placeholder(processor))

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """`image_seq_length` when the processor states it, else measured on the processor."""
        length = getattr(processor, "image_seq_length", None)
        return int(length) if isinstance(length, int) else super().num_image_tokens(processor, image_size)

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """Pixels of images padded to a square with the processor's mean colour first, as Bunny trains
        (`image_aspect_ratio: pad`, LLaVA's `expand2square`), so the S² tiles see undistorted images."""
        mean = getattr(processor.image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
        colour = tuple(int(255 * value) for value in mean)
        return super().image_inputs(processor, [expand_to_square(image, colour) for image in images])

    def count_examples(self, messages: list[dict[str, str]]) -> int:
        """One example holds the whole conversation."""
        return 1

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        pieces = vicuna_pieces(messages, self.image_placeholder(processor), END_OF_TEXT, sample_id=sample_id)
        eot_id = self.end_of_turn_id(processor)
        return [examples_from_pieces(processor, pieces, eot_id, self.image_token_id(processor), num_image_tokens)]

    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        image = self.image_placeholder(processor) + "\n" if has_image else ""
        return f"{VICUNA_SYSTEM} USER: {image}{question.replace('<image>', '').strip()} ASSISTANT:"

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """Left-padded prompts tokenised as in training (explicit BOS, image token expanded here, not by the
        processor, so any image processor serves) plus the images' pixels."""
        tokenizer, image_id = tokenizer_of(processor), self.image_token_id(processor)
        count = self.num_image_tokens(processor, images[0].size) if images else 0
        rows = []
        for prompt in prompts:
            ids, _ = tokenize_spans(tokenizer, [(prompt, False)])
            rows.append([t for token in ids for t in ([token] * count if token == image_id else [token])])
        length = max(map(len, rows))
        pad = pad_token_id(processor)
        batch: dict[str, torch.Tensor] = {
            "input_ids": torch.tensor([[pad] * (length - len(row)) + row for row in rows]),
            "attention_mask": torch.tensor([[0] * (length - len(row)) + [1] * len(row) for row in rows]),
        }
        if images:
            batch.update(self.image_inputs(processor, images))
        return batch


def expand_to_square(image: Image.Image, colour: tuple[int, ...]) -> Image.Image:
    """`image` centred on a square canvas of `colour` (Bunny/LLaVA `expand2square`)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
