"""Supervised spans and image batching, on a real SentencePiece tokenizer (npm Llama-2): glued spaces never move a
span, a span that tokenisation cannot keep is refused, tiles of several counts are padded as the processor pads."""

from __future__ import annotations

import pytest
import tiny
import torch

from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models.base import ConversationError, batch_image_field
from vdtrain.models.spans import answer_span, check_spans, label_tokens


@pytest.fixture(scope="module")
def llama2():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny.require_tokenizer_dir(tiny.LLAMA2_NPM))


def test_glued_spaces_never_move_the_span(llama2):
    text = "USER: hi ASSISTANT: there is a cat. USER: more ASSISTANT: blue."
    closer_free = [answer_span(text, "there is a cat.", 0, ""), answer_span(text, "blue.", 40, "")]
    assert [closed for *_, closed in closer_free] == [False, False]
    spans = [(lo, hi) for lo, hi, _ in closer_free]
    ids, labels, eot, span_of = label_tokens(llama2, text, spans, llama2.eos_token_id, None)
    runs = [[t for t, owner in zip(ids, span_of) if owner == index] for index in range(2)]
    assert [llama2.decode(run) for run in runs] == ["there is a cat.", "blue."]  # `▁there` in, `▁US` out
    assert [label for label in labels if label != IGNORE_INDEX] == runs[0] + runs[1]
    assert not any(eot)  # no EOS in this text


def test_closer_after_spaces_is_part_of_the_span(llama2):
    text = "[INST] q [/INST] an answer </s> [INST]"
    start, end, closed = answer_span(text, "an answer", 0, "</s>")
    assert closed and text[start:end] == "an answer </s>"
    ids, labels, eot, span_of = label_tokens(llama2, text, [(start, end)], llama2.eos_token_id, None)
    check_spans(llama2, text, [(start, end)], (ids, span_of), llama2.eos_token_id, "s0")
    assert sum(eot) == 1 and ids[eot.index(True)] == llama2.eos_token_id


def test_a_span_tokenisation_cannot_keep_is_refused(llama2):
    text = "ASSISTANT: therein</s>"
    span = [(11, 16)]  # "there": the tokenizer makes "therein" tokens that do not split there
    ids, _, _, span_of = label_tokens(llama2, text, span, llama2.eos_token_id, None)
    with pytest.raises(ConversationError, match="sample s7: assistant turn 1"):
        check_spans(llama2, text, span, (ids, span_of), llama2.eos_token_id, "s7")


def test_a_span_without_its_end_of_turn_is_refused(llama2):
    text = "ASSISTANT: blue. USER:"
    ids, _, _, span_of = label_tokens(llama2, text, [(11, 16)], llama2.eos_token_id, None)
    with pytest.raises(ConversationError, match="does not end with the end-of-turn token"):
        check_spans(llama2, text, [(11, 16)], (ids, span_of), llama2.eos_token_id, "s1")


def test_tiles_of_several_counts_are_zero_padded_and_lists_joined():
    three, five = torch.ones(1, 3, 2, 4, 4), torch.full((1, 5, 2, 4, 4), 2.0)
    batched = batch_image_field([three, five])
    assert batched.shape == (2, 5, 2, 4, 4)
    assert batched[0, :3].eq(1).all() and batched[0, 3:].eq(0).all() and batched[1].eq(2).all()
    sizes = batch_image_field([torch.tensor([[32, 48]]), torch.tensor([[48, 32]])])
    assert sizes.tolist() == [[32, 48], [48, 32]]
    assert batch_image_field([[torch.zeros(3)], [torch.ones(2), torch.ones(1)]])[1].shape == (2,)
