"""Where things are in a caption: the characters each CHAIR object mention spans, and each model token's characters.

CHAIR (vdtrain.evaluation.chair) sees lemmas of `nltk.word_tokenize`d, lowercased text; the analysis needs the
model tokens that spell each mention. Both are mapped to character offsets of the caption and matched by overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vdtrain.evaluation.chair import DOUBLE_WORDS, Synonyms
from vdtrain.evaluation.lemmatize import caption_lemmas

_QUOTES = ('"', "``", "''")


@dataclass(frozen=True)
class Mention:
    """One object mention: the synonym item CHAIR matched, its category and the caption characters it spans."""

    word: str
    category: str
    start: int
    end: int


def _lowered(caption: str) -> tuple[str, list[int]]:
    """`caption` lowercased character by character, and for each lowered character the index it came from."""
    chars, origin = [], []
    for index, char in enumerate(caption):
        low = char.lower()  # "İ" lowers to two characters: keep the map exact
        chars.append(low)
        origin += [index] * len(low)
    return "".join(chars), origin


def word_spans(caption: str) -> list[tuple[int, int] | None]:
    """Character span in `caption` of every token of `nltk.word_tokenize(caption.lower())` (None if not found)."""
    from nltk import word_tokenize

    lowered, origin = _lowered(caption)
    spans: list[tuple[int, int] | None] = []
    position = 0
    for token in word_tokenize(lowered):
        candidates = _QUOTES if token in _QUOTES else (token,)  # the tokenizer rewrites '"' as `` or ''
        found = [(lowered.find(c, position), c) for c in candidates]
        found = [(at, c) for at, c in found if at >= 0]
        if not found:
            spans.append(None)
            continue
        at, text = min(found)
        spans.append((origin[at], origin[at + len(text) - 1] + 1))
        position = at + len(text)
    return spans


def object_mentions(caption: str, synonyms: Synonyms, lemmatizer: str = "nltk") -> list[Mention]:
    """CHAIR's object mentions of `caption` (same lemmas, double-word merge and toilet-seat rule as
    `extract_objects`, so the words equal its `words`), each with the caption characters it spans."""
    lemmas = caption_lemmas(caption, lemmatizer)
    spans = word_spans(caption)
    if len(spans) != len(lemmas):  # both tokenise the same lowered text; a mismatch is a bug, not bad input
        raise RuntimeError(f"caption {caption!r}: {len(lemmas)} lemmas but {len(spans)} word spans")
    merged: list[tuple[str, list[tuple[int, int] | None]]] = []
    i = 0
    while i < len(lemmas):
        pair = " ".join(lemmas[i : i + 2])
        if pair in DOUBLE_WORDS:
            merged.append((DOUBLE_WORDS[pair], spans[i : i + 2]))
            i += 2
        else:
            merged.append((lemmas[i], [spans[i]]))
            i += 1
    tokens = [token for token, _ in merged]
    if "toilet" in tokens and "seat" in tokens:
        merged = [(token, where) for token, where in merged if token != "seat"]
    mentions = []
    for token, where in merged:
        if token not in synonyms.to_category:
            continue
        known = [span for span in where if span is not None]
        start, end = (min(s for s, _ in known), max(e for _, e in known)) if known else (-1, -1)
        mentions.append(Mention(token, synonyms.to_category[token], start, end))
    return mentions


def token_char_spans(tokenizer: Any, token_ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """Character span in `text` of each of `token_ids`, which spell `text` (possibly after a leading space).

    Prefixes are decoded cumulatively, so tokenizers that drop a word's leading space when decoding one token
    alone (SentencePiece) and byte-level pieces of one character still get exact offsets.
    """

    def decode(ids: Sequence[int]) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    full = decode(token_ids)
    offset = full.find(text)
    if offset < 0:
        raise ValueError(f"the tokens decode to {full!r}, which does not contain the caption {text!r}")
    spans, previous = [], 0
    for k in range(len(token_ids)):
        end = len(decode(token_ids[: k + 1]))
        start, stop = max(previous - offset, 0), max(min(end - offset, len(text)), 0)
        spans.append((min(start, stop), stop))
        previous = max(previous, end)
    return spans


def mention_tokens(mention: Mention, spans: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """`(first, last + 1)` of the tokens whose characters overlap the mention's, None if none do."""
    hits = [k for k, (start, end) in enumerate(spans) if start < mention.end and end > mention.start]
    return (hits[0], hits[-1] + 1) if hits else None
