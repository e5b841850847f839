"""Tiny random-weight models of more image-text-to-text families (Video-LLaVA, Aria, Emu3, ...), built like
tests/zoo.py: real npm tokenizers, the PIL image processors, chat templates written like the published ones, a few
layers.

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families, `LEFT` the model types of this group that
are not in the zoo, each with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zoo
from zoo import IMAGE, PATCH, PINPOINTS, VICUNA_TEMPLATE, _seeded, clip, llama, siglip


def tokenizer(kind: str, specials: tuple[str, ...] = (), named: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """`zoo.tokenizer`, reading the vocabulary once (it reads it per special token: 0.4 s each on 150k-262k ones)."""
    loaded = zoo.tokenizer(kind, (), named, **kwargs)
    vocab = loaded.get_vocab()
    missing = [token for token in specials if token not in vocab]
    if missing:
        loaded.add_tokens(missing, special_tokens=True)
    return loaded


def video_llava() -> tuple[Any, Any]:
    """Video-LLaVA: a CLIP tower shared by images and videos, llava-hf's Vicuna template; images only here."""
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration, VideoLlavaProcessor
    from transformers.models.video_llava.image_processing_video_llava import VideoLlavaImageProcessor
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    tok = tokenizer("llama2", ("<image>", "<video>"), {"image_token": "<image>", "video_token": "<video>"})
    image_processor = VideoLlavaImageProcessor(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}
    )
    processor = VideoLlavaProcessor(
        image_processor=image_processor,
        video_processor=VideoProcessorMixin(),
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    # 5.25 still returns the deprecated `pixel_values_images` unless asked not to (the warning says so); the processor
    # lists `pixel_values` among its inputs, and `pixel_values` is what the model takes
    processor.images_kwargs = {**processor.images_kwargs, "return_legacy_image_output": False}
    config = VideoLlavaConfig(
        vision_config=clip(),
        text_config=llama(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(IMAGE // PATCH) ** 2,
    )
    return _seeded(VideoLlavaForConditionalGeneration, config), processor


# Aria's: ChatML without a system turn, the image as `<fim_prefix><|img|><fim_suffix>`.
ARIA_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<fim_prefix><|img|><fim_suffix>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# the image processor takes 490 or 980 only, and the processor asks for 980 whatever its image processor's config
# says (a class default no checkpoint file changes); a 140-px patch gives 49 patches
ARIA_CROP = 980


def aria() -> tuple[Any, Any]:
    """Aria: an Idefics3 vision tower, a cross-attention projector to a fixed number of queries, a MoE text model."""
    import torch
    from transformers import AriaConfig, AriaForConditionalGeneration, AriaProcessor
    from transformers.models.aria.image_processing_pil_aria import AriaImageProcessorPil

    tok = tokenizer("qwen3", ("<fim_prefix>", "<|img|>", "<fim_suffix>"), {"image_token": "<|img|>"})
    queries, patch = 4, 140
    image_processor = AriaImageProcessorPil(max_image_size=ARIA_CROP, min_image_size=2 * patch)
    processor = AriaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=ARIA_TEMPLATE,
        size_conversion={ARIA_CROP: queries},
    )
    text = {
        **llama(tok),
        "model_type": "aria_text",
        "moe_num_experts": 4,
        "moe_topk": 2,
        "moe_num_shared_experts": 1,
    }
    config = AriaConfig(
        vision_config={
            "model_type": "idefics3_vision",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": ARIA_CROP,
            "patch_size": patch,
        },
        text_config=text,
        projector_patch_to_query_dict={(ARIA_CROP // patch) ** 2: queries},
        image_token_index=tok.convert_tokens_to_ids("<|img|>"),
    )
    model = _seeded(AriaForConditionalGeneration, config)
    with torch.no_grad():  # the projector's queries start at 0: every query would read the same average
        model.model.multi_modal_projector.query.normal_(0.0, 1.0)
    return model, processor


# Cohere's Command-A-Vision-style turns (North): `<|START_RESPONSE|>answer<|END_RESPONSE|>` inside the chatbot turn,
# the image as `<|VISION_START|><|IMAGE_PAD|><|VISION_END|>`.
COMPASS_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|START_OF_TURN_TOKEN|>"
    "{% if message['role'] == 'user' %}<|USER_TOKEN|>{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|VISION_START|><|IMAGE_PAD|><|VISION_END|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% else %}<|CHATBOT_TOKEN|><|START_RESPONSE|>{{ message['content'][0]['text'] }}<|END_RESPONSE|>{% endif %}"
    "<|END_OF_TURN_TOKEN|>{% endfor %}"
    "{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>{% endif %}"
)


def cohere_compass() -> tuple[Any, Any]:
    """Cohere Compass (North vision): a Qwen3-VL-like tower (axial RoPE, DeepStack) into a Cohere decoder, M-RoPE."""
    from transformers import (
        CohereCompassConfig,
        CohereCompassForConditionalGeneration,
        CohereCompassProcessor,
    )
    from transformers.models.cohere_compass.image_processing_pil_cohere_compass import (
        CohereCompassImageProcessorPil,
    )
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    image = ("<|VISION_START|>", "<|IMAGE_PAD|>", "<|VISION_END|>", "<|VIDEO_PAD|>")
    turns = (
        "<|START_OF_TURN_TOKEN|>",
        "<|END_OF_TURN_TOKEN|>",
        "<|USER_TOKEN|>",
        "<|CHATBOT_TOKEN|>",
        "<|START_RESPONSE|>",
        "<|END_RESPONSE|>",
    )
    tok = tokenizer("llama3", image + turns, {"image_token": "<|IMAGE_PAD|>", "video_token": "<|VIDEO_PAD|>"})
    image_processor = CohereCompassImageProcessorPil(
        patch_size=PATCH, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor = CohereCompassProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=VideoProcessorMixin(),
        chat_template=COMPASS_TEMPLATE,
    )
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    layers = ["sliding_attention", "full_attention"]
    text = {**llama(tok), "model_type": "cohere_compass_text", "layer_types": layers, "sliding_window": 64}
    ids = tok.convert_tokens_to_ids
    config = CohereCompassConfig(
        text_config={**text, "rope_parameters": {layer: dict(rope) for layer in layers}},
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=ids("<|IMAGE_PAD|>"),
        video_token_id=ids("<|VIDEO_PAD|>"),
        vision_start_token_id=ids("<|VISION_START|>"),
        vision_end_token_id=ids("<|VISION_END|>"),
    )
    return _seeded(CohereCompassForConditionalGeneration, config), processor


# Granite Vision's: `<|start_of_role|>role<|end_of_role|>` headers, a default system turn, `<|end_of_text|>` closing
# every turn, the image as `<image>` on its own line.
GRANITE_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|start_of_role|>system<|end_of_role|>A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.<|end_of_text|>\n{% endif %}"
    "<|start_of_role|>{{ message['role'] }}<|end_of_role|>{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|end_of_text|>\n{% endfor %}{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>"
    "{% endif %}"
)


def granite4_vision() -> tuple[Any, Any]:
    """Granite-4 Vision: LLaVA-NeXT tiles, window Q-Former projectors whose features are added into chosen decoder
    layers (DeepStack and four spatial-offset groups) rather than only into the input embeddings."""
    from transformers import Granite4VisionConfig, Granite4VisionForConditionalGeneration, Granite4VisionProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    specials = ("<image>", "<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>")
    tok = tokenizer("llama2", specials, {"image_token": "<image>"})  # a 32k vocabulary: Granite's is 100k
    tok.eos_token = "<|end_of_text|>"
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=PINPOINTS
    )
    processor = Granite4VisionProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        vision_feature_select_strategy="full",
        downsample_rate="1/2",
        chat_template=GRANITE_TEMPLATE,
    )
    config = Granite4VisionConfig(
        vision_config=siglip(hidden_size=64, intermediate_size=64),  # the Q-Former takes hidden // 64 heads
        text_config={**llama(tok), "model_type": "granite4_vision_text"},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        downsample_rate="1/2",
        deepstack_layer_map=[[0, 0]],
        spatial_vision_layer=-1,
        spatial_target_layers=[0, 1, 0, 1],
        qformer_config={"intermediate_size": 64},
    )
    return _seeded(Granite4VisionForConditionalGeneration, config), processor


