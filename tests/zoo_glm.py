"""Tiny random-weight models of the GLM-style image-text-to-text families (GLM-4.6V, GLM-4.5V, GLM-OCR, ...) and
their neighbours (HunYuan-VL, ERNIE-4.5-VL, PaddleOCR-VL, VideoLLaMA3), built like tests/zoo.py: real npm tokenizers,
PIL image processors, chat templates written like the published ones, a few layers.

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families, `LEFT` the ones that are not in the zoo
and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo import CHATML, GLM_TEMPLATE, IMAGE, PATCH, _seeded, llama, qwen2, tokenizer

GLM_IMAGE = (
    "<|begin_of_image|>",
    "<|image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|video|>",
    "<|end_of_video|>",
)
GLM_ROLES = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>", "<think>", "</think>")
# GLM-4.5V / GLM-4.6V's: GLM-4V's turns, an empty `<think></think>` opening every (non-thinking) answer.
GLM45_TEMPLATE = GLM_TEMPLATE.replace(
    "<|{{ message['role'] }}|>\n",
    "<|{{ message['role'] }}|>\n{% if message['role'] == 'assistant' %}<think></think>\n{% endif %}",
)


GLM4V_TYPES = ("glm4v_text", "glm4v_vision")


def _glm(
    model_class: Any,
    config_class: Any,
    processor_class: Any,
    image_processor_class: Any,
    text_type: str | None = None,
    vision_type: str | None = None,
    template: str = GLM45_TEMPLATE,
    text: dict[str, Any] | None = None,
    vision: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """The GLM-4V layout: `<|begin_of_image|><|image|>...<|end_of_image|>`, M-RoPE, a Qwen-style patch merger; the
    Llama-2 tokenizer with GLM's special tokens (a 32k vocabulary: CI time; tests/zoo.py's GLM-4V has Qwen-3's)."""
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    tok = tokenizer("llama2", GLM_IMAGE + GLM_ROLES, {"image_token": "<|image|>", "video_token": "<|video|>"})
    tok.eos_token = "<|endoftext|>"
    image_processor = image_processor_class(
        patch_size=PATCH, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor = processor_class(
        image_processor=image_processor, tokenizer=tok, video_processor=VideoProcessorMixin(), chat_template=template
    )
    ids = tok.convert_tokens_to_ids
    config = config_class(
        text_config={
            **llama(tok),
            "model_type": text_type,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            **(text or {}),
        },
        vision_config={
            "model_type": vision_type,
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
            "out_hidden_size": 64,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            **(vision or {}),
        },
        image_token_id=ids("<|image|>"),
        video_token_id=ids("<|video|>"),
        image_start_token_id=ids("<|begin_of_image|>"),
        image_end_token_id=ids("<|end_of_image|>"),
        video_start_token_id=ids("<|begin_of_video|>"),
        video_end_token_id=ids("<|end_of_video|>"),
    )
    return _seeded(model_class, config), processor


def glm46v() -> tuple[Any, Any]:
    """GLM-4.6V: GLM-4V's vision tower and text model under its own config and processor."""
    from transformers import Glm46VConfig, Glm46VForConditionalGeneration, Glm46VImageProcessorPil, Glm46VProcessor

    return _glm(Glm46VForConditionalGeneration, Glm46VConfig, Glm46VProcessor, Glm46VImageProcessorPil, *GLM4V_TYPES)


def glm4v_moe() -> tuple[Any, Any]:
    """GLM-4.5V: GLM-4V's vision tower, a mixture-of-experts text model (one dense layer, one routed)."""
    from transformers import Glm4vImageProcessorPil, Glm4vMoeConfig, Glm4vMoeForConditionalGeneration, Glm4vProcessor

    moe = {
        "moe_intermediate_size": 32,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "first_k_dense_replace": 1,
        "output_router_logits": True,  # the load-balancing loss is part of the objective: VDTrainer must add it too
        "router_aux_loss_coef": 0.5,  # large enough that dropping it would show in the loss
        "rope_parameters": {  # half the head rotates: M-RoPE sections of 16 / 2 / 2 dims
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [1, 1, 2],
            "partial_rotary_factor": 0.5,
        },
    }
    return _glm(Glm4vMoeForConditionalGeneration, Glm4vMoeConfig, Glm4vProcessor, Glm4vImageProcessorPil, text=moe)


def glmga() -> tuple[Any, Any]:
    """GLM-GA: GLM-4.6V's model and processor under its own config and image processor."""
    from transformers import Glm46VForConditionalGeneration, Glm46VProcessor, GlmgaConfig, GlmgaImageProcessorPil

    return _glm(Glm46VForConditionalGeneration, GlmgaConfig, Glm46VProcessor, GlmgaImageProcessorPil, *GLM4V_TYPES)


def glm5_next() -> tuple[Any, Any]:
    """GLM-5-Next: GLM-4V's layout over a hybrid text model (linear-attention KDA layers beside MLA layers with a
    sparse-attention indexer, mixture of experts, hyper-connections)."""
    from transformers import (
        Glm5NextConfig,
        Glm5NextForConditionalGeneration,
        Glm5NextImageProcessorPil,
        Glm5NextProcessor,
    )

    text = {
        "layer_types": ["linear_attention", "indexed_attention"],
        "mlp_layer_types": ["dense", "sparse"],
        "num_key_value_heads": 4,
        "moe_intermediate_size": 32,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "q_lora_rank": 32,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 0,  # no position encoding in the text model (NoPE)
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "v_head_dim": 16,
        "index_head_dim": 16,
        "index_n_heads": 2,
        "linear_head_dim": 16,
        "linear_num_heads": 4,
        "hc_mult": 2,
        "hc_sinkhorn_iters": 4,
    }
    vision = {"projection_intermediate_size": 64}
    return _glm(
        Glm5NextForConditionalGeneration,
        Glm5NextConfig,
        Glm5NextProcessor,
        Glm5NextImageProcessorPil,
        text=text,
        vision=vision,
    )


def glm_ocr() -> tuple[Any, Any]:
    """GLM-OCR: GLM-4V's layout with its own vision tower and text model; the published one ships GLM-4.6V's
    processor."""
    from transformers import Glm46VImageProcessorPil, Glm46VProcessor, GlmOcrConfig, GlmOcrForConditionalGeneration

    return _glm(GlmOcrForConditionalGeneration, GlmOcrConfig, Glm46VProcessor, Glm46VImageProcessorPil)


# HunyuanOCR's: `<｜hy_User｜>` / `<｜hy_Assistant｜>` turns, the image wrapped in its start/end tokens, the
# end-of-text placeholder token closing every answer.
HY_TURNS = ("<｜hy_User｜>", "<｜hy_Assistant｜>")
HY_EOS = "<｜hy_place▁holder▁no▁2｜>"
HY_IMAGE = ("<｜hy_place▁holder▁no▁100｜>", "<｜hy_place▁holder▁no▁102｜>", "<｜hy_place▁holder▁no▁101｜>")
HUNYUAN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<｜hy_User｜>' if message['role'] == 'user' else '<｜hy_Assistant｜>' }}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}" + "".join(HY_IMAGE) + ""
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}" + HY_EOS + "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜hy_Assistant｜>{% endif %}"
)


