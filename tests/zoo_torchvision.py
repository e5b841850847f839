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


def gemma4() -> tuple[Any, Any]:
    """Gemma-4: a variable number of pooled soft tokens per image (aspect ratio kept), per-layer input embeddings;
    the processor has video and audio slots. Gemma-3's tokenizer and its own chat template."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4ImageProcessorPil, Gemma4Processor
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
    from transformers.models.gemma4.video_processing_gemma4 import Gemma4VideoProcessor

    named = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    # the processor refuses any call while the audio tokens are undefined (`a and b or c` in its input check)
    audio = {"audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
    tok = tokenizer("gemma3", tuple(audio.values()), {**named, **audio})
    image_processor = Gemma4ImageProcessorPil(patch_size=PATCH, pooling_kernel_size=2, max_soft_tokens=70)
    processor = Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=Gemma4VideoProcessor(),
        # Gemma-4's template writes the image token itself (the processor expands it), Gemma-3's wrote `boi`
        chat_template=tok.chat_template.replace("<start_of_image>", "<image_soft_token>"),
        image_seq_length=70,  # the smallest budget the image processor takes
    )
    ids = tok.convert_tokens_to_ids
    text = {
        **llama(tok),
        "model_type": None,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "global_head_dim": 16,
        "sliding_window": 64,
        "layer_types": ["sliding_attention", "full_attention"],
        "vocab_size_per_layer_input": len(tok),
        "hidden_size_per_layer_input": 8,
    }
    config = Gemma4Config(
        text_config=text,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "patch_size": PATCH,
            "pooling_kernel_size": 2,
            "position_embedding_size": 64,
        },
        audio_config=None,
        boi_token_id=ids("<start_of_image>"),
        eoi_token_id=ids("<end_of_image>"),
        image_token_id=ids("<image_soft_token>"),
        video_token_id=ids("<|video|>"),
        audio_token_id=ids("<audio_soft_token>"),
        boa_token_id=ids("<start_of_audio>"),
        eoa_token_index=ids("<end_of_audio>"),
    )
    return _seeded(Gemma4ForConditionalGeneration, config), processor


# Kimi-K2.5's: `<|im_user|>user<|im_middle|>...<|im_end|>`, the image as `<|media_begin|>image<|media_content|>...`.
KIMI_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|im_user|>user<|im_middle|>"
    "{% else %}<|im_assistant|>assistant<|im_middle|>{% endif %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|media_begin|>image<|media_content|><|media_pad|><|media_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_assistant|>assistant<|im_middle|>{% endif %}"
)


def kimi_k25() -> tuple[Any, Any]:
    """Kimi-K2.5: a MoonViT tower at native resolution (2x2 merged patches), a DeepSeek-V3 (MLA + MoE) text model."""
    from transformers import Kimi_K25Config, Kimi_K25ForConditionalGeneration, Kimi_K25Processor
    from transformers.models.kimi_k25.image_processing_kimi_k25 import Kimi_K25ImageProcessor
    from transformers.models.kimi_k25.video_processing_kimi_k25 import Kimi_K25VideoProcessor

    media = (
        "<|media_begin|>",
        "<|media_content|>",
        "<|media_pad|>",
        "<|media_end|>",
        "<|kimi_k25_video_placeholder|>",
    )
    named = {"image_token": "<|media_pad|>", "video_token": "<|kimi_k25_video_placeholder|>"}
    tok = tokenizer("qwen3", ("<|im_user|>", "<|im_assistant|>", "<|im_middle|>", *media), named)
    image_processor = Kimi_K25ImageProcessor(patch_size=PATCH, merge_size=2, size={"max_height": 64, "max_width": 64})
    processor = Kimi_K25Processor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=Kimi_K25VideoProcessor(),
        chat_template=KIMI_TEMPLATE,
    )
    ids = tok.convert_tokens_to_ids
    text = {
        **llama(tok),
        "model_type": "deepseek_v3",
        "moe_intermediate_size": 32,
        "n_shared_experts": 1,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "first_k_dense_replace": 1,
        "q_lora_rank": 16,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "num_key_value_heads": 4,
    }
    config = Kimi_K25Config(
        text_config=text,
        vision_config={
            "patch_size": PATCH,
            "pos_emb_height": 16,
            "pos_emb_width": 16,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "merge_kernel_size": [2, 2],
        },
        projection_hidden_size=32,
        image_token_id=ids("<|media_pad|>"),
        video_token_id=ids("<|kimi_k25_video_placeholder|>"),
        vision_start_token_id=ids("<|media_begin|>"),
        vision_end_token_id=ids("<|media_end|>"),
    )
    return _seeded(Kimi_K25ForConditionalGeneration, config), processor


MOLMO2_TOKENS = (
    "<|image|>",
    "<|video|>",
    "<im_patch>",
    "<im_col>",
    "<im_start>",
    "<low_res_im_start>",
    "<frame_start>",
    "<im_end>",
    "<frame_end>",
    "<im_low>",
)


def molmo2() -> tuple[Any, Any]:
    """Molmo2: overlapping crops plus a low-resolution view, attention pooling of 2x2 patches, `<im_col>` per row."""
    import torch
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration, Molmo2Processor
    from transformers.models.molmo2.image_processing_molmo2 import Molmo2ImageProcessor
    from transformers.models.molmo2.video_processing_molmo2 import Molmo2VideoProcessor

    tok = tokenizer("qwen3", MOLMO2_TOKENS, {"image_token": "<|image|>", "video_token": "<|video|>"})
    image_processor = Molmo2ImageProcessor(
        size={"height": IMAGE, "width": IMAGE}, patch_size=PATCH, max_crops=2, overlap_margins=[1, 1]
    )
    processor = Molmo2Processor(
        image_processor=image_processor,
        video_processor=Molmo2VideoProcessor(),
        tokenizer=tok,
        chat_template=CHATML.replace("IMAGE_TEXT", "<|image|>"),
    )
    ids = tok.convert_tokens_to_ids
    config = Molmo2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "image_size": [IMAGE, IMAGE],
            "patch_size": PATCH,
        },
        adapter_config={
            "vision_feature_layer": [-1],
            "hidden_size": 32,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 64,
            "text_hidden_size": 64,
        },
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "vocab_size": len(tok),
            "max_position_embeddings": 1024,
        },
        image_start_token_id=ids("<im_start>"),
        low_res_image_start_token_id=ids("<low_res_im_start>"),
        image_end_token_id=ids("<im_end>"),
        image_patch_id=ids("<im_patch>"),
        frame_start_token_id=ids("<frame_start>"),
        frame_end_token_id=ids("<frame_end>"),
    )
    model = _seeded(Molmo2ForConditionalGeneration, config)
    with torch.no_grad():  # at std 0.02 the pooling + SwiGLU projector shrinks image features ~1e4-fold: no image
        for parameter in model.model.multi_modal_projector.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.3)
    return model, processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "smolvlm": smolvlm,
    "mistral3": mistral3,
    "cohere2_vision": cohere2_vision,
    "llama4": llama4,
    "lfm2_vl": lfm2_vl,
    "gemma4": gemma4,
    "kimi_k25": kimi_k25,
    "molmo2": molmo2,
}
FAMILIES = list(BUILDERS)
LEFT: dict[str, str] = {}  # model_type -> why it is not in this module's zoo (see tests/test_zoo_coverage.py)


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