# Emu3-Chat's: a system sentence, then `USER: ` / `ASSISTANT: ` turns, the image first in the user turn, nothing
# closing an answer (vdtrain appends and supervises EOS).
EMU3_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ 'You are a helpful assistant. ' }}{% endif %}{% if message['role'] == 'system' %}"
    "{{ message['content'][0]['text'] + ' ' }}{% else %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<image>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] + ' ' }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def emu3() -> tuple[Any, Any]:
    """Emu3: a VQ-VAE turns the image into `<|visual token n|>` vocabulary tokens (rows ended by `<|extra_200|>`)
    that a Llama-like decoder reads; the image tokens depend on its size."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration, Emu3ImageProcessor, Emu3Processor

    codes = 16
    visual = tuple(f"<|visual token {k:06d}|>" for k in range(codes))
    named = {
        "image_token": "<image>",
        "boi_token": "<|image start|>",
        "eoi_token": "<|image end|>",
        "image_wrapper_token": "<|image token|>",
        "eof_token": "<|extra_201|>",
    }
    # Llama-2's 32k vocabulary (Emu3's is Qwen's 151k plus visual tokens: 4x the CI time in the lm_head)
    tok = tokenizer("llama2", (*named.values(), "<|extra_200|>", *visual), named)
    image_processor = Emu3ImageProcessor(min_pixels=IMAGE * IMAGE, max_pixels=2 * IMAGE * IMAGE, spatial_factor=8)
    processor = Emu3Processor(image_processor=image_processor, tokenizer=tok, chat_template=EMU3_TEMPLATE)
    config = Emu3Config(
        vq_config={
            "codebook_size": codes,
            "embed_dim": 8,
            "latent_channels": 32,
            "base_channels": 32,
            "channel_multiplier": [1, 1, 1, 1],
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "temporal_downsample_factor": 4,
            "hidden_size": 32,
        },
        text_config={**llama(tok), "model_type": "emu3_text", "pad_token_id": tok.unk_token_id},  # must be an int
        # what the model reads of the vocabulary: the image token, the row end and the visual tokens (the whole 151k
        # map costs seconds of config validation)
        vocabulary_map={token: tok.convert_tokens_to_ids(token) for token in ("<image>", "<|extra_200|>", *visual)},
    )
    return _seeded(Emu3ForConditionalGeneration, config), processor


# Gemma's turns (`<start_of_turn>user` / `<start_of_turn>model`, `<end_of_turn>` closing each), Gemma-3n's image as
# `<image_soft_token>` (the processor expands it to `<start_of_image>`, soft tokens, `<end_of_image>`).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image_soft_token>{% elif content['type'] == 'text' %}"
    "{{ content['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gemma3n() -> tuple[Any, Any]:
    """Gemma-3n: a timm vision tower (MobileNet-v5 published; timm's tiny `test_convnext` here: timm imports
    torchvision), AltUp/LAuReL decoder layers with per-layer token embeddings, an audio tower left unused (image and
    text only). Image and audio soft tokens sit above the text vocabulary, embedded by their own tables."""
    from transformers import (
        Gemma3nAudioFeatureExtractor,
        Gemma3nConfig,
        Gemma3nForConditionalGeneration,
        Gemma3nProcessor,
        SiglipImageProcessorPil,
    )

    # Llama-2's 32k vocabulary (Gemma's 262k: 3x the CI time), added in this order: the turn and image-boundary
    # tokens, the image soft token (the vision table's only id, first above the text ids), the audio tokens (the audio
    # table's)
    named = {
        "start_of_turn_token": "<start_of_turn>",
        "end_of_turn_token": "<end_of_turn>",
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
        "boa_token": "<start_of_audio>",
        "audio_token": "<audio_soft_token>",
        "eoa_token": "<end_of_audio>",
    }
    tok = tokenizer("llama2", tuple(named.values()), named)
    ids = tok.convert_tokens_to_ids
    text_vocab, image_vocab = ids("<image_soft_token>"), 1
    audio = ("<start_of_audio>", "<audio_soft_token>", "<end_of_audio>")
    assert ids(audio[0]) == text_vocab + image_vocab
    side = 2 * IMAGE  # test_convnext downsamples 32 times: a 2x2 feature map, 4 soft tokens per image
    processor = Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(feature_size=32),
        image_processor=SiglipImageProcessorPil(size={"height": side, "width": side}),
        tokenizer=tok,
        chat_template=GEMMA_TEMPLATE,
        image_seq_length=4,
        audio_seq_length=4,
    )
    layers = ["sliding_attention", "full_attention"]
    config = Gemma3nConfig(
        text_config={
            **llama(tok),
            "model_type": "gemma3n_text",
            "head_dim": 16,
            "layer_types": layers,
            "sliding_window": 64,
            "vocab_size": len(tok),
            "vocab_size_per_layer_input": text_vocab,
            "hidden_size_per_layer_input": 16,
            "altup_num_inputs": 2,
            "num_kv_shared_layers": 0,
            "laurel_rank": 8,
            "activation_sparsity_pattern": [0.0] * len(layers),
        },
        vision_config={
            "architecture": "test_convnext",
            "hidden_size": 64,
            "vocab_size": image_vocab,
            "vocab_offset": text_vocab,
        },
        audio_config={
            "vocab_size": len(audio),
            "vocab_offset": text_vocab + image_vocab,
            "input_feat_size": 32,
            "hidden_size": 32,
            "conf_num_attention_heads": 2,
            "conf_num_hidden_layers": 1,
            "sscp_conv_channel_size": [8, 8],
        },
        vision_soft_tokens_per_image=4,
        audio_soft_tokens_per_image=4,
        boi_token_id=ids("<start_of_image>"),
        eoi_token_id=ids("<end_of_image>"),
        image_token_id=ids("<image_soft_token>"),
        boa_token_id=ids("<start_of_audio>"),
        eoa_token_id=ids("<end_of_audio>"),
        audio_token_id=ids("<audio_soft_token>"),
    )
    return _seeded(Gemma3nForConditionalGeneration, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "video_llava": video_llava,
    "aria": aria,
    "cohere_compass": cohere_compass,
    "granite4_vision": granite4_vision,
    "emu3": emu3,
    "gemma3n": gemma3n,
}
FAMILIES = list(BUILDERS)
# families whose model needs timm, which imports torchvision: marked `torchvision` (scripts/ci_torchvision.sh's venv)
NEEDS_TORCHVISION = {"gemma3n"}
LEFT: dict[str, str] = {
    "fuyu": (
        "FuyuProcessor fails on any image here: with FuyuImageProcessorPil, patchify_image calls numpy's "
        "transpose(0, 1, 3, 2, 4) on the torch tensor the processor asks for (TypeError, "
        "image_processing_pil_fuyu.py:288); with the torchvision FuyuImageProcessor, the processor drops the first id "
        "of the image text, taken for the `▁` Fuyu's sentencepiece puts before `|SPEAKER|`, which none of the npm "
        "tokenizers emits before an added token, so its own check fails ('Mismatch in `image` token count', "
        "processing_fuyu.py); Fuyu's tokenizer is not available offline"
    ),
    "shieldgemma2": (
        "a policy classifier, not fine-tuned for text generation: ShieldGemma2Processor ignores `text` and renders "
        "one fixed policy prompt per (image, policy) ('ShieldGemma 2 needs images to classify' without one), scored "
        "by the Yes/No logits of the last position (ShieldGemma2ForImageClassification); its network, "
        "Gemma3ForConditionalGeneration, is in the zoo as gemma3"
    ),
}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
