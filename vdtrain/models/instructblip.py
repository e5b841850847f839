"""InstructBLIP (`instructblip`) and InstructBLIP-Video (`instructblipvideo`, trained on images given as static
clips): the plain prompt/answer format, with the Q-Former reading the sample's instruction."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.models.base import Example, FieldGroup, register_adapter, tokenizer_of
from vdtrain.models.generic import _model_image_inputs, _to_chat
from vdtrain.models.plain import PromptAnswerAdapter

QFORMER = "qformer"  # the examples' field group of the Q-Former's text
QFORMER_FIELDS = ("qformer_input_ids", "qformer_attention_mask")


@register_adapter("instructblip")
class InstructBlipAdapter(PromptAnswerAdapter):
    """InstructBLIP: `num_query_tokens` image tokens in front of BOS and the plain `Question: q Answer: a` turns of
    `PromptAnswerAdapter`, the Q-Former reading the instruction as at inference, where `processor(images, text=prompt)`
    gives it the prompt.

    Every image example carries the Q-Former tokenizer's encoding (its own special tokens, as the processor's default
    call adds them) of the instruction: the prompt text before the first answer, without BOS and image tokens
    (`Question: q Answer:`), as the `QFORMER` field group (`Example.groups`), which the collator pads to its own
    length; text-only examples carry none (the Q-Former reads one text per image). `generation_inputs` gives the
    Q-Former the same text of each prompt.

    A multi-turn sample is one example (as in `ChatTemplateAdapter`), whose image query outputs every turn reads: the
    Q-Former reads the first instruction. The first answer is then trained exactly as it is generated; the Q-Former
    reading later questions too would let the first answer see them through the query tokens, which no inference call
    does.
    """

    projector_modules = ("qformer", "query_tokens", "language_projection")  # what InstructBLIP's tuning trains
    vision_modules = ("vision_model",)

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        """The plain format's example, with the Q-Former's text of the first instruction when it has an image."""
        examples = super().encode(messages, processor, num_image_tokens, sample_id)
        if not any("<image>" in message["content"] for message in messages):
            return examples
        chat = _to_chat(messages, sample_id)
        first = next((index for index, message in enumerate(chat) if message["role"] == "assistant"), len(chat))
        prompt = self._render(processor, chat[:first], add_generation_prompt=True)
        encoded = self._qformer_encoding(processor, [self.instruction(processor, prompt)])
        qformer_tokenizer = processor.qformer_tokenizer
        pad = qformer_tokenizer.pad_token_id if qformer_tokenizer.pad_token_id is not None else 0
        fields = {key: list(encoded[own][0]) for key, own in zip(QFORMER_FIELDS, ("input_ids", "attention_mask"))}
        for example in examples:
            example.groups[QFORMER] = FieldGroup(fields, {QFORMER_FIELDS[0]: pad, QFORMER_FIELDS[1]: 0})
        return examples

    def instruction(self, processor: Any, prompt: str) -> str:
        """What the Q-Former reads of a prompt in the training format: the text after the image tokens and BOS."""
        placeholder, bos = self._placeholder(processor), tokenizer_of(processor).bos_token or ""
        while placeholder and prompt.startswith(placeholder):
            prompt = prompt[len(placeholder) :]
        return prompt.removeprefix(bos)

    @staticmethod
    def _qformer_encoding(processor: Any, texts: list[str], **kwargs: Any) -> Any:
        """The Q-Former tokenizer's encoding of `texts` as the processor's default call makes it (special tokens
        added), right-padded where `kwargs` ask for padding."""
        tokenizer = processor.qformer_tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "right"
        try:
            return tokenizer(texts, add_special_tokens=True, return_attention_mask=True, **kwargs)
        finally:
            tokenizer.padding_side = side

    def processor_images(self, processor: Any, images: list[Image.Image]) -> list:
        """The images as the processor takes them."""
        return images

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The processor's image inputs without its Q-Former text (the examples carry the instruction's)."""
        text = [self._placeholder(processor) * len(images)]
        inputs = _model_image_inputs(processor, text, self.processor_images(processor, images))
        return {key: value for key, value in inputs.items() if key not in QFORMER_FIELDS}

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """Left-padded prompts and their images, the Q-Former reading each prompt's instruction as in training."""
        tokenizer = tokenizer_of(processor, ensure_pad=True)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        pixels = self.processor_images(processor, images) if images else None
        try:
            batch = dict(
                processor(text=prompts, images=pixels, return_tensors="pt", padding=True, add_special_tokens=False)
            )
        finally:
            tokenizer.padding_side = side
        instructions = [self.instruction(processor, prompt) for prompt in prompts]
        qformer = self._qformer_encoding(processor, instructions, padding=True, return_tensors="pt")
        batch.update({key: qformer[own] for key, own in zip(QFORMER_FIELDS, ("input_ids", "attention_mask"))})
        return batch


@register_adapter("instructblipvideo")
class InstructBlipVideoAdapter(InstructBlipAdapter):
    """InstructBLIP over a clip: the processor puts `num_query_tokens` video tokens per frame in front of the text
    (for the 4 frames its text assumes), its video processor encodes `(frames, C, H, W)` per clip. An image is given
    as the static clip of that many copies of itself (the frame count read off the processor's text: video tokens
    per `num_query_tokens`), its image token is the video token; otherwise as InstructBLIP (`InstructBlipAdapter`).
    """

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

    def processor_images(self, processor: Any, images: list[Image.Image]) -> list[list[Image.Image]]:
        """Each image as the static clip of `frames` copies of itself (`pixel_values` `(images, frames, C, H, W)`)."""
        return [[image] * self.frames(processor) for image in images]
