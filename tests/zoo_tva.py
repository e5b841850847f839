"""Tiny random-weight models of image-text-to-text families new in transformers 5.25 whose image processors exist
only as torchvision classes (group `tva`), built like tests/zoo.py: real npm tokenizers, chat templates written like
the published ones, a few layers.

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families in the zoo, `LEFT` the families of this
group that are not, each with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo import PATCH, _seeded, llama, tokenizer

# Apertus' (v1): `<|user_start|>...<|user_end|><|assistant_start|>...<|assistant_end|>` after a system turn
APERTUS_TEMPLATE = (
    "{{ bos_token }}<|system_start|>You are Apertus, a helpful assistant.<|system_end|>"
    "<|developer_start|>Deliberation: disabled\nTool Capabilities: disabled<|developer_end|>"
    "{% for message in messages %}{% if message['role'] == 'user' %}<|user_start|>"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<|image|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|user_end|>"
    "{% elif message['role'] == 'assistant' %}<|assistant_start|>{{ message['content'][0]['text'] }}<|assistant_end|>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant_start|>{% endif %}"
)
APERTUS_NAMED = {
    "image_token": "<|image|>",
    "audio_token": "<|audio|>",
    "boi_token": "<|image_start|>",
    "eoi_token": "<|image_end|>",
    "image_wrapper_token": "<|image_wrapper|>",
    "eol_token": "<|image_eol|>",
    "boa_token": "<|audio_start|>",
    "eoa_token": "<|audio_end|>",
}
APERTUS_TURNS = tuple(
    f"<|{role}_{edge}|>" for role in ("system", "developer", "user", "assistant") for edge in ("start", "end")
)


def apertus1p5() -> tuple[Any, Any]:
    """Apertus 1.5: an IBQ vision tokenizer turns each 8x8 patch into a vocabulary code (`H*W` header, a row break
    token per row), image and audio code ranges appended to the text vocabulary."""
    from transformers import (
        Apertus1p5Config,
        Apertus1p5ForConditionalGeneration,
        Apertus1p5Processor,
        WavTokenizerFeatureExtractor,
    )
    from transformers.models.apertus1p5.image_processing_apertus1p5 import Apertus1p5ImageProcessor

    tok = tokenizer("llama3", (*APERTUS_NAMED.values(), *APERTUS_TURNS), APERTUS_NAMED)
    image_processor = Apertus1p5ImageProcessor(
        spatial_factor=PATCH, size={"min_pixels": 16 * 16, "max_pixels": 48 * 48}
    )
    processor = Apertus1p5Processor(
        image_processor=image_processor,
        feature_extractor=WavTokenizerFeatureExtractor(),
        tokenizer=tok,
        chat_template=APERTUS_TEMPLATE,
    )
    text, codes = len(tok), 64  # the image codes follow the text vocabulary, the audio codes follow them
    config = Apertus1p5Config(
        text_config={
            **llama(tok, 32),
            "model_type": "apertus1p5_text",
            "vocab_size": text + 2 * codes,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        vision_config={
            "codebook_size": codes,
            "embed_dim": 32,
            "latent_channels": 32,
            "base_channels": 32,  # GroupNorm(32 groups)
            "channel_multiplier": [1, 1, 1, 1],  # 3 halvings: one code per 8x8 patch
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "resolution": 32,
        },
        audio_config={
            "model_type": "wavtokenizer_encoder",
            "codebook_size": codes,
            "num_filters": 4,
            "hidden_size": 16,
            "codebook_dim": 16,
            "num_lstm_layers": 1,
            "upsampling_ratios": [2, 2],
        },
        image_token_id=tok.convert_tokens_to_ids("<|image|>"),
        audio_token_id=tok.convert_tokens_to_ids("<|audio|>"),
        image_token_offset=text,
        audio_token_offset=text + codes,
    )
    return _seeded(Apertus1p5ForConditionalGeneration, config), processor


GEMMA_NAMED = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
GEMMA_AUDIO = {"audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}


def gemma4_unified() -> tuple[Any, Any]:
    """Gemma-4 unified: no vision tower, pooled raw patches projected straight into the LM (aspect ratio kept, a
    variable number of soft tokens); Gemma-3's tokenizer and its own chat template."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration, Gemma4UnifiedProcessor
    from transformers.models.gemma4_unified.feature_extraction_gemma4_unified import (
        Gemma4UnifiedAudioFeatureExtractor,
    )
    from transformers.models.gemma4_unified.image_processing_gemma4_unified import Gemma4UnifiedImageProcessor
    from transformers.models.gemma4_unified.video_processing_gemma4_unified import Gemma4UnifiedVideoProcessor

    # the processor refuses any call while the audio tokens are undefined (`a and b or c` in its input check)
    tok = tokenizer("gemma3", tuple(GEMMA_AUDIO.values()), {**GEMMA_NAMED, **GEMMA_AUDIO})
    image_processor = Gemma4UnifiedImageProcessor(patch_size=PATCH, pooling_kernel_size=2, max_soft_tokens=70)
    processor = Gemma4UnifiedProcessor(
        feature_extractor=Gemma4UnifiedAudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=Gemma4UnifiedVideoProcessor(),
        # the template writes the image token itself (the processor expands it), Gemma-3's wrote `boi`
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
    }
    config = Gemma4UnifiedConfig(
        text_config=text,
        vision_config={
            "patch_size": PATCH,
            "pooling_kernel_size": 2,
            "mm_embed_dim": 32,
            "mm_posemb_size": 64,
            "output_proj_dims": 32,  # the embedder's input width: mm_embed_dim
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
    return _seeded(Gemma4UnifiedForConditionalGeneration, config), processor


# Inkling's (the o200k "harmony" layout): `<|start|>role<|message|>...<|end|>`, the image inside the user message
INKLING_TEMPLATE = (
    "{% for message in messages %}<|start|>{{ message['role'] }}<|message|>"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}IMAGE_TEXT"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant<|message|>{% endif %}"
)
INKLING_TURNS = ("<|start|>", "<|message|>", "<|end|>")


def inkling2_text(tok: Any, **extra: Any) -> dict[str, Any]:
    """A two-layer Inkling-2 text config (sliding + full hybrid attention, a 4-expert MoE) over `tok`'s vocabulary."""
    return {
        "vocab_size": len(tok),
        "unpadded_vocab_size": len(tok),  # the LM head's width
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "swa_num_attention_heads": 2,
        "swa_num_key_value_heads": 1,
        "swa_head_dim": 16,
        "sliding_window_size": 64,
        "d_rel": 4,
        "rel_extent": 64,
        "layer_types": ["hybrid_sliding", "hybrid"],
        "moe_intermediate_size": 32,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_layers_per_attn_res_block": 1,
        "max_position_embeddings": 1024,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        **extra,
    }


def inkling2_vision() -> dict[str, Any]:
    """A two-layer Inkling-2 vision tower: 8 px patches, 2x2 of them merged into one LM token."""
    return {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": PATCH,
        "spatial_merge_size": 2,
        "posemb_grid_size": 8,
        "projection_hidden_dim": 32,
        "text_hidden_size": 32,
    }


def inkling2_processor() -> Any:
    """Inkling-2's processor: one image token per 16 px cell of the (padded) image, any aspect ratio."""
    from transformers import Inkling2Processor
    from transformers.models.inkling2.image_processing_inkling2 import Inkling2ImageProcessor

    tok = tokenizer("qwen3", ("<|image|>", *INKLING_TURNS), {"image_token": "<|image|>"})
    image_processor = Inkling2ImageProcessor(size={"height": 2 * PATCH, "width": 2 * PATCH})
    return Inkling2Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=INKLING_TEMPLATE.replace("IMAGE_TEXT", "<|image|>"),
    )


