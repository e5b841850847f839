"""Supervised spans that cannot drift: character spans of a rendered conversation turned into token labels.

A token belongs to the span its first non-space character lies in, so a space the tokenizer glues onto the first
answer token (`▁there`) or onto the next turn's text (`▁USER`) never moves the span; every span is then decoded back
and compared with the text it was cut from, so a tokenizer that merges across a span boundary is refused, not
trained on silently.
"""

from __future__ import annotations

from typing import Any

from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models.base import ConversationError


def token_positions(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """The character each token is assigned by: its first non-space character (its start if it is all space)."""
    positions = []
    for start, end in offsets:
        piece = text[start:end]
        stripped = piece.lstrip()
        positions.append(start + len(piece) - len(stripped) if stripped else start)
    return positions


def answer_span(text: str, answer: str, search_from: int, closer: str) -> tuple[int, int, bool]:
    """`(start, end, closed)`: where `answer` starts at or after `search_from`, and where its turn's supervised text
    ends: after `closer` when the template writes it next (whitespace between them included), else at the answer's
    end (`closed` False: the caller appends an end-of-turn token)."""
    start = text.find(answer, search_from) if answer else search_from
    if start < 0:
        return -1, -1, False
    end = start + len(answer)
    rest = text[end:]
    gap = len(rest) - len(rest.lstrip())
    if closer and rest[gap:].startswith(closer):
        return start, end + gap + len(closer), True
    return start, end, False


def label_tokens(
    tokenizer: Any, text: str, spans: list[tuple[int, int]], end_of_turn_id: int, image_token_id: int | None
) -> tuple[list[int], list[int], list[bool], list[int]]:
    """`(input_ids, labels, end_of_turn, span_of)` of `text` tokenised once: a token is supervised when its assigned
    character lies in a span (image tokens never are); `span_of[i]` is that span's index, -1 outside any."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels, eot, span_of = [], [], []
    for token, char in zip(input_ids, token_positions(text, encoded["offset_mapping"])):
        index = next((i for i, (lo, hi) in enumerate(spans) if lo <= char < hi), -1)
        if token == image_token_id:
            index = -1
        labels.append(token if index >= 0 else IGNORE_INDEX)
        eot.append(index >= 0 and token == end_of_turn_id)
        span_of.append(index)
    return input_ids, labels, eot, span_of


def check_spans(
    tokenizer: Any,
    text: str,
    spans: list[tuple[int, int]],
    encoded: tuple[list[int], list[int]],
    end_of_turn_id: int,
    sample_id: str,
) -> None:
    """Refuse a sample whose supervised tokens of some span do not decode to that span's text (up to the spaces at
    its ends), or does not end with the end-of-turn token: the labels would train on text that is not the answer.

    Args:
        encoded: `(input_ids, span_of)` from `label_tokens`.
    """
    input_ids, span_of = encoded
    for index, (lo, hi) in enumerate(spans):
        tokens = [token for token, owner in zip(input_ids, span_of) if owner == index]
        decoded = tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if decoded.strip() != text[lo:hi].strip():
            raise ConversationError(
                f"sample {sample_id}: assistant turn {index + 1}'s supervised tokens decode to {decoded!r}, not to "
                f"its text {text[lo:hi]!r}: the tokenizer merges the answer with the template text around it"
            )
        if not tokens or tokens[-1] != end_of_turn_id:
            raise ConversationError(
                f"sample {sample_id}: assistant turn {index + 1} does not end with the end-of-turn token "
                f"{tokenizer.convert_ids_to_tokens(end_of_turn_id)!r} as its last supervised token"
            )
