"""LLaVA labels with the real Llama-2-style tokenizer: the authors' `preprocess_v1` under `legacy=True`, inference's
tokenisation under `legacy=False` (where the authors' code has one extra `▁` right after the image)."""

from __future__ import annotations

import pytest
import tiny
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessorPil, LlavaProcessor

from vdtrain.models import get_adapter
from vdtrain.models.base import IGNORE_INDEX
from vdtrain.models.llava import VICUNA_SYSTEM

AUTHORS_IMAGE = -200  # LLaVA's IMAGE_TOKEN_INDEX: one placeholder id, expanded inside the model
CONVERSATION = [
    {"role": "user", "content": "<image>\nWhat is in the picture?"},
    {"role": "assistant", "content": "A red cat sits on a blue mat."},
    {"role": "user", "content": "What colour is the mat?"},
    {"role": "assistant", "content": "It is blue."},
]


@pytest.fixture(scope="module")
def llama2_dir():
    return tiny.require_tokenizer_dir(tiny.LLAMA2_NPM)


def llava_processor(folder, legacy: bool) -> LlavaProcessor:
    tokenizer = AutoTokenizer.from_pretrained(folder, legacy=legacy, extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def authors_tokens(tokenizer, text: str) -> list[int]:
    """LLaVA's `tokenizer_image_token`: each text chunk around `<image>` tokenised on its own (with BOS), the
    chunks after the first losing their BOS, one -200 placeholder between chunks."""
    chunks = [tokenizer(chunk).input_ids for chunk in text.split("<image>")]
    ids = [chunks[0][0]] if chunks[0][:1] == [tokenizer.bos_token_id] else []
    offset = len(ids)
    for index, chunk in enumerate(chunks):
        if index:
            ids.append(AUTHORS_IMAGE)
        ids += chunk[offset:]
    return ids


def authors_preprocess_v1(tokenizer, messages) -> tuple[list[int], list[int]]:
    """The Vicuna-v1 prompt and masking of LLaVA's `preprocess_v1`: the whole conversation tokenised at once, then
    each round's instruction masked by the length of its own tokenisation (one less after round 0 when the
    tokenizer is not legacy)."""
    text = VICUNA_SYSTEM + " "
    for message in messages:
        if message["role"] == "user":
            content = message["content"]
            if "<image>" in content:
                content = "<image>\n" + content.replace("<image>", "").strip()
            text += f"USER: {content} "
        else:
            text += f"ASSISTANT: {message['content']}</s>"
    ids = authors_tokens(tokenizer, text)
    labels = list(ids)
    labels[0] = IGNORE_INDEX
    position = 1
    for index, round_text in enumerate(text.split("</s>")):
        if not round_text:
            break
        instruction = round_text.split(" ASSISTANT: ")[0] + " ASSISTANT: "
        round_length = len(authors_tokens(tokenizer, round_text))
        instruction_length = len(authors_tokens(tokenizer, instruction)) - 2
        if index and not tokenizer.legacy:
            round_length, instruction_length = round_length - 1, instruction_length - 1
        labels[position : position + instruction_length] = [IGNORE_INDEX] * instruction_length
        position += round_length
    labels[position:] = [IGNORE_INDEX] * (len(labels) - position)
    return ids, labels


def collapsed(example, image_id: int) -> tuple[list[int], list[int]]:
    """vdtrain's ids and labels with the run of expanded image tokens folded into the authors' one placeholder."""
    ids, labels = [], []
    for token, label in zip(example.input_ids, example.labels):
        if token == image_id:
            if ids and ids[-1] == AUTHORS_IMAGE:
                continue
            token, label = AUTHORS_IMAGE, IGNORE_INDEX
        ids.append(token)
        labels.append(label)
    return ids, labels


def encode(processor):
    adapter = get_adapter("llava")
    (example,) = adapter.encode(CONVERSATION, processor, adapter.num_image_tokens(processor, (32, 32)))
    return adapter, example


def test_legacy_tokenizer_gives_the_authors_ids_and_labels(llama2_dir):
    processor = llava_processor(llama2_dir, legacy=True)
    assert processor.tokenizer.legacy
    adapter, example = encode(processor)
    ids, labels = collapsed(example, adapter.image_token_id(processor))
    authors_ids, authors_labels = authors_preprocess_v1(processor.tokenizer, CONVERSATION)
    assert ids == authors_ids
    assert labels == authors_labels
    supervised = [token for token, label in zip(ids, labels) if label != IGNORE_INDEX]
    decoded = processor.tokenizer.decode(supervised)
    assert decoded == "A red cat sits on a blue mat.</s> It is blue.</s>"  # legacy: a word start after </s>


def test_non_legacy_tokenizer_follows_inference_not_the_authors_extra_token(llama2_dir):
    processor = llava_processor(llama2_dir, legacy=False)
    tokenizer = processor.tokenizer
    adapter, example = encode(processor)
    ids, labels = collapsed(example, adapter.image_token_id(processor))
    authors_ids, authors_labels = authors_preprocess_v1(tokenizer, CONVERSATION)
    after_image = authors_ids.index(AUTHORS_IMAGE) + 1
    assert tokenizer.convert_ids_to_tokens(authors_ids[after_image]) == "▁"  # tokenised apart: a fresh word start
    assert authors_ids[:after_image] + authors_ids[after_image + 1 :] == ids
    assert authors_labels[:after_image] + authors_labels[after_image + 1 :] == labels


@pytest.mark.parametrize("legacy", [True, False])
def test_training_prompt_equals_the_processor_at_inference(llama2_dir, legacy):
    """The tokens before the first answer are what llava-hf's processor gives for the inference prompt."""
    processor = llava_processor(llama2_dir, legacy=legacy)
    adapter, example = encode(processor)
    first_answer = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    prompt = adapter.prompt("What is in the picture?", processor)
    inference = processor(text=prompt, images=Image.new("RGB", (32, 32)))["input_ids"][0]
    assert example.input_ids[:first_answer] == list(inference)
