"""Tiny random-weight models of the image-text-to-text families whose image (or video) processors need torchvision,
built like tests/zoo.py (real npm tokenizers, chat templates written like the published ones, a few layers).

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families. `require_torchvision()` skips a test
where torchvision does not import (PyPI's does not beside the CPU torch 2.13), and fails it under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from zoo import CHATML, COHERE_TEMPLATE, IDEFICS_TEMPLATE, IMAGE, PATCH, _seeded, llama, siglip, tokenizer


def require_torchvision() -> None:
    """Skip the calling test unless torchvision imports (and transformers sees it); under CI=true, fail it."""
    import pytest

    try:
        import torchvision  # noqa: F401
        from transformers.utils import is_torchvision_available

        available = is_torchvision_available()
    except (ImportError, OSError, RuntimeError) as error:  # PyPI's torchvision beside a CPU torch: RuntimeError
        available, reason = False, f"torchvision does not import: {error!r}"
    else:
        reason = "transformers does not see torchvision"
    if not available:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(reason)
        pytest.skip(reason)


# SmolVLM's: Idefics3's template opened by `<|im_start|>`.
SMOLVLM_TEMPLATE = IDEFICS_TEMPLATE.replace("<|begin_of_text|>", "<|im_start|>")


def smolvlm() -> tuple[Any, Any]:
    """SmolVLM: Idefics3's tiling (`<row_r_col_c>` tags, a global image) with a SmolVLM vision tower."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    specials = ("<|im_start|>", "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>")
    tok = tokenizer("llama3", specials, {"image_token": "<image>"})
    image_processor = SmolVLMImageProcessor(
        size={"longest_edge": 2 * IMAGE}, max_image_size={"longest_edge": IMAGE}, do_image_splitting=True
    )
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=4,
        chat_template=SMOLVLM_TEMPLATE,
    )
    config = SmolVLMConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
        },
        text_config=llama(tok),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    return _seeded(SmolVLMForConditionalGeneration, config), processor