def hunyuan_vl() -> tuple[Any, Any]:
    """HunyuanOCR: a native-resolution tower, a line-break token per row of patches, four XD-RoPE position axes."""
    from transformers import HunYuanVLConfig, HunYuanVLForConditionalGeneration, HunYuanVLProcessor
    from transformers.models.hunyuan_vl.image_processing_pil_hunyuan_vl import HunYuanVLImageProcessorPil

    start, image, end = HY_IMAGE
    named = {"image_token": image, "image_start_token": start, "image_end_token": end}
    tok = tokenizer("qwen3", (*HY_IMAGE, *HY_TURNS, HY_EOS), named)
    tok.eos_token = HY_EOS
    tok.bos_token = "<|endoftext|>"
    tok.pad_token = "<|endoftext|>"
    image_processor = HunYuanVLImageProcessorPil(
        patch_size=PATCH, merge_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor = HunYuanVLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=HUNYUAN_TEMPLATE)
    config = HunYuanVLConfig(
        text_config={
            **llama(tok),
            "model_type": "hunyuan_vl_text",
            "head_dim": 16,
            "eod_token_id": tok.eos_token_id,
            "sep_token_id": tok.eos_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2, 2]},
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": 2,
            "out_hidden_size": 64,
            "max_image_size": 128,
            "min_image_size": 16,
        },
        image_token_id=tok.image_token_id,
        im_start_id=tok.image_start_token_id,
        im_end_id=tok.image_end_token_id,
    )
    return _seeded(HunYuanVLForConditionalGeneration, config), processor


