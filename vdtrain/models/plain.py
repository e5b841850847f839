"""Processors without a chat template (BLIP-2, InstructBLIP-style): a plain `Question: q Answer: a` format."""

from __future__ import annotations

from typing import Any

from PIL import Image

from vdtrain.models.base import ModelAdapter, register_plain_adapter, tokenizer_of
from vdtrain.models.generic import ChatTemplateAdapter


@register_plain_adapter
class PromptAnswerAdapter(ChatTemplateAdapter):
    """Each turn as `Question: q Answer: a` after the image and BOS, turns on separate lines, each answer closed by
    a supervised EOS (the span logic of `ChatTemplateAdapter` appends it: nothing special follows an answer).

    A processor that puts the image tokens in front of the text itself (BLIP-2's `num_query_tokens`) gets no
    placeholder in its generation prompts; in training text the placeholder stands first, where it puts them. One
    whose tokenizer has no image token at all (BLIP's cross-attention, GIT's image prefix inside the model: the
    image reaches the model beside the text) gets no placeholder anywhere, and no image tokens.
    """

    def _render(self, processor: Any, chat: list[dict], add_generation_prompt: bool = False) -> str:
        """The conversation in the plain format (the image placeholder where the image part is)."""
        tokenizer, lines = tokenizer_of(processor), []
        image = ""
        for message in chat:
            text = " ".join(part["text"] for part in message["content"] if part["type"] == "text")
            if any(part["type"] == "image" for part in message["content"]):
                image = self._placeholder(processor)
            if message["role"] == "user":
                lines.append(f"Question: {text} Answer:")
            elif message["role"] == "assistant" and lines:
                lines[-1] += f" {text}"
        return image + (tokenizer.bos_token or "") + "\n".join(lines)

    def _template(self, processor: Any) -> str:
        return ""  # no {% generation %} tags: spans come from rendering the history before each answer

    def image_token_id(self, processor: Any) -> int | None:
        """The image token the tokenizer or processor names (BLIP-2's `<image>`), None when there is none (BLIP, GIT):
        the text is never searched for one, since without a token the placeholder is empty."""
        if "_image_token_id" not in self.__dict__:
            tokenizer = tokenizer_of(processor)
            named = [getattr(owner, "image_token_id", None) for owner in (tokenizer, processor)]
            if not any(isinstance(token_id, int) and token_id != tokenizer.unk_token_id for token_id in named):
                self.__dict__["_image_token_id"] = ModelAdapter.image_token_id(self, processor)
        return super().image_token_id(processor)

    def _placeholder(self, processor: Any) -> str:
        if self.image_token_id(processor) is None:  # the image is no part of the text
            return ""
        token = getattr(processor, "image_token", None) or getattr(tokenizer_of(processor), "image_token", None)
        return str(getattr(token, "content", token) or "<image>")

    def _prepends_images(self, processor: Any) -> int:
        """How many image tokens the processor puts in front of a text without placeholder (0: it needs one)."""
        if "_prepended" not in self.__dict__ and self.image_token_id(processor) is None:
            self.__dict__["_prepended"] = 0
        if "_prepended" not in self.__dict__:
            try:
                image = Image.new("RGB", (64, 64))
                ids = processor(text="", images=image, add_special_tokens=False, return_tensors="pt")["input_ids"]
                self.__dict__["_prepended"] = int((ids[0] == self.image_token_id(processor)).sum())
            except ValueError:  # "number of <image> tokens ... should be the same as the number of images"
                self.__dict__["_prepended"] = 0
        return self.__dict__["_prepended"]

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """The processor's own count when it prepends the image tokens itself, 0 when the text holds no image token,
        else measured on the placeholder."""
        count = self._prepends_images(processor)
        if not count and self.image_token_id(processor) is not None:
            return super().num_image_tokens(processor, image_size)
        self._expansions[count] = self._placeholder(processor) * count
        self._type_keys = self._type_keys or []
        return count

    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        """`Question: q Answer:` after BOS; after the placeholder too unless the processor prepends images itself."""
        text = super().prompt(question, processor, has_image)
        placeholder = self._placeholder(processor)
        if has_image and self._prepends_images(processor) and text.startswith(placeholder):
            text = text[len(placeholder) :]
        return text