def inkling2() -> tuple[Any, Any]:
    """Inkling-2: a native-resolution ViT (2x2 merged patches), a hybrid sliding/full attention MoE LM."""
    from transformers import Inkling2Config, Inkling2ForConditionalGeneration

    processor = inkling2_processor()
    tok = processor.tokenizer
    config = Inkling2Config(
        text_config=inkling2_text(tok), vision_config=inkling2_vision(), image_token_id=processor.image_token_id
    )
    return _seeded(Inkling2ForConditionalGeneration, config), processor


def inkling2_loop() -> tuple[Any, Any]:
    """Inkling-2 Loop: Inkling-2 whose middle decoder layers run twice (gated loop passes); Inkling-2's processor."""
    from transformers import Inkling2LoopConfig, Inkling2LoopForConditionalGeneration

    processor = inkling2_processor()
    tok = processor.tokenizer
    text = inkling2_text(
        tok,
        num_hidden_layers=3,
        layer_types=["hybrid_sliding", "hybrid_sliding", "hybrid"],
        loop_layer_index_start=1,
        loop_layer_index_end=2,
        loop_num_passes=2,
        loop_gate_rank=8,
    )
    config = Inkling2LoopConfig(
        text_config=text,
        vision_config={"model_type": "inkling2_vision", **inkling2_vision()},
        image_token_id=processor.image_token_id,
    )
    return _seeded(Inkling2LoopForConditionalGeneration, config), processor


