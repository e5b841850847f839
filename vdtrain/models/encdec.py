"""Encoder-decoder image-text-to-text models (`config.is_encoder_decoder`: Florence-2, T5Gemma 2, UDOP): the image
and the prompt go to the encoder, the answer is the decoder's target."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.errors import ConversationError, UsageError
from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models.base import (
    COORDINATE_DIMS,
    Example,
    ModelAdapter,
    batch_image_field,
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
    # LoRA on the text encoder and the decoder (Florence-2's BART `language_model`, T5Gemma 2's `encoder.text_model`
    # and `decoder`), never on the vision tower
    lora_target_modules = (
        r".*(language_model|encoder\.text_model|model\.decoder)\..*"
        r"\.(q_proj|k_proj|v_proj|o_proj|out_proj|gate_proj|up_proj|down_proj|fc1|fc2)"
    )

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
        image = Image.new("RGB", _PROBE_IMAGE) if any("<image>" in m["content"] for m in messages) else None
        examples = [
            self._example(processor, question, answer, image, num_image_tokens, sample_id)
            for question, answer in _pairs(messages, sample_id)
        ]
        if not examples:
            raise ConversationError(f"sample {sample_id} has no assistant turn, so nothing would be supervised")
        return examples

    def _example(
        self,
        processor: Any,
        question: str,
        answer: str,
        image: Image.Image | None,
        num_image_tokens: int,
        sample_id: str,
    ) -> Example:
        """The processor's encoding of `question` and the image as encoder input; `answer` + end of turn as labels."""
        encoder = self.encoder_inputs(processor, question, image)
        input_ids = encoder["input_ids"][0].tolist()
        if image is not None and input_ids.count(self.image_token_id(processor)) != num_image_tokens:
            raise ConversationError(
                f"sample {sample_id}: the processor expands this image to another number of image tokens than "
                f"{num_image_tokens}; this adapter serves processors that resize every image to one size"
            )
        labels = [*_target_ids(processor, answer), self.end_of_turn_id(processor)]
        end_of_turn = [False] * (len(labels) - 1) + [True]
        extra = {
            key: value[0].tolist()
            for key, value in encoder.items()
            if key not in ("input_ids", "attention_mask") and _per_token(value, len(input_ids))
        }
        return Example(input_ids, labels, end_of_turn, extra)

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The image inputs of the processor's encoding of a prompt with each image (all but the text fields)."""
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
        nested = [[image] for image in images] if len(images) == len(prompts) else images  # one image per prompt
        return dict(processor(text=prompts, images=nested or None, return_tensors="pt", padding=True, **kwargs))


def _pairs(messages: list[dict[str, str]], sample_id: str) -> list[tuple[str, str]]:
    """`(question, answer)` per assistant turn; consecutive user turns join, earlier pairs are not repeated."""
    pairs, question = [], None
    for message in messages:
        if message["role"] != "assistant":
            text = message["content"].replace("<image>", "").strip()
            question = text if question is None else f"{question}\n{text}"
            continue
        if question is None:
            raise ConversationError(f"sample {sample_id}: an assistant turn comes before any user turn")
        pairs.append((question, message["content"].strip()))
        question = None
    return pairs


def _target_ids(processor: Any, text: str) -> list[int]:
    """`text` tokenised as a decoder target, without special tokens (UDOP's tokenizer wants `text_target` for it)."""
    return list(tokenizer_of(processor)(text_target=text, add_special_tokens=False)["input_ids"])


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

    lora_target_modules = r"(encoder|decoder)\.block\..*\.(q|k|v|o|wi|wo|wi_0|wi_1)"  # T5's linears
    projector_modules = ("patch_embed", "embed_patches")  # the patch embeddings joined to the word tokens
    vision_modules = ()  # no tower: the patch embedding is all of UDOP's vision side, trained as the projector

    def encoder_inputs(self, processor: Any, question: str, image: Image.Image | None) -> dict[str, torch.Tensor]:
        """The processor's encoding of the question's words (empty boxes) and the page image (`(1, L)` tensors)."""
        words = self.prompt(question, processor).split() or [""]
        boxes = [[[0, 0, 0, 0]] * len(words)]
        images = None if image is None else [image]
        return dict(processor(images=images, text=[words], boxes=boxes, padding=False, return_tensors="pt"))

    def image_token_id(self, processor: Any) -> int | None:
        """None: UDOP adds each patch's embedding to the word tokens inside it; no token stands for the image."""
        return None

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """The prompts' words with empty boxes and their page images, right-padded."""
        words = [prompt.split() or [""] for prompt in prompts]
        boxes = [[[0, 0, 0, 0]] * len(row) for row in words]
        tokenizer_of(processor, ensure_pad=True).padding_side = "right"
        return dict(processor(images=images, text=words, boxes=boxes, padding=True, return_tensors="pt"))

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        """As `EncoderDecoderAdapter.encode`; a sample without an image is refused."""
        if not any("<image>" in message["content"] for message in messages):
            raise ConversationError(f"sample {sample_id} has no image; UDOP reads a page image with every sample")
        return super().encode(messages, processor, num_image_tokens, sample_id)