# Mistral-Small-3.1's (Pixtral): `[INST]...[/INST]answer</s>`, images as `[IMG]` before the text.
MISTRAL3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST]"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}[IMG]"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}[/INST]"
    "{% elif message['role'] == 'assistant' %}{{ message['content'][0]['text'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def mistral3() -> tuple[Any, Any]:
    """Mistral3 (Pixtral tower): images at their own aspect ratio, `[IMG_BREAK]` after every row of patches."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor

    tok = tokenizer("llama2", ("[IMG]", "[IMG_BREAK]", "[IMG_END]", "[INST]", "[/INST]"))
    image_processor = PixtralImageProcessor(size={"longest_edge": 2 * IMAGE}, patch_size=PATCH)
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        spatial_merge_size=2,
        chat_template=MISTRAL3_TEMPLATE,
    )
    config = Mistral3Config(
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "head_dim": 16,
            "image_size": 2 * IMAGE,
            "patch_size": PATCH,
        },
        text_config={**llama(tok), "model_type": "mistral", "head_dim": 16},
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
    )
    return _seeded(Mistral3ForConditionalGeneration, config), processor


def cohere2_vision() -> tuple[Any, Any]:
    """Cohere2-Vision (Command A Vision): tiles plus a thumbnail, `<|IMG_LINE_BREAK|>` after each tile."""
    from transformers import (
        Cohere2VisionConfig,
        Cohere2VisionForConditionalGeneration,
        Cohere2VisionImageProcessor,
        Cohere2VisionProcessor,
    )

    named = {
        "image_token": "<|IMG_PATCH|>",
        "boi_token": "<|START_OF_IMG|>",
        "eoi_token": "<|END_OF_IMG|>",
        "img_line_break_token": "<|IMG_LINE_BREAK|>",
    }
    turns = ("<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>")
    tok = tokenizer("llama3", (*named.values(), *turns), named)
    image_processor = Cohere2VisionImageProcessor(
        size={"height": IMAGE, "width": IMAGE}, patch_size=2, min_patches=1, max_patches=4
    )
    processor = Cohere2VisionProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=COHERE_TEMPLATE.replace("<image>", "<|IMG_PATCH|>"),
    )
    text = {**llama(tok), "model_type": "cohere2", "layer_types": ["sliding_attention", "full_attention"]}
    config = Cohere2VisionConfig(
        vision_config=siglip(),
        text_config={**text, "sliding_window": 64, "head_dim": 16},
        downsample_factor=2,
        alignment_intermediate_size=64,
        image_token_id=tok.convert_tokens_to_ids("<|IMG_PATCH|>"),
    )
    return _seeded(Cohere2VisionForConditionalGeneration, config), processor


LLAMA4_SPECIALS = (
    "<|header_start|>",
    "<|header_end|>",
    "<|eot|>",
    "<|image|>",
    "<|image_start|>",
    "<|image_end|>",
    "<|patch|>",
    "<|tile_x_separator|>",
    "<|tile_y_separator|>",
)


def llama4() -> tuple[Any, Any]:
    """Llama-4: tiles plus a global view, pixel-shuffled patches; the processor's own (published) chat template."""
    import torch
    from transformers import Llama4Config, Llama4ForConditionalGeneration, Llama4ImageProcessor, Llama4Processor

    tok = tokenizer("llama3", LLAMA4_SPECIALS, {"image_token": "<|image|>"})
    image_processor = Llama4ImageProcessor(size={"height": IMAGE, "width": IMAGE}, max_patches=4)
    processor = Llama4Processor(image_processor=image_processor, tokenizer=tok, patch_size=PATCH)
    config = Llama4Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 128,  # the pixel shuffle's output: hidden_size / pixel_shuffle_ratio**2
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
            "vision_output_dim": 64,
            "projector_input_dim": 64,
            "projector_output_dim": 64,
            "pixel_shuffle_ratio": 0.5,
        },
        text_config={
            **llama(tok),
            "model_type": "llama4_text",
            "intermediate_size_mlp": 128,
            "head_dim": 16,
            "num_local_experts": 1,
            "interleave_moe_layer_step": 1,
            "no_rope_layers": [1, 1],
            "attention_chunk_size": 64,
        },
        image_token_index=tok.convert_tokens_to_ids("<|patch|>"),
    )
    # bfloat16 like the published weights: the image processor rescales and normalises in bfloat16 (as Meta's
    # code did) and the vision tower does not cast, so a float32 model fails on the processor's own pixels
    return _seeded(Llama4ForConditionalGeneration, config).to(torch.bfloat16), processor


def lfm2_vl() -> tuple[Any, Any]:
    """LFM2-VL: SigLIP2 at native resolution (tiles plus a thumbnail for large images), an LFM2 conv/attention LM."""
    from transformers import Lfm2VlConfig, Lfm2VlForConditionalGeneration, Lfm2VlImageProcessor, Lfm2VlProcessor

    specials = ("<image>", "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>")
    tok = tokenizer("qwen3", specials, {"image_token": "<image>"})
    image_processor = Lfm2VlImageProcessor(
        encoder_patch_size=PATCH,
        tile_size=IMAGE,
        min_image_tokens=4,
        max_image_tokens=16,
        min_tiles=2,
        max_tiles=4,
        size={"height": IMAGE, "width": IMAGE},
    )
    processor = Lfm2VlProcessor(
        image_processor=image_processor, tokenizer=tok, chat_template=CHATML.replace("IMAGE_TEXT", "<image>")
    )
    text = {
        **llama(tok),
        "model_type": "lfm2",
        "layer_types": ["conv", "full_attention"],
        "block_ff_dim": 128,
        "block_auto_adjust_ff_dim": False,
    }
    config = Lfm2VlConfig(
        vision_config={
            "model_type": "siglip2_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": PATCH,
            "num_patches": 64,
        },
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        projector_hidden_size=64,
        downsample_factor=2,
    )
    return _seeded(Lfm2VlForConditionalGeneration, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "smolvlm": smolvlm,
    "mistral3": mistral3,
    "cohere2_vision": cohere2_vision,
    "llama4": llama4,
    "lfm2_vl": lfm2_vl,
}
FAMILIES = list(BUILDERS)


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