def inkling_mm_model() -> tuple[Any, Any]:
    """Inkling: each 16 px patch of the image (two frames deep) is one LM token, `<|content_image|>` before them; a
    dMel audio path; an MoE LM with shared experts, hybrid sliding/full attention."""
    from transformers import InklingConfig, InklingForConditionalGeneration, InklingProcessor
    from transformers.models.inkling.feature_extraction_inkling import InklingFeatureExtractor
    from transformers.models.inkling.image_processing_inkling import InklingImageProcessor

    media = ("<|image|>", "<|audio|>", "<|content_image|>", "<|content_audio_input|>")
    tok = tokenizer("qwen3", (*media, *INKLING_TURNS), {"image_token": "<|image|>", "audio_token": "<|audio|>"})
    image_processor = InklingImageProcessor(size={"height": 2 * PATCH, "width": 2 * PATCH})
    processor = InklingProcessor(
        feature_extractor=InklingFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=INKLING_TEMPLATE.replace("IMAGE_TEXT", "<|content_image|><|image|>"),
    )
    ids = tok.convert_tokens_to_ids
    config = InklingConfig(
        text_config=inkling2_text(
            tok,
            intermediate_size=64,
            n_shared_experts=1,
            bos_token_id=tok.bos_token_id,
            logits_mup_width_multiplier=1.0,  # muP's 24 (of a 6144-wide model) flattens a 64-wide one's logits: d ~ 0
        ),
        vision_config={"patch_size": 2 * PATCH, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2},
        audio_config={"n_mel_bins": 8, "mel_vocab_size": 16},
        image_token_id=ids("<|image|>"),
        audio_token_id=ids("<|audio|>"),
        image_bos_token_id=ids("<|content_image|>"),
        audio_bos_token_id=ids("<|content_audio_input|>"),
    )
    return _seeded(InklingForConditionalGeneration, config), processor


# Muse's (Llama-4 layout, the vocabulary Muse shares with it): `<|header_start|>role<|header_end|>\n\n...<|eot|>`
MUSE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|header_start|>{{ message['role'] }}<|header_end|>\n\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<|patch|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|eot|>{% endfor %}"
    "{% if add_generation_prompt %}<|header_start|>assistant<|header_end|>\n\n{% endif %}"
)
MUSE_MEDIA = ("<|patch|>", "<|image_start|>", "<|image_end|>", "<|video|>", "<|vid_frame_separator|>", "<|vid_start|>")
MUSE_SPECIALS = (*MUSE_MEDIA, "<|vid_end|>", "<|header_start|>", "<|header_end|>", "<|eot|>")


