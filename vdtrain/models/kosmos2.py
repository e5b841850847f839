"""Kosmos-2: the image as `<image>`, one id per latent query and `</image>` right after BOS, placed by a mask."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models.base import COORDINATE_DIMS, Example, register_adapter, tokenizer_of
from vdtrain.models.plain import PromptAnswerAdapter

POSITION_MASK = "image_embeds_position_mask"


@register_adapter("kosmos-2")
class Kosmos2Adapter(PromptAnswerAdapter):
    """Kosmos-2 in the plain `Question: q Answer: a` format, each answer closed by a supervised EOS.

    Its processor writes the image right after BOS as `<image>`, then one id per latent query (from
    `unk_token_id + 1` on: ordinary vocabulary ids, which the model overwrites with the image's latents) and
    `</image>`, and marks the overwritten positions in `image_embeds_position_mask`. The adapter reads those ids and
    that mask off one processor call and puts them after the BOS of the text's own tokens; every example carries the
    mask (all zeros without an image), so the collator pads it as a per-token field. `<image>` counts as the one image
    token of a sample.
    """

    projector_modules = ("image_to_text_projection",)
    vision_modules = ("vision_model",)
    image_tokens_depend_on_size = False

    def _image_prefix(self, processor: Any) -> tuple[list[int], list[int]]:
        """`(ids, mask)` the processor puts in front of a text for one image: BOS, `<image>`, latents, `</image>`."""
        if "_prefix" not in self.__dict__:
            batch = processor(text="", images=Image.new("RGB", (64, 64)), return_tensors="pt")
            ids, mask = batch["input_ids"][0].tolist(), batch[POSITION_MASK][0].tolist()
            eoi = tokenizer_of(processor).convert_tokens_to_ids(processor.eoi_token)
            end = ids.index(eoi) + 1
            self.__dict__["_prefix"] = (ids[:end], mask[:end])
        return self.__dict__["_prefix"]

    def image_token_id(self, processor: Any) -> int | None:
        return tokenizer_of(processor).convert_tokens_to_ids(processor.boi_token)

    def image_placeholder(self, processor: Any) -> str:
        return ""  # the image is put in by ids (`encode`), not written in the text

    def _placeholder(self, processor: Any) -> str:
        return ""

    def _prepends_images(self, processor: Any) -> int:
        return 1  # the processor puts the image in front of any prompt itself

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """One `<image>` per sample (the latent ids are ordinary vocabulary ids, so they are not counted)."""
        self._expansions[0], self._type_keys = "", []
        return 1

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        self.num_image_tokens(processor, (64, 64))
        examples = super().encode(messages, processor, 0, sample_id)
        has_image = any("<image>" in message["content"] for message in messages if message["role"] != "assistant")
        prefix, prefix_mask = self._image_prefix(processor) if has_image else ([], [])
        encoded = []
        for example in examples:
            ids, labels, eot = example.input_ids, example.labels, example.end_of_turn_mask
            if has_image:  # after the text's BOS, which the prefix starts with
                added = len(prefix) - 1
                ids = prefix + ids[1:]
                labels = labels[:1] + [IGNORE_INDEX] * added + labels[1:]
                eot = eot[:1] + [False] * added + eot[1:]
            mask = prefix_mask + [0] * (len(ids) - len(prefix_mask))
            encoded.append(Example(ids, labels, eot, {POSITION_MASK: mask}))
        return encoded

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The pixels of the processor's call (its position mask belongs to the text: each example carries it)."""
        return {key: value for key, value in super().image_inputs(processor, images).items() if key != POSITION_MASK}

    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        """`Question: q Answer:` without BOS: the processor adds BOS and the image in front of it."""
        text = super().prompt(question, processor, has_image)
        bos = tokenizer_of(processor).bos_token or ""
        return text[len(bos) :] if bos and text.startswith(bos) else text

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """Left-padded prompts with BOS and the image in front, as the processor writes them."""
        tokenizer = tokenizer_of(processor, ensure_pad=True)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            return dict(processor(text=prompts, images=images or None, return_tensors="pt", padding=True))
        finally:
            tokenizer.padding_side = side


@register_adapter("kosmos-2.5")
class Kosmos25Adapter(Kosmos2Adapter):
    """Kosmos-2.5 (OCR / markdown) in Kosmos-2's plain format: its processor writes BOS, `<image>`, one BOS copy per
    latent query and `</image>` in front of the text, marked in `image_embeds_position_mask` as Kosmos-2's.

    Its pixels are `flattened_patches` `(B, max_patches, 2 + p*p*C)` whose first two entries per patch are the
    patch's row and column, which the vision embeddings read as indices: `coordinate_channels = 2` keeps them out of
    the noise. `<image>` counts as the one image token of a sample, as in Kosmos-2.
    """

    pixel_key = "flattened_patches"
    coordinate_channels = 2

    def _image_prefix(self, processor: Any) -> tuple[list[int], list[int]]:
        """`(ids, mask)` the processor puts in front of a text for one image: BOS, `<image>`, BOS copies,
        `</image>`."""
        if "_prefix" not in self.__dict__:
            batch = processor(text="", images=Image.new("RGB", (64, 64)), return_tensors="pt")
            ids, mask = batch["input_ids"][0].tolist(), batch[POSITION_MASK][0].tolist()
            end = ids.index(tokenizer_of(processor).convert_tokens_to_ids(processor.image_end_token)) + 1
            self.__dict__["_prefix"] = (ids[:end], mask[:end])
        return self.__dict__["_prefix"]

    def image_token_id(self, processor: Any) -> int | None:
        return tokenizer_of(processor).convert_tokens_to_ids(processor.image_start_token)

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, Any]:
        """The image inputs of the full processor call (its `max_patches` default applies), with the count of their
        coordinate channels."""
        batch = processor(text="", images=images, return_tensors="pt")
        inputs = {
            key: value for key, value in batch.items() if key not in ("input_ids", "attention_mask", POSITION_MASK)
        }
        return {**inputs, COORDINATE_DIMS: {self.pixel_key: self.coordinate_channels}}