@register_adapter("vision-encoder-decoder")
class DecoderPromptAdapter(EncoderDecoderAdapter):
    """Vision encoder-decoder models (`VisionEncoderDecoderModel`: Donut, TrOCR, Nougat): the encoder reads the pixels
    only, so the question goes to the decoder as a prefix of its input, unsupervised, as Donut's task prompts do.

    Per question/answer pair: `decoder_input_ids` = BOS + prompt + answer, `labels` = -100 over the prompt, then the
    answer + the end-of-turn token (EOS), position for position (the decoder's input `t` predicts `labels[t]`); no
    `input_ids`. The decoder starts from `decoder_start_id`, the tokenizer's BOS, which must be the model's
    `decoder_start_token_id` (as in Donut and TrOCR). The prompt is `decoder_prompt` with the question. Every sample
    needs its image.
    """

    decoder_prompt = "Question: {question} Answer:"
    lora_target_modules = r"decoder\..*\.(q_proj|k_proj|v_proj|o_proj|out_proj|gate_proj|up_proj|down_proj|fc1|fc2)"
    projector_modules = ("enc_to_dec_proj", "multi_modal_projector")  # where the encoder's width meets the decoder's
    vision_modules = ("encoder.",)  # the whole encoder (not the decoder's `encoder_attn`)

    def decoder_start_id(self, processor: Any) -> int:
        """The token the decoder starts from: the tokenizer's BOS."""
        return tokenizer_of(processor).bos_token_id

    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        """The decoder's prefix for one question (the image goes to the encoder)."""
        return self.decoder_prompt.format(question=question.replace("<image>", "").strip())

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """None: the image never enters the token sequence."""
        return 0

    def image_token_id(self, processor: Any) -> int | None:
        """None: no token stands for the image."""
        return None

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The processor's pixel inputs of the images."""
        return {key: value for key, value in processor(images=images, return_tensors="pt").items() if key != "labels"}

    def _example(
        self,
        processor: Any,
        question: str,
        answer: str,
        image: Image.Image | None,
        num_image_tokens: int,
        sample_id: str,
    ) -> Example:
        """`decoder_input_ids` and `labels` of one pair (see the class docstring)."""
        if image is None:
            raise ConversationError(f"sample {sample_id} has no image; a vision encoder-decoder reads only the image")
        prompt, target = _target_ids(processor, self.prompt(question, processor)), _target_ids(processor, answer)
        labels = [IGNORE_INDEX] * len(prompt) + [*target, self.end_of_turn_id(processor)]
        decoder = [self.decoder_start_id(processor), *prompt, *target]
        end_of_turn = [False] * (len(labels) - 1) + [True]
        return Example([], labels, end_of_turn, {"decoder_input_ids": decoder})

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """The images' pixels and the decoder prefixes (BOS + prompt), left-padded, with their attention mask."""
        tokenizer = tokenizer_of(processor, ensure_pad=True)
        prefixes = [[self.decoder_start_id(processor), *_target_ids(processor, prompt)] for prompt in prompts]
        width = max(map(len, prefixes))
        ids = [[tokenizer.pad_token_id] * (width - len(p)) + p for p in prefixes]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prefixes]
        return {
            **self.image_inputs(processor, images),
            "decoder_input_ids": torch.tensor(ids),
            "decoder_attention_mask": torch.tensor(mask),
        }


@register_adapter("pp_formulanet")
class PPFormulaNetAdapter(DecoderPromptAdapter):
    """PP-FormulaNet: an image-to-LaTeX vision encoder-decoder whose processor reads images only; laid out as
    `DecoderPromptAdapter`, with the decoder starting from EOS, as the model's own shift of its targets does."""

    def decoder_start_id(self, processor: Any) -> int:
        """The tokenizer's EOS (PP-FormulaNet's `decoder_start_token_id`)."""
        return tokenizer_of(processor).eos_token_id


@register_adapter("pix2struct")
class Pix2StructAdapter(DecoderPromptAdapter):
    """Pix2Struct in captioning mode: its encoder reads only `flattened_patches` `(B, max_patches, 2 + p*p*C)` (with
    their patch `attention_mask`), so the question is the decoder's unsupervised prefix, laid out as
    `DecoderPromptAdapter`, which is what its processor makes of `text` beside `images` at inference too. The decoder
    starts from `<pad>` (T5's convention, Pix2Struct's `decoder_start_token_id`).

    The first two entries of each patch are its row and column, which the encoder's embeddings read as indices:
    `coordinate_channels = 2` keeps them, and the all-zero padding patches, out of the noise. VQA checkpoints
    (`image_processor.is_vqa`) are refused: they render the question into the image as a header, so the noisy pass
    would erase the question together with the image and `d` would measure the answer's dependence on both.
    """

    pixel_key = "flattened_patches"
    coordinate_channels = 2
    lora_target_modules = r"decoder\.layer\..*\.(query|key|value|output|wi_0|wi_1|wo)"  # the T5-style decoder's
    projector_modules = ()  # the encoder's output goes straight to the decoder's cross-attention
    vision_modules = ("encoder.",)  # the whole image encoder (not the decoder's `encoder_decoder_attention`)

    def decoder_start_id(self, processor: Any) -> int:
        """The tokenizer's pad token (Pix2Struct's `decoder_start_token_id`, as in T5)."""
        return tokenizer_of(processor, ensure_pad=True).pad_token_id

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, Any]:
        """The processor's patches of the images and their patch mask, with the count of coordinate channels."""
        return {**self._pixels(processor, images), COORDINATE_DIMS: {self.pixel_key: self.coordinate_channels}}

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """The images' patches and the decoder prefixes (`<pad>` + prompt), left-padded, with their attention mask."""
        batch = super().generation_inputs(processor, prompts, images)
        batch.pop(COORDINATE_DIMS, None)
        return batch

    def _pixels(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """`flattened_patches` and the patch `attention_mask` of a captioning processor's call on the images."""
        if getattr(processor.image_processor, "is_vqa", False):
            raise UsageError(
                "this Pix2Struct processor is a VQA one (image_processor.is_vqa): it renders the question into the "
                "image, which the noisy pass would erase together with the image; fine-tune from a captioning "
                "checkpoint (the question becomes the decoder's prefix) or train without the VD loss"
            )
        return dict(processor(images=images, return_tensors="pt"))
