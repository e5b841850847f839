"""LLaVA-1.5 (`LlavaForConditionalGeneration`, llava-hf checkpoints) in the Vicuna-v1 format it was trained with."""

from __future__ import annotations

from typing import Any

import numpy as np

from vdtrain.errors import ConversationError
from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models.base import (
    Example,
    ModelAdapter,
    register_adapter,
    tokenize_spans,
    tokenizer_of,
)

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def vicuna_pieces(
    messages: list[dict[str, str]], image_text: str, eos: str, system: str = VICUNA_SYSTEM, sample_id: str = "?"
) -> list[tuple[str, bool]]:
    """`(text, supervised)` pieces of a Vicuna-v1 conversation: `SYSTEM USER: q ASSISTANT: a</s>USER: ...`.

    The image placeholder goes first in the first user turn, followed by a newline, as LLaVA does.
    """
    pieces: list[tuple[str, bool]] = []
    prefix = system + " "
    for index, message in enumerate(messages):
        content = message["content"]
        if message["role"] == "user":
            if "<image>" in content:
                content = image_text + "\n" + content.replace("<image>", "").strip()
            prefix += f"USER: {content} ASSISTANT:"
            pieces.append((prefix, False))
            prefix = ""
        elif message["role"] == "assistant":
            if index == 0:
                raise ConversationError(f"sample {sample_id}: the conversation starts with an assistant turn")
            pieces.append((" " + content.strip() + eos, True))
    return pieces


def examples_from_pieces(
    processor: Any, pieces: list[tuple[str, bool]], eot_id: int, image_id: int | None, num_image_tokens: int
) -> Example:
    """Tokenise pieces once, expand each image token to `num_image_tokens` copies, mask and flag end-of-turn."""
    ids, supervised = tokenize_spans(tokenizer_of(processor), pieces)
    ids, supervised = np.asarray(ids, dtype=np.int64), np.asarray(supervised, dtype=bool)
    repeat = np.where(ids == image_id, num_image_tokens, 1) if image_id is not None else np.ones_like(ids)
    labels = np.where(supervised & (repeat == 1), ids, IGNORE_INDEX)
    eot = supervised & (ids == eot_id) if eot_id is not None else np.zeros_like(supervised)
    return Example(*(np.repeat(values, repeat).tolist() for values in (ids, labels, eot)))


@register_adapter("llava")
class LlavaAdapter(ModelAdapter):
    """LLaVA-1.5: Vicuna-v1 system prompt, `USER:`/`ASSISTANT:`, every assistant turn closed by a supervised `</s>`.

    The llava-hf chat template has no system prompt and never supervises `</s>`, so the released checkpoints'
    training format is rebuilt here instead.
    """

    pixel_key = "pixel_values"
    projector_modules = ("multi_modal_projector",)
    image_tokens_depend_on_size = False

    def count_examples(self, messages: list[dict[str, str]]) -> int:
        """One example holds the whole conversation."""
        return 1

    def encode(self, messages, processor, num_image_tokens, sample_id="?"):
        tokenizer = tokenizer_of(processor)
        pieces = vicuna_pieces(messages, self.image_placeholder(processor), tokenizer.eos_token, sample_id=sample_id)
        eot_id = self.end_of_turn_id(processor)
        return [examples_from_pieces(processor, pieces, eot_id, self.image_token_id(processor), num_image_tokens)]

    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        image = self.image_placeholder(processor) + "\n" if has_image else ""
        return f"{VICUNA_SYSTEM} USER: {image}{question.replace('<image>', '').strip()} ASSISTANT:"
