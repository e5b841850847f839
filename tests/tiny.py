"""Tiny real models, tokenizers and processors built from configs (random weights, no downloads)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = (
    "a chat between curious user and an artificial intelligence assistant the gives helpful detailed polite "
    "answers to user's questions USER ASSISTANT describe this image in detail there is red cat on blue mat "
    "dog sits next tree what color are objects picture shows two apples box yes no it Is any"
).split()
IMAGE_SIZE = 32
PATCH = 8


def tiny_tokenizer(extra_special: tuple[str, ...] = ()):
    """A byte-level BPE trained on the fly, with Llama-style special tokens and `<image>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>", *extra_special]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [" ".join(random.Random(i).sample(WORDS, 12)) + "." for i in range(200)]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 $B:1", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )


def tiny_llava(hidden: int = 64, layers: int = 2, vocab: int | None = None, seed: int = 0):
    """`(model, processor)`: a real `LlavaForConditionalGeneration` with a CLIP tower on 32-px images."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = tiny_tokenizer()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32,
    )  # fmt: skip
    text = LlamaConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=vocab or len(tokenizer), max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2, vision_feature_select_strategy="default",
        vision_feature_layer=-2, projector_hidden_act="gelu",
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval(), processor


def write_images(folder: Path, count: int, seed: int = 0, size: int = IMAGE_SIZE) -> list[str]:
    """Random-colour PNGs; returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for index in range(count):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        name = f"img_{index:03d}.png"
        Image.fromarray(pixels).save(folder / name)
        names.append(name)
    return names


def write_conversations(path: Path, image_names: list[str], turns: int = 1, text_only: int = 0) -> list[dict]:
    """LLaVA-format JSON with one record per image (plus `text_only` records without image)."""
    rng = random.Random(0)
    records = []
    for index, name in enumerate(image_names):
        conversation = []
        for turn in range(turns):
            question = " ".join(rng.sample(WORDS, 5)) + "?"
            conversation.append({"from": "human", "value": ("<image>\n" if turn == 0 else "") + question})
            conversation.append({"from": "gpt", "value": " ".join(rng.sample(WORDS, 6)) + "."})
        records.append({"id": f"s{index}", "image": name, "conversations": conversation})
    for index in range(text_only):
        records.append(
            {"id": f"t{index}", "conversations": [
                {"from": "human", "value": "what color is the cat?"}, {"from": "gpt", "value": "it is red."}]}
        )  # fmt: skip
    path.write_text(json.dumps(records))
    return records
