"""Tiny random-weight models of the Qwen-derived image-text-to-text families (Qwen3.5, Qwen3-VL-MoE, the omni
thinkers and the families built on Qwen2-VL's image processor and M-RoPE), built like tests/zoo.py: real npm
tokenizers, PIL image processors, chat templates written like the published ones, a few layers.

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families; `LEFT` says why each family of this
group that is not in the zoo is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo import CHATML, PATCH, QWEN_NAMED, QWEN_SPECIALS, _seeded, qwen2, tokenizer

QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# Qwen3-VL / Qwen3.5's ChatML: no default system prompt, the image as `<|vision_start|><|image_pad|><|vision_end|>`.
QWEN3_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}" + QWEN_IMAGE + ""
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}


def qwen_image_processor() -> Any:
    """Qwen2-VL's PIL image processor at zoo scale: 8-px patches merged 2x2, 16-256 patches per image."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=PATCH, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )


def qwen_tokenizer(specials: tuple[str, ...] = (), named: dict[str, str] | None = None) -> Any:
    """The real Qwen3 tokenizer with Qwen's vision tokens (and `specials`) added."""
    return tokenizer("qwen3", QWEN_SPECIALS + specials, {**QWEN_NAMED, **(named or {})})


def vision_ids(tok: Any) -> dict[str, int]:
    """The config's ids of Qwen's image, video and vision start/end tokens."""
    ids = tok.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def qwen3_vision(**extra: Any) -> dict[str, Any]:
    """A two-block Qwen3-VL-style vision tower over 8-px patches."""
    return {
        "depth": 2,
        "num_heads": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "patch_size": PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,
        **extra,
    }


def _qwen3_processor(processor_class: Any, tok: Any, template: str = QWEN3_CHATML, **extra: Any) -> Any:
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    return processor_class(
        image_processor=qwen_image_processor(),
        tokenizer=tok,
        video_processor=VideoProcessorMixin(),
        chat_template=template,
        **extra,
    )


def qwen3_vl_moe() -> tuple[Any, Any]:
    """Qwen3-VL-MoE: Qwen3-VL's tower and deepstack with a sparse-MoE text model."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration, Qwen3VLProcessor

    tok = qwen_tokenizer()
    text = {
        **qwen2(tok),
        "model_type": None,
        "head_dim": 16,
        "rope_parameters": MROPE,
        "moe_intermediate_size": 32,
        "num_experts": 4,
        "num_experts_per_tok": 2,
    }
    config = Qwen3VLMoeConfig(
        text_config=text, vision_config=qwen3_vision(deepstack_visual_indexes=[1]), **vision_ids(tok)
    )
    return _seeded(Qwen3VLMoeForConditionalGeneration, config), _qwen3_processor(Qwen3VLProcessor, tok)


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "qwen3_vl_moe": qwen3_vl_moe,
}
FAMILIES = list(BUILDERS)
LEFT: dict[str, str] = {}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
