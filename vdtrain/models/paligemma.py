"""PaliGemma (`PaliGemmaForConditionalGeneration`): prefix (image + prompt) unsupervised, suffix supervised."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.errors import ConversationError
from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models.base import Example, ModelAdapter, register_adapter, tokenizer_of

TOKEN_TYPE_IDS = "token_type_ids"


@register_adapter("paligemma")
class PaliGemmaAdapter(ModelAdapter):
    """PaliGemma's prefix/suffix format, token for token what `PaliGemmaProcessor(text, images, suffix)` builds.

    Prefix: `[image token] * N + <bos> + question + "\\n"` (`token_type_ids` 0, unsupervised; the model attends to it
    bidirectionally). Suffix: `answer + <eos>` (`token_type_ids` 1, supervised, `<eos>` flagged end-of-turn).
    PaliGemma has no multi-turn format, so a conversation with k assistant turns becomes k examples, one per
    question/answer pair, each with the image; earlier turns are not repeated in later prefixes.
    `token_type_ids` is a per-token field, so it reaches the training forward and the noisy one alike.
    """

    pixel_key = "pixel_values"
    projector_modules = ("multi_modal_projector",)
    vision_modules = ("vision_tower",)
    image_tokens_depend_on_size = False  # every image is resized to the SigLIP input size

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """`image_seq_length` of the processor: the SigLIP tower's patch count (the "full" feature strategy)."""
        length = getattr(processor, "image_seq_length", None)
        return int(length) if length is not None else super().num_image_tokens(processor, image_size)

    def count_examples(self, messages: list[dict[str, str]]) -> int | None:
        """One example per assistant turn that follows a user turn (None: `encode` refuses the order)."""
        count, asked = 0, False
        for message in messages:
            if message["role"] == "assistant":
                if not asked:
                    return None
                count, asked = count + 1, False
            else:
                asked = True
        return count or None

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        """One prefix/suffix example per assistant turn (see the class docstring)."""
        tokenizer = tokenizer_of(processor)
        image_token = self.image_placeholder(processor)
        has_image = any("<image>" in message["content"] for message in messages)
        examples, question = [], None
        for message in messages:
            if message["role"] == "user":
                text = message["content"].replace("<image>", "").strip()
                question = text if question is None else f"{question}\n{text}"  # consecutive user turns join
            elif message["role"] == "assistant":
                if question is None:
                    raise ConversationError(f"sample {sample_id}: an assistant turn comes before any user turn")
                prefix = image_token * (num_image_tokens if has_image else 0) + tokenizer.bos_token + question + "\n"
                suffix = message["content"].strip() + tokenizer.eos_token
                examples.append(self._example(tokenizer, prefix, suffix))
                question = None
        if not examples:
            raise ConversationError(f"sample {sample_id} has no assistant turn, so nothing would be supervised")
        return examples

    @staticmethod
    def _example(tokenizer: Any, prefix: str, suffix: str) -> Example:
        """Prefix and suffix tokenised separately, as the processor does (its `text`/`text_pair` call)."""
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
        input_ids = [*prefix_ids, *suffix_ids]
        labels = [IGNORE_INDEX] * len(prefix_ids) + suffix_ids
        end_of_turn = [False] * len(prefix_ids) + [token == tokenizer.eos_token_id for token in suffix_ids]
        token_types = [0] * len(prefix_ids) + [1] * len(suffix_ids)
        return Example(input_ids, labels, end_of_turn, {TOKEN_TYPE_IDS: token_types})

    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        """The processor's generation prefix text: it adds `<bos>` after the image tokens and the final newline."""
        image = self.image_placeholder(processor) if has_image else ""
        return image + question.replace("<image>", "").strip()

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """Left-padded prefixes (no suffix) with `token_type_ids` all 0, as PaliGemma generates."""
        tokenizer = tokenizer_of(processor)
        tokenizer.padding_side = "left"
        batch = dict(processor(text=prompts, images=images, return_tensors="pt", padding=True))
        batch.pop("labels", None)
        if TOKEN_TYPE_IDS not in batch:
            batch[TOKEN_TYPE_IDS] = torch.zeros_like(batch["input_ids"])
        return batch