def muse(processor_class: Any, *extra: str, **kwargs: Any) -> Any:
    """Muse-Glimmer's processor (Muse-Spark's with `extra` tokens and its audio feature extractor in `kwargs`): a
    native-resolution grid of 8 px patches (at most 24), 2x2 merged into one `<|patch|>` each."""
    from transformers.models.muse_glimmer.image_processing_muse_glimmer import MuseGlimmerImageProcessor
    from transformers.models.muse_glimmer.video_processing_muse_glimmer import MuseGlimmerVideoProcessor

    tok = tokenizer("llama3", (*MUSE_SPECIALS, *extra), {"image_token": "<|patch|>"})
    return processor_class(
        image_processor=MuseGlimmerImageProcessor(patch_size=PATCH, merge_size=2, max_image_tokens=24),
        video_processor=MuseGlimmerVideoProcessor(patch_size=PATCH, merge_size=2),
        tokenizer=tok,
        chat_template=MUSE_TEMPLATE,
        **kwargs,
    )


def muse_vision() -> dict[str, Any]:
    """A two-layer Muse vision tower (8 px patches, 2x2 merge, an 8x8 position grid)."""
    return {
        "patch_size": PATCH,
        "pos_emb_height": 8,
        "pos_emb_width": 8,
        "max_position_embeddings": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "merge_size": 2,
    }


def muse_text(tok: Any, model_type: str, **extra: Any) -> dict[str, Any]:
    """A two-layer Muse text config (sliding + NoPE full attention) over `tok`'s vocabulary."""
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    return {
        **llama(tok, 32),
        "model_type": model_type,
        "head_dim": 16,
        "sliding_window": 64,
        "rope_parameters": rope,
        **extra,
    }


def muse_glimmer() -> tuple[Any, Any]:
    """Muse-Glimmer: a MoonViT-like native-resolution tower (2x2 merged patches) before a sliding/NoPE dense LM."""
    from transformers import MuseGlimmerConfig, MuseGlimmerForConditionalGeneration, MuseGlimmerProcessor

    processor = muse(MuseGlimmerProcessor)
    tok = processor.tokenizer
    config = MuseGlimmerConfig(
        text_config=muse_text(tok, "muse_glimmer_text"),
        vision_config=muse_vision(),
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        out_hidden_size=128,  # the merged patch: 4 x the tower's 32
        projector_hidden_size=64,
    )
    return _seeded(MuseGlimmerForConditionalGeneration, config), processor


def muse_spark() -> tuple[Any, Any]:
    """Muse-Spark: Muse-Glimmer's tower and image processor before an MoE LM; an audio pyramid encoder."""
    from transformers import MuseSparkConfig, MuseSparkForConditionalGeneration, MuseSparkProcessor
    from transformers.models.muse_spark.feature_extraction_muse_spark import MuseSparkFeatureExtractor

    audio = ("<|audio|>", "<|soft_audio_start|>", "<|soft_audio_end|>")
    processor = muse(MuseSparkProcessor, *audio, feature_extractor=MuseSparkFeatureExtractor())
    tok = processor.tokenizer
    text = muse_text(
        tok,
        "muse_spark_text",
        moe_intermediate_size=32,
        moe_hidden_size=32,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    config = MuseSparkConfig(
        text_config=text,
        vision_config={"model_type": "muse_spark_vision", **muse_vision()},
        audio_config={
            "patch_sizes": [4, 4],
            "hidden_sizes": [16, 32],
            "depths": [1, 1],
            "num_hidden_layers": 2,
            "out_hidden_size": 32,  # the text model's width
        },
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        audio_token_id=processor.audio_token_id,
        out_hidden_size=128,
        projector_hidden_size=64,
    )
    return _seeded(MuseSparkForConditionalGeneration, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "apertus1p5": apertus1p5,
    "gemma4_unified": gemma4_unified,
    "inkling2": inkling2,
    "inkling2_loop": inkling2_loop,
    "inkling_mm_model": inkling_mm_model,
    "muse_glimmer": muse_glimmer,
    "muse_spark": muse_spark,
}
FAMILIES = list(BUILDERS)
LEFT: dict[str, str] = {}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
