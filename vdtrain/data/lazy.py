"""Planning examples without tokenising them, for `lazy_preprocess` (LLaVA's name): an upper bound on the tokens
before each example's first supervised token tells, for nearly every sample, that truncation to `max_length` can
neither leave it without supervised tokens nor cut its image, so the sample is checked (turns, `<image>` count,
special-token text, image header) and listed before training but tokenised only when the trainer reads it.

The bound: every token of a text covers at least one byte of it (byte-level BPE, byte fallback, unigram), except a
tokenizer's added prefix space and the format's own tokens. So the tokens before an answer are at most the bytes of
the messages before it, plus the format's tokens per message (system prompt, role headers: measured once on a
one-letter probe, with slack), plus what the image adds (its tokens, delimiters and tile markers: measured once per
image size on the same probe). A sample whose bound reaches `max_length` is tokenised while checking, exactly as
the tokenised-first path does.
"""

from __future__ import annotations

from typing import Any

from vdtrain.errors import ConversationError
from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models.base import ModelAdapter

SLACK_PER_MESSAGE = 4  # a prefix space per piece, a glued boundary token: never more than a few tokens
BYTES_PER_TOKEN_GUESS = 4  # only for the length guess that groups samples by length
PROBE_IMAGE = (64, 64)  # the probe's image size where a family refuses a sample without one


class PrefixBound:
    """The bound for one adapter and processor, with its probes measured once (per image size where it matters)."""

    def __init__(self, adapter: ModelAdapter, processor: Any) -> None:
        self.adapter, self.processor = adapter, processor
        try:
            self.per_message = self._first_answer(None) + SLACK_PER_MESSAGE
        except ConversationError:  # the family reads an image with every sample (UDOP, vision encoder-decoders)
            # measured with an image: its tokens counted in every message keep the bound an upper bound (looser)
            self.per_message = self._first_answer(PROBE_IMAGE) + SLACK_PER_MESSAGE
        self._image_costs: dict[tuple[int, int] | None, int] = {}

    def _first_answer(self, size: tuple[int, int] | None) -> int:
        """Where the answer starts in a one-letter exchange, with an image of `size` or none."""
        tokens = self.adapter.num_image_tokens(self.processor, size) if size is not None else 0
        messages = [
            {"role": "user", "content": ("<image>\n" if size is not None else "") + "q"},
            {"role": "assistant", "content": "a"},
        ]
        labels = self.adapter.encode(messages, self.processor, tokens, sample_id="probe")[0].labels
        return next(index for index, label in enumerate(labels) if label != IGNORE_INDEX)

    def image_cost(self, size: tuple[int, int]) -> int:
        """Tokens an image of `size` (w, h) adds before the answer: its image tokens and their markers."""
        key = tuple(size) if self.adapter.image_tokens_depend_on_size else None
        if key not in self._image_costs:
            self._image_costs[key] = max(0, self._first_answer(tuple(size)) - self.per_message + SLACK_PER_MESSAGE)
        return self._image_costs[key]

    def bounds(self, messages: list[dict[str, str]], count: int, size: tuple[int, int] | None) -> list[int] | None:
        """Per example `k` (the one ending at the `k`-th answer), at most how many tokens come before its first
        supervised token; None when the messages do not pair that many answers with questions."""
        answers = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
        if len(answers) < count or not answers or answers[0] == 0:
            return None
        image_turn = next((index for index, message in enumerate(messages) if "<image>" in message["content"]), -1)
        total, running = [], 0
        for message in messages:
            running += len(message["content"].replace("<image>", "").encode("utf-8")) + self.per_message
            total.append(running)
        image = self.image_cost(size) if image_turn >= 0 and size is not None else 0
        # everything before the k-th answer, and the image's turn wherever it is
        return [total[max(answers[k], image_turn + 1) - 1] + image for k in range(count)]

    def length(self, messages: list[dict[str, str]], count: int, size: tuple[int, int] | None, limit: int) -> int:
        """A guess at the tokens of each of the sample's `count` examples, for `group_by_length` (LLaVA's lazy
        dataset counts words): the image, the format once and a share of the text."""
        text = sum(len(message["content"].encode("utf-8")) for message in messages) // (BYTES_PER_TOKEN_GUESS * count)
        image = self.image_cost(size) if size is not None else 0
        return min(limit, image + self.per_message + SLACK_PER_MESSAGE * len(messages) // count + text)
