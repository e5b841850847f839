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
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    + QWEN_IMAGE
    + "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}


def qwen_image_processor(temporal_patch_size: int = 2) -> Any:
    """Qwen2-VL's PIL image processor at zoo scale: 8-px patches merged 2x2, 16-256 patches per image."""
    from transformers import Qwen2VLImageProcessorPil

    size = {"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    return Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=2, temporal_patch_size=temporal_patch_size, size=size)


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


def _qwen3_processor(
    processor_class: Any, tok: Any, template: str = QWEN3_CHATML, image_processor: Any = None, **extra: Any
) -> Any:
    """A Qwen-style processor: `image_processor` (Qwen2-VL's by default), no video processor (torchvision)."""
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    return processor_class(
        image_processor=image_processor or qwen_image_processor(),
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


LINEAR = {  # one Gated-DeltaNet layer and one attention layer, small linear heads
    "head_dim": 16,
    "rope_parameters": {**MROPE, "partial_rotary_factor": 0.25},
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
}
MOE = {"moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2}


def _qwen3_5(model_class: Any, config_class: Any, layer: str = "full_attention", **text: Any) -> tuple[Any, Any]:
    """Qwen3.5-style models: Qwen3-VL's tower (no deepstack), a hybrid Gated-DeltaNet / attention text model."""
    from transformers import Qwen3VLProcessor

    tok = qwen_tokenizer()
    text = {**qwen2(tok), "model_type": None, **LINEAR, "layer_types": ["linear_attention", layer], **text}
    config = config_class(text_config=text, vision_config=qwen3_vision(), **vision_ids(tok))
    return _seeded(model_class, config), _qwen3_processor(Qwen3VLProcessor, tok)


def qwen3_5() -> tuple[Any, Any]:
    """Qwen3.5: dense hybrid Gated-DeltaNet / gated-attention text model."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    return _qwen3_5(Qwen3_5ForConditionalGeneration, Qwen3_5Config)


def qwen3_5_moe() -> tuple[Any, Any]:
    """Qwen3.5-MoE: Qwen3.5 with sparse-MoE blocks and a shared expert."""
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    return _qwen3_5(Qwen3_5MoeForConditionalGeneration, Qwen3_5MoeConfig, **MOE)


QSA = {
    "indexer_n_heads": 2,
    "indexer_kv_heads": 1,
    "indexer_head_dim": 16,
    "indexer_budget": 8,
    "indexer_compress_ratio": 4,
}


def qwen4_exp() -> tuple[Any, Any]:
    """Qwen4-Exp: Qwen3.5-MoE with hyper-connections and a QSA-indexed attention layer (no per-layer n-gram
    embeddings: off by default)."""
    from transformers import Qwen4ExpConfig, Qwen4ExpForConditionalGeneration

    return _qwen3_5(
        Qwen4ExpForConditionalGeneration, Qwen4ExpConfig, "indexed_attention", **MOE, **QSA, hc_count=2, hc_lowrank=8
    )


def cosmos3_omni() -> tuple[Any, Any]:
    """Cosmos3-Omni (Nano): Qwen3-VL's architecture and processor under NVIDIA's model type."""
    from transformers import Cosmos3OmniConfig, Cosmos3OmniForConditionalGeneration, Qwen3VLProcessor

    tok = qwen_tokenizer()
    text = {**qwen2(tok), "model_type": "qwen3_vl_text", "head_dim": 16, "rope_parameters": MROPE}
    config = Cosmos3OmniConfig(
        text_config=text, vision_config=qwen3_vision(deepstack_visual_indexes=[1]), **vision_ids(tok)
    )
    return _seeded(Cosmos3OmniForConditionalGeneration, config), _qwen3_processor(Qwen3VLProcessor, tok)


def cosmos3_edge() -> tuple[Any, Any]:
    """Cosmos3-Edge: a SigLIP2-style NaViT tower (learned positions resized per image, single frames) before a
    Nemotron-like text model (ReLU^2 MLP, M-RoPE), with its own PIL image processor; ChatML."""
    from transformers import Cosmos3EdgeConfig, Cosmos3EdgeForConditionalGeneration, Cosmos3EdgeProcessor
    from transformers.models.cosmos3_edge.image_processing_pil_cosmos3_edge import Cosmos3EdgeImageProcessorPil

    tok = qwen_tokenizer()
    text = {
        **qwen2(tok),
        "head_dim": 16,
        "hidden_act": "relu2",
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    }
    text.pop("model_type")
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": PATCH,
        "num_patches": 16,
        "spatial_merge_size": 2,
    }
    config = Cosmos3EdgeConfig(text_config=text, vision_config=vision, projector_hidden_size=64, **vision_ids(tok))
    image_processor = Cosmos3EdgeImageProcessorPil(
        patch_size=PATCH, merge_size=2, temporal_patch_size=1, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    template = CHATML.replace("IMAGE_TEXT", QWEN_IMAGE)
    processor = _qwen3_processor(Cosmos3EdgeProcessor, tok, template, image_processor)
    # its model needs `mm_token_type_ids` for M-RoPE, which this processor class does not return by default (Qwen3-VL's
    # does): a processor attribute, the lowest-priority default of every call
    processor.return_mm_token_type_ids = True
    return _seeded(Cosmos3EdgeForConditionalGeneration, config), processor


# EXAONE 4's: `[|role|]\n` headers, `[|endofturn|]` closing every turn; the image as `<vision><|image_pad|></vision>`.
EXAONE_TEMPLATE = (
    "{% for message in messages %}[|{{ message['role'] }}|]\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<vision><|image_pad|></vision>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}[|endofturn|]\n{% endfor %}"
    "{% if add_generation_prompt %}[|assistant|]\n{% endif %}"
)
EXAONE_SPECIALS = ("[|system|]", "[|user|]", "[|assistant|]", "[|endofturn|]", "<vision>", "</vision>")


def exaone4_5() -> tuple[Any, Any]:
    """EXAONE 4.5: a Qwen2.5-VL-style windowed vision tower (axial RoPE, GQA) before an EXAONE 4 text model."""
    from transformers import Exaone4_5_Config, Exaone4_5_ForConditionalGeneration, Exaone4_5_Processor

    tok = qwen_tokenizer(EXAONE_SPECIALS)
    tok.eos_token = "[|endofturn|]"
    text = {
        **qwen2(tok),
        "model_type": "exaone4",
        "sliding_window": 64,
        "layer_types": ["sliding_attention", "full_attention"],
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "num_key_value_heads": 1,
        "out_hidden_size": 64,
        "patch_size": PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 32,
        "fullatt_block_indexes": [1],
    }
    ids = tok.convert_tokens_to_ids
    config = Exaone4_5_Config(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
    )
    processor = _qwen3_processor(Exaone4_5_Processor, tok, EXAONE_TEMPLATE)
    return _seeded(Exaone4_5_ForConditionalGeneration, config), processor


def llava_onevision1_5() -> tuple[Any, Any]:
    """LLaVA-OneVision-1.5: a RICE-ViT tower (class token, 2-D RoPE) before a Qwen3 text model; transformers maps it
    to EXAONE 4.5's processor (Qwen2-VL's image processor, `<|image_pad|>` per merged patch)."""
    from transformers import (
        Exaone4_5_Processor,
        LlavaOnevision15Config,
        LlavaOnevision15ForConditionalGeneration,
    )

    tok = qwen_tokenizer()
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": PATCH,
        "spatial_merge_size": 2,
    }
    config = LlavaOnevision15Config(
        text_config={**qwen2(tok), "model_type": "qwen3", "head_dim": 16}, vision_config=vision, **vision_ids(tok)
    )
    template = CHATML.replace("IMAGE_TEXT", QWEN_IMAGE)  # its tower takes single frames: temporal patch 1
    processor = _qwen3_processor(Exaone4_5_Processor, tok, template, qwen_image_processor(temporal_patch_size=1))
    return _seeded(LlavaOnevision15ForConditionalGeneration, config), processor


def hyperclovax_vision_v2() -> tuple[Any, Any]:
    """HyperCLOVA X SEED Vision (v2): a Qwen2.5-VL vision tower before a HyperCLOVA X (Granite-like, post-norm) text
    model with 1-D RoPE; ChatML."""
    from transformers import (
        HyperCLOVAXVisionV2Config,
        HyperCLOVAXVisionV2ForConditionalGeneration,
        HyperCLOVAXVisionV2Processor,
    )

    tok = qwen_tokenizer()
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 16,
        "fullatt_block_indexes": [1],
    }
    ids = tok.convert_tokens_to_ids
    config = HyperCLOVAXVisionV2Config(
        text_config={**qwen2(tok), "model_type": "hyperclovax"},
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
    )
    processor = _qwen3_processor(HyperCLOVAXVisionV2Processor, tok, CHATML.replace("IMAGE_TEXT", QWEN_IMAGE))
    return _seeded(HyperCLOVAXVisionV2ForConditionalGeneration, config), processor


# LFM's ChatML opened by `<|startoftext|>`, the image between Qwen's vision tokens.
LFM_TEMPLATE = "<|startoftext|>" + QWEN3_CHATML


def lfm3_vl() -> tuple[Any, Any]:
    """LFM3-VL: a hybrid conv / attention vision tower (axial RoPE) before an LFM3 text model (short convolutions,
    sliding and gated full attention, sandwich norms)."""
    from transformers import Lfm3VlConfig, Lfm3VlForConditionalGeneration, Lfm3VlProcessor

    tok = qwen_tokenizer(("<|startoftext|>",))
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "layer_types": ["conv", "full_attention"],
        "patch_size": PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    text = {
        **qwen2(tok),
        "model_type": "lfm3",
        "head_dim": 16,
        "sliding_window": 64,
        "layer_types": ["conv", "sliding_attention", "full_attention"],
        "num_hidden_layers": 3,
    }
    config = Lfm3VlConfig(vision_config=vision, text_config=text, projector_hidden_size=64, **vision_ids(tok))
    processor = _qwen3_processor(Lfm3VlProcessor, tok, LFM_TEMPLATE)
    return _seeded(Lfm3VlForConditionalGeneration, config), processor


# dots' chat format: `<|userprompt|>...<|endofuserprompt|><|response|>...<|endofresponse|>`, the image as
# `<|img|><|imgpad|><|endofimg|>`.
DOTS_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|userprompt|>"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<|img|><|imgpad|><|endofimg|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|endofuserprompt|>"
    "{% else %}<|response|>{{ message['content'][0]['text'] }}<|endofresponse|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|response|>{% endif %}"
)
DOTS_SPECIALS = (
    "<|userprompt|>",
    "<|endofuserprompt|>",
    "<|response|>",
    "<|endofresponse|>",
    "<|img|>",
    "<|imgpad|>",
    "<|endofimg|>",
    "<|audio_comp_pad|>",
)


def dots3_note() -> tuple[Any, Any]:
    """dots3-note: a NaViT tower (single frames, 2x2 merge) and a Whisper-style audio tower before an MLA + MoE text
    model (dense first layer, sparse second); image + text only."""
    from transformers import Dots3NoteConfig, Dots3NoteForConditionalGeneration, Dots3NoteProcessor
    from transformers.models.dots3_note.feature_extraction_dots3_note import Dots3NoteFeatureExtractor

    tok = qwen_tokenizer(DOTS_SPECIALS, {"image_token": "<|imgpad|>"})
    tok.eos_token = "<|endofresponse|>"
    ids = tok.convert_tokens_to_ids
    mla = {"q_lora_rank": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16}
    text = {
        **qwen2(tok),
        "num_key_value_heads": 4,
        "head_dim": 16,
        **mla,
        "use_dsa": False,
        "use_sliding_window": False,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_experts_intermediate_size": 32,
    }
    text.pop("model_type")
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": PATCH,
        "spatial_merge_size": 2,
        "mlp_layer_types": ["dense", "dense"],
        "adapter_in_dim": 32,
        "adapter_out_dim": 64,
    }
    audio = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "downsample_hidden_size": 16,
        "adapter_input_size": 32,
        "adapter_out_dim": 64,
    }
    config = Dots3NoteConfig(
        text_config=text,
        vision_config=vision,
        audio_config=audio,
        image_token_id=ids("<|imgpad|>"),
        video_token_id=ids("<|video_pad|>"),
        audio_token_id=ids("<|audio_comp_pad|>"),
    )
    processor = _qwen3_processor(
        Dots3NoteProcessor,
        tok,
        DOTS_TEMPLATE,
        qwen_image_processor(temporal_patch_size=1),
        feature_extractor=Dots3NoteFeatureExtractor(),
    )
    return _seeded(Dots3NoteForConditionalGeneration, config), processor


OMNI_NAMED = {
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "audio_token": "<|AUDIO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
OMNI_IMAGE = "<|vision_bos|><|IMAGE|><|vision_eos|>"
# Qwen2.5-Omni's: Qwen2-VL's ChatML (default system prompt) with the image as `<|vision_bos|><|IMAGE|><|vision_eos|>`.
OMNI_TEMPLATE = CHATML.replace("IMAGE_TEXT", OMNI_IMAGE)


def omni_processor(processor_class: Any, tok: Any, template: str) -> Any:
    """An omni processor: Qwen2-VL's image processor, Whisper's feature extractor (audio unused), no video."""
    from transformers import WhisperFeatureExtractor
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    return processor_class(
        image_processor=qwen_image_processor(),
        video_processor=VideoProcessorMixin(),
        feature_extractor=WhisperFeatureExtractor(feature_size=16),
        tokenizer=tok,
        chat_template=template,
    )


def omni_ids(tok: Any) -> dict[str, int]:
    """The thinker config's ids of the omni image, video and audio tokens."""
    ids = tok.convert_tokens_to_ids
    return {
        "image_token_index": ids("<|IMAGE|>"),
        "video_token_index": ids("<|VIDEO|>"),
        "audio_token_index": ids("<|AUDIO|>"),
        "audio_start_token_id": ids("<|audio_bos|>"),
        "audio_end_token_id": ids("<|audio_eos|>"),
        "user_token_id": ids("user"),
        "vision_start_token_id": ids("<|vision_bos|>"),  # read by its M-RoPE, not a field (the hub config has it)
    }


OMNI_AUDIO = {
    "num_mel_bins": 16,
    "encoder_layers": 1,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "d_model": 32,
    "output_dim": 64,
    "n_window": 8,
}


def qwen2_5_omni_thinker() -> tuple[Any, Any]:
    """Qwen2.5-Omni's thinker (its text-generating half): a Qwen2.5-VL vision tower and a Whisper-style audio tower
    before a Qwen2 text model with M-RoPE; image + text only."""
    from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    tok = tokenizer("qwen3", tuple(OMNI_NAMED.values()), OMNI_NAMED)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 16,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5OmniThinkerConfig(
        text_config={**qwen2(tok), "model_type": None, "rope_parameters": rope},
        vision_config=vision,
        audio_config=OMNI_AUDIO,
        **omni_ids(tok),
    )
    processor = omni_processor(Qwen2_5OmniProcessor, tok, OMNI_TEMPLATE)
    return _seeded(Qwen2_5OmniThinkerForConditionalGeneration, config), processor


OMNI3_NAMED = {
    **QWEN_NAMED,
    "audio_token": "<|audio_pad|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}


def qwen3_omni_moe_thinker() -> tuple[Any, Any]:
    """Qwen3-Omni's thinker: Qwen3-VL's tower (deepstack) and a Whisper-style audio tower before a sparse-MoE Qwen3
    text model with interleaved M-RoPE; Qwen3's ChatML; image + text only."""
    from transformers import (
        Qwen3OmniMoeProcessor,
        Qwen3OmniMoeThinkerConfig,
        Qwen3OmniMoeThinkerForConditionalGeneration,
    )

    tok = tokenizer("qwen3", tuple(OMNI3_NAMED.values()), OMNI3_NAMED)
    ids = tok.convert_tokens_to_ids
    text = {
        **qwen2(tok),
        "model_type": None,
        "head_dim": 16,
        "rope_parameters": MROPE,
        "moe_intermediate_size": 32,
        "num_experts": 4,
        "num_experts_per_tok": 2,
    }
    config = Qwen3OmniMoeThinkerConfig(
        text_config=text,
        vision_config=qwen3_vision(deepstack_visual_indexes=[1]),
        audio_config={**OMNI_AUDIO, "downsample_hidden_size": 16},
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        audio_token_id=ids("<|audio_pad|>"),
        audio_start_token_id=ids("<|audio_start|>"),
        user_token_id=ids("user"),
        vision_start_token_id=ids("<|vision_start|>"),  # read by its M-RoPE, not a field (the hub config has it)
    )
    processor = omni_processor(Qwen3OmniMoeProcessor, tok, QWEN3_CHATML)
    return _seeded(Qwen3OmniMoeThinkerForConditionalGeneration, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "qwen3_vl_moe": qwen3_vl_moe,
    "qwen3_5": qwen3_5,
    "qwen3_5_moe": qwen3_5_moe,
    "qwen4_exp": qwen4_exp,
    "cosmos3_omni": cosmos3_omni,
    "cosmos3_edge": cosmos3_edge,
    "exaone4_5": exaone4_5,
    "llava_onevision1_5": llava_onevision1_5,
    "hyperclovax_vision_v2": hyperclovax_vision_v2,
    "lfm3_vl": lfm3_vl,
    "dots3_note": dots3_note,
    "qwen2_5_omni_thinker": qwen2_5_omni_thinker,
    "qwen3_omni_moe_thinker": qwen3_omni_moe_thinker,
}
FAMILIES = list(BUILDERS)
LEFT: dict[str, str] = {}  # every family of the group builds offline and trains under vanilla transformers
GROUP = (  # this module's families (model_type, `-` as `_`): each is in FAMILIES or in LEFT
    "qwen3_5",
    "qwen3_5_moe",
    "qwen3_vl_moe",
    "qwen4_exp",
    "cosmos3_omni",
    "cosmos3_edge",
    "exaone4_5",
    "llava_onevision1_5",
    "hyperclovax_vision_v2",
    "lfm3_vl",
    "dots3_note",
    "qwen2_5_omni_thinker",
    "qwen3_omni_moe_thinker",
)


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
