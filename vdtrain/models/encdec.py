"""Encoder-decoder image-text-to-text models (`config.is_encoder_decoder`: Florence-2, T5Gemma 2, UDOP): the image
and the prompt go to the encoder, the answer is the decoder's target."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.errors import ConversationError
from vdtrain.models.base import (
    Example,
    ModelAdapter,
    register_adapter,
    register_encoder_decoder_adapter,
    tokenizer_of,
)
from vdtrain.models.generic import ChatTemplateAdapter, end_of_turn_token
from vdtrain.models.paligemma import PaliGemmaAdapter

_PROBE_IMAGE = (64, 64)  # the processors of these families resize every image to one size


@register_encoder_decoder_adapter
class EncoderDecoderAdapter(ChatTemplateAdapter):
    """One example per question/answer pair (as `PaliGemmaAdapter`): the encoder's `input_ids` are what the processor
    makes of the question and the image at inference, the `labels` are the answer plus the end-of-turn token, which
    is supervised and flagged. The labels are the decoder's targets, of their own length: the model starts its
    decoder from `decoder_start_token_id` and feeds it the labels shifted right, so no BOS is added to them.

    The prompt is the processor's chat template rendering of the user turn with the generation prompt where it has a
    template (T5Gemma 2's Gemma-3 one), else the question itself (Florence-2's processor wraps it in the image tokens,
    BOS and EOS). The end-of-turn token is the one the template closes an assistant turn with, else the tokenizer's
    EOS. Earlier turns are not repeated in later prompts. Per-token fields of the encoder input that the processor
    returns (`token_type_ids`) are kept.
    """

    image_tokens_depend_on_size = False

    def _has_template(self, processor: Any) -> bool:
        return bool(getattr(processor, "chat_template", None) or tokenizer_of(processor).chat_template)

    def end_of_turn_id(self, processor: Any) -> int:
        """The special token the chat template closes an assistant turn with, else the tokenizer's EOS."""
        return end_of_turn_token(processor)[1]

    def image_placeholder(self, processor: Any) -> str:
        """The template's image text where there is a template, else the processor's image token."""
        if self._has_template(processor):
            return super().image_placeholder(processor)
        return ModelAdapter.image_placeholder(self, processor)

    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        """The chat template's user turn plus generation prompt, else the question (the processor adds the image)."""
        if self._has_template(processor):
            return super().prompt(question, processor, has_image)
        return question.replace("<image>", "").strip()

    def encoder_inputs(self, processor: Any, question: str, image: Image.Image | None) -> dict[str, torch.Tensor]:
        """The processor's encoding of one prompt and its image, as at inference (`(1, L)` tensors)."""
        text = self.prompt(question, processor, has_image=image is not None)
        kwargs = {"add_special_tokens": False} if self._has_template(processor) else {}  # the template wrote BOS
        images = None if image is None else [image]
        return dict(processor(text=[text], images=images, padding=False, return_tensors="pt", **kwargs))

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """Image tokens in the processor's encoding of a prompt with one image (one size for every image)."""
        if "_image_tokens" not in self.__dict__:
            ids = self.encoder_inputs(processor, "q", Image.new("RGB", _PROBE_IMAGE))["input_ids"][0].tolist()
            self.__dict__["_image_tokens"] = ids.count(self.image_token_id(processor))  # UDOP: no image token, 0
        return self.__dict__["_image_tokens"]

    count_examples = PaliGemmaAdapter.count_examples

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        """One encoder prompt / decoder target example per assistant turn (see the class docstring)."""
        tokenizer, eot_id = tokenizer_of(processor), self.end_of_turn_id(processor)
        image = Image.new("RGB", _PROBE_IMAGE) if any("<image>" in m["content"] for m in messages) else None
        examples, question = [], None
        for message in messages:
            if message["role"] != "assistant":
                text = message["content"].replace("<image>", "").strip()
                question = text if question is None else f"{question}\n{text}"  # consecutive user turns join
                continue
            if question is None:
                raise ConversationError(f"sample {sample_id}: an assistant turn comes before any user turn")
            encoder = self.encoder_inputs(processor, question, image)
            input_ids = encoder["input_ids"][0].tolist()
            if image is not None and input_ids.count(self.image_token_id(processor)) != num_image_tokens:
                raise ConversationError(
                    f"sample {sample_id}: the processor expands this image to another number of image tokens than "
                    f"{num_image_tokens}; this adapter serves processors that resize every image to one size"
                )
            answer = tokenizer(text_target=message["content"].strip(), add_special_tokens=False)["input_ids"]
            labels = [*answer, eot_id]
            end_of_turn = [False] * (len(labels) - 1) + [True]
            extra = {
                key: value[0].tolist()
                for key, value in encoder.items()
                if key not in ("input_ids", "attention_mask") and _per_token(value, len(input_ids))
            }
            examples.append(Example(input_ids, labels, end_of_turn, extra))
            question = None
        if not examples:
            raise ConversationError(f"sample {sample_id} has no assistant turn, so nothing would be supervised")
        return examples

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The image inputs of the processor's encoding of a prompt with each image (all but the text fields)."""
        from vdtrain.data.dataset import batch_image_field

        per_image = [self.encoder_inputs(processor, "q", image) for image in images]
        ids = per_image[0]["input_ids"][0]
        keys = [
            key
            for key, value in per_image[0].items()
            if key not in ("input_ids", "attention_mask", "labels") and not _per_token(value, len(ids))
        ]
        return {key: batch_image_field([inputs[key] for inputs in per_image]) for key in keys}

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """Right-padded encoder prompts (from `prompt`) and their images: the decoder starts on its own."""
        kwargs = {"add_special_tokens": False} if self._has_template(processor) else {}
        tokenizer_of(processor, ensure_pad=True).padding_side = "right"
        return dict(processor(text=prompts, images=images or None, return_tensors="pt", padding=True, **kwargs))


def _per_token(value: Any, length: int) -> bool:
    """A `(1, length, ...)` tensor: a per-token field of the encoder input (`token_type_ids`, UDOP's `bbox`)."""
    return isinstance(value, torch.Tensor) and value.dim() >= 2 and tuple(value.shape[:2]) == (1, length)


@register_adapter("udop")
class UdopAdapter(EncoderDecoderAdapter):
    """UDOP: the encoder reads the page image and its words, each with its bounding box (`bbox`, 0-1000), and adds
    each image patch's embedding to the tokens inside it; there are no image tokens. The question is given as words
    with the empty box `[0, 0, 0, 0]` (it has no place on the page; UdopProcessor needs a box per word), and no OCR
    words are added (vdtrain's records carry none). Every sample needs its image: the encoder fuses one page per row.
    """

    def encoder_inputs(self, processor: Any, question: str, image: Image.Image | None) -> dict[str, torch.Tensor]:
        """The processor's encoding of the question's words (empty boxes) and the page image (`(1, L)` tensors)."""
        words = self.prompt(question, processor).split() or [""]
        boxes = [[[0, 0, 0, 0]] * len(words)]
        images = None if image is None else [image]
        return dict(processor(images=images, text=[words], boxes=boxes, padding=False, return_tensors="pt"))

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        """As `EncoderDecoderAdapter.encode`; a sample without an image is refused."""
        if not any("<image>" in message["content"] for message in messages):
            raise ConversationError(f"sample {sample_id} has no image; UDOP reads a page image with every sample")
        return super().encode(messages, processor, num_image_tokens, sample_id)