def hy_v4_vl() -> tuple[Any, Any]:
    """Hy4-VL: HunyuanOCR's tower and turns over a mixture-of-experts text model with multi-head latent attention,
    a sparse-attention indexer and hyper-connections; Qwen-style `<|image_pad|>` placeholders, M-RoPE."""
    from transformers import HYV4VLConfig, HYV4VLForConditionalGeneration, HYV4VLProcessor
    from transformers.models.hy_v4_vl.image_processing_pil_hy_v4_vl import HYV4VLImageProcessorPil
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    start, _, end = HY_IMAGE
    named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    tok = tokenizer("qwen3", ("<|image_pad|>", "<|video_pad|>", start, end, *HY_TURNS, HY_EOS), named)
    tok.eos_token = HY_EOS
    tok.bos_token = tok.pad_token = "<|endoftext|>"
    image_processor = HYV4VLImageProcessorPil(
        patch_size=PATCH, merge_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    template = HUNYUAN_TEMPLATE.replace("".join(HY_IMAGE), start + "<|image_pad|>" + end)
    processor = HYV4VLProcessor(
        image_processor=image_processor, tokenizer=tok, video_processor=VideoProcessorMixin(), chat_template=template
    )
    config = HYV4VLConfig(
        text_config={
            **llama(tok),
            "model_type": "hy_v4_vl_text",
            "moe_intermediate_size": 32,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "q_lora_rank": 32,
            "kv_lora_rank": 16,
            "qk_nope_head_dim": 16,
            "qk_rope_head_dim": 16,
            "v_head_dim": 16,
            "index_head_dim": 16,
            "index_n_heads": 2,
            "hc_mult": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": 2,
            "out_hidden_size": 64,
            "max_image_size": 128,
        },
        image_token_id=tok.image_token_id,
        video_token_id=tok.video_token_id,
    )
    return _seeded(HYV4VLForConditionalGeneration, config), processor


# ERNIE-4.5-VL's: `User: ` / `Assistant: ` lines, `Picture n:` before each image, `<|end_of_sentence|>` closing every
# answer.
ERNIE_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(pictures=0) %}{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{% set ns.pictures = ns.pictures + 1 %}"
    "Picture {{ ns.pictures }}:<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{{ '\\n' }}"
    "{% else %}Assistant: {{ message['content'][0]['text'] }}<|end_of_sentence|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)
ERNIE_NAMED = {
    "image_token": "<|IMAGE_PLACEHOLDER|>",
    "image_start_token": "<|IMAGE_START|>",
    "image_end_token": "<|IMAGE_END|>",
    "video_token": "<|VIDEO_PLACEHOLDER|>",
    "video_start_token": "<|VIDEO_START|>",
    "video_end_token": "<|VIDEO_END|>",
}


def ernie4_5_vl_moe() -> tuple[Any, Any]:
    """ERNIE-4.5-VL: a mixture of experts with separate text and vision experts (routed by `moe_mm_token_type_ids`),
    a Qwen-style tower, 3-D RoPE."""
    from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration, Ernie4_5_VLMoeProcessor
    from transformers.models.ernie4_5_vl_moe.image_processing_pil_ernie4_5_vl_moe import (
        Ernie4_5_VLMoeImageProcessorPil,
    )
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    tok = tokenizer("llama2", (*ERNIE_NAMED.values(), "<|end_of_sentence|>"), ERNIE_NAMED)
    tok.eos_token = "<|end_of_sentence|>"
    image_processor = Ernie4_5_VLMoeImageProcessorPil(
        patch_size=PATCH, merge_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    # the real video processor needs torchvision; the stand-in carries the one attribute the processor's
    # `save_pretrained` reads of it (the timestamp font, copied into the checkpoint only when it is a file)
    video_processor = VideoProcessorMixin()
    video_processor.font = ""
    processor = Ernie4_5_VLMoeProcessor(
        image_processor=image_processor, tokenizer=tok, video_processor=video_processor, chat_template=ERNIE_TEMPLATE
    )
    ids = tok.convert_tokens_to_ids
    config = Ernie4_5_VLMoeConfig(
        text_config={
            **llama(tok),
            "model_type": "ernie4_5_vl_moe_text",
            "moe_intermediate_size": [32, 16],
            "moe_k": 2,
            "moe_num_experts": 4,
            "moe_num_shared_experts": 1,
            "output_router_logits": True,  # the load-balancing loss is part of the objective: VDTrainer adds it too
            "router_aux_loss_coef": 0.5,  # large enough that dropping it would show in the loss
            "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [3, 3, 2]},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": 2,
        },
        image_token_id=ids("<|IMAGE_PLACEHOLDER|>"),
        image_start_token_id=ids("<|IMAGE_START|>"),
        image_end_token_id=ids("<|IMAGE_END|>"),
        video_token_id=ids("<|VIDEO_PLACEHOLDER|>"),
        video_start_token_id=ids("<|VIDEO_START|>"),
        video_end_token_id=ids("<|VIDEO_END|>"),
    )
    return _seeded(Ernie4_5_VLMoeForConditionalGeneration, config), processor


# PaddleOCR-VL's: ERNIE-4.5's `User: ` / `Assistant: ` lines with the image bare (no `Picture n:`).
PADDLE_TEMPLATE = ERNIE_TEMPLATE.replace("Picture {{ ns.pictures }}:", "")


def paddleocr_vl() -> tuple[Any, Any]:
    """PaddleOCR-VL: a native-resolution SigLIP-style tower (interpolated position embeddings) before an ERNIE-4.5
    dense text model with M-RoPE."""
    from transformers import PaddleOCRVLConfig, PaddleOCRVLForConditionalGeneration, PaddleOCRVLProcessor
    from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import PaddleOCRVLImageProcessorPil

    named = {key: ERNIE_NAMED[key] for key in ("image_token", "image_start_token", "image_end_token")}
    tok = tokenizer("llama2", (*named.values(), "<|end_of_sentence|>"), named)
    tok.eos_token = "<|end_of_sentence|>"
    image_processor = PaddleOCRVLImageProcessorPil(
        patch_size=PATCH, merge_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor = PaddleOCRVLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=PADDLE_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    config = PaddleOCRVLConfig(
        text_config={
            **llama(tok),
            "model_type": "paddleocr_vl_text",
            "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
            "spatial_merge_size": 2,
        },
        image_token_id=ids(named["image_token"]),
        vision_start_token_id=ids(named["image_start_token"]),
        vision_end_token_id=ids(named["image_end_token"]),
    )
    return _seeded(PaddleOCRVLForConditionalGeneration, config), processor


def video_llama_3() -> tuple[Any, Any]:
    """VideoLLaMA3: a native-resolution SigLIP-style tower, images pooled by a per-image merge size, Qwen2 ChatML."""
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration, VideoLlama3Processor
    from transformers.models.video_llama_3.image_processing_pil_video_llama_3 import VideoLlama3ImageProcessorPil
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    tok = tokenizer("qwen3", tuple(named.values()), named)
    image_processor = VideoLlama3ImageProcessorPil(
        patch_size=PATCH, merge_size=1, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor = VideoLlama3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=VideoProcessorMixin(),
        chat_template=CHATML.replace("IMAGE_TEXT", "<|image_pad|>\n"),
    )
    config = VideoLlama3Config(
        text_config=qwen2(tok),
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": PATCH,
        },
        image_token_id=tok.image_token_id,
        video_token_id=tok.video_token_id,
    )
    return _seeded(VideoLlama3ForConditionalGeneration, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "glm46v": glm46v,
    "glm4v_moe": glm4v_moe,
    "glmga": glmga,
    "glm_ocr": glm_ocr,
    "glm5_next": glm5_next,
    "hunyuan_vl": hunyuan_vl,
    "hy_v4_vl": hy_v4_vl,
    "ernie4_5_vl_moe": ernie4_5_vl_moe,
    "paddleocr_vl": paddleocr_vl,
    "video_llama_3": video_llama_3,
}
FAMILIES = list(BUILDERS)
LEFT: dict[str, str] = {
    # the image-text-to-text mapping lists it, but the class is the text decoder of Mistral-Small-4 (whose checkpoints
    # load as `mistral3` with a `mistral4` text config): its forward takes no pixels
    "mistral4": "not a vision-language model: Mistral4ForCausalLM is text-only (forward has no image input) and has "
    "no processor; the VD loss does not apply",
}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
