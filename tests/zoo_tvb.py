"""Tiny random-weight models of more image-text-to-text families whose image processors exist only as torchvision
classes (group tvb), built like tests/zoo.py: real npm tokenizers, chat templates written like the published ones,
a few layers. PerceptionLM and FastVLM use a timm vision tower (`TimmWrapperConfig`).

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families in the zoo, `LEFT` the families of this
group that are not, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo import CHATML, IMAGE, PATCH, _seeded, llama, qwen2, tokenizer

# Llama-3's header format (PerceptionLM's template): a default system prompt, images first in a user turn, every
# turn closed by `<|eot_id|>`.
PLM_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
PLM_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'][0]['text'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '" + PLM_SYSTEM + "' %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\n{{ system }}<|eot_id|>"
    "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}<|image|>{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] | trim }}"
    "{% endfor %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def timm_vit(**extra: Any) -> dict[str, Any]:
    """A two-layer timm ViT (Perception Encoder architecture) at IMAGE px, patch PATCH, width 32, with a CLS token."""
    return {
        "model_type": "timm_wrapper",
        "architecture": "vit_pe_core_tiny_patch16_384",
        "do_pooling": False,
        "model_args": {
            "img_size": IMAGE,
            "patch_size": PATCH,
            "embed_dim": 32,
            "depth": 2,
            "num_heads": 2,
            **extra,
        },
    }


def perception_lm() -> tuple[Any, Any]:
    """PerceptionLM: a thumbnail plus tiles per image through a Perception Encoder (timm), 2x2 pooled projector."""
    from transformers import PerceptionLMConfig, PerceptionLMForConditionalGeneration, PerceptionLMProcessor
    from transformers.models.perception_lm.image_processing_perception_lm import PerceptionLMImageProcessor
    from transformers.models.perception_lm.video_processing_perception_lm import PerceptionLMVideoProcessor

    named = {"image_token": "<|image|>", "video_token": "<|video|>"}
    tok = tokenizer("llama3", tuple(named.values()), named)
    image_processor = PerceptionLMImageProcessor(
        tile_size=IMAGE, max_num_tiles=4, size={"height": IMAGE, "width": IMAGE}
    )
    processor = PerceptionLMProcessor(
        video_processor=PerceptionLMVideoProcessor(),
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        pooling_ratio=2,
        chat_template=PLM_TEMPLATE,
    )
    config = PerceptionLMConfig(
        vision_config=timm_vit(),
        text_config=llama(tok),
        vision_use_cls_token=True,
        projector_pooling_ratio=2,
        image_token_id=tok.convert_tokens_to_ids("<|image|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video|>"),
    )
    return _seeded(PerceptionLMForConditionalGeneration, config), processor


def fast_vlm() -> tuple[Any, Any]:
    """FastVLM: a FastViT-HD (MCi, conv stages then attention stages, timm) whose last feature map is the image
    tokens, LLaVA's processor and projector over a Qwen2 LM, ChatML with `<image>\n` before the text."""
    import torch
    from transformers import CLIPImageProcessorPil, FastVlmConfig, FastVlmForConditionalGeneration, LlavaProcessor

    side, stride = 2 * IMAGE, 32  # 4 + 3 downsampling stages (the published tower: 4 at 1024 px, 16x16 tokens)
    tok = tokenizer("qwen3", ("<image>",), {"image_token": "<image>"})
    # MobileCLIP takes pixels in [0, 1]: no normalisation
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, do_normalize=False
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=stride,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        chat_template=CHATML.replace("IMAGE_TEXT", "<image>\n"),
    )
    dims = (8, 16, 32, 64, 64)
    vision = {
        "model_type": "timm_wrapper",
        "architecture": "fastvit_mci3",
        "do_pooling": False,
        "hidden_size": 2 * dims[-1],  # the final conv doubles the channels (cls_ratio 2)
        "model_args": {
            "inference_mode": True,
            "layers": (1, 1, 1, 1, 1),
            "embed_dims": dims,
            "downsamples": (False, True, True, True, False),
        },
    }
    config = FastVlmConfig(
        vision_config=vision,
        text_config=qwen2(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(side // stride) ** 2,
    )
    model = _seeded(FastVlmForConditionalGeneration, config)
    with torch.no_grad():  # std 0.02 on every conv of 5 conv stages leaves features of ~1e-21: no image at all;
        for module in model.model.vision_tower.modules():  # variance-keeping weights, zero biases
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.normal_(module.weight, std=2 / module.weight[0].numel() ** 0.5)  # GELU halves
                if module.bias is not None:
                    module.bias.zero_()
    return model, processor


# MiniMax's (M2/M3): `]~b]role\n...[e~[\n` turns after `]~!b[`, the assistant's role named `ai`, a default system
# prompt; the processor expands `]<]image[>[` inside `]<]start of image[>[ ... ]<]end of image[>[`.
MINIMAX_TEMPLATE = (
    "]~!b[{% if messages[0]['role'] != 'system' %}]~b]system\nYou are a helpful assistant.[e~[\n{% endif %}"
    "{% for message in messages %}]~b]{{ 'ai' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}]<]image[>["
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}[e~[\n{% endfor %}"
    "{% if add_generation_prompt %}]~b]ai\n{% endif %}"
)


def minimax_m3_vl() -> tuple[Any, Any]:
    """MiniMax-M3-VL: a Qwen2-VL-style tower (packed patches, `image_grid_thw`, 2x2 merge) and a MoE LM with
    partial RoPE and a clamped SwiGLU."""
    from transformers import MiniMaxM3SparseForConditionalGeneration, MiniMaxM3VLConfig, MiniMaxM3VLProcessor
    from transformers.models.minimax_m3_vl.image_processing_minimax_m3_vl import MiniMaxM3VLImageProcessor
    from transformers.models.minimax_m3_vl.video_processing_minimax_m3_vl import MiniMaxM3VLVideoProcessor

    processor_class = MiniMaxM3VLProcessor
    media = (processor_class.IMAGE_TOKEN, processor_class.VIDEO_TOKEN)
    brackets = (processor_class.VISION_START_TOKEN, processor_class.VISION_END_TOKEN)
    tok = tokenizer("llama2", ("]~!b[", "]~b]", "[e~[", *media, *brackets), eos_token="[e~[")
    size = {"shortest_edge": IMAGE * IMAGE, "longest_edge": 4 * IMAGE * IMAGE}
    image_processor = MiniMaxM3VLImageProcessor(size=size, patch_size=PATCH, merge_size=2)
    video_processor = MiniMaxM3VLVideoProcessor(size=size, patch_size=PATCH, merge_size=2)
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        chat_template=MINIMAX_TEMPLATE,
    )
    text = {
        **llama(tok),
        "head_dim": 16,
        "rotary_dim": 8,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "dense_intermediate_size": 128,
        "shared_intermediate_size": 64,
        "mlp_layer_types": ["dense", "sparse"],
        "layer_types": ["full_attention", "full_attention"],
    }
    text.pop("model_type")
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": PATCH,
        "image_size": 4 * IMAGE,
    }
    ids = tok.convert_tokens_to_ids
    config = MiniMaxM3VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids(processor_class.IMAGE_TOKEN),
        video_token_index=ids(processor_class.VIDEO_TOKEN),
        projector_hidden_size=64,
    )
    return _seeded(MiniMaxM3SparseForConditionalGeneration, config), processor


def nemotron_h_omni() -> tuple[Any, Any]:
    """Nemotron-3-Nano-Omni: a C-RADIO tower at native aspect ratio (packed patches, `image_grid_hw`, pixel
    shuffle), a hybrid Mamba-2 / attention / MoE LM (NemotronH), ChatML; the processor has audio and video slots."""
    from transformers import (
        NemotronH_Omni_Reasoning_V3,
        NemotronH_Omni_Reasoning_V3_Config,
        NemotronH_Omni_Reasoning_V3Processor,
        ParakeetFeatureExtractor,
    )
    from transformers.models.nemotron_h_omni.image_processing_nemotron_h_omni import (
        NemotronH_Omni_Reasoning_V3ImageProcessor,
    )
    from transformers.models.nemotron_h_omni.video_processing_nemotron_h_omni import (
        NemotronH_Omni_Reasoning_V3VideoProcessor,
    )

    named = {"image_token": "<image>", "image_start_token": "<img>", "image_end_token": "</img>"}
    tok = tokenizer("llama2", (*named.values(), "<video>", "<so_embedding>", "<so_start>", "<so_end>"), named)
    budget = {"patch_size": PATCH, "min_num_patches": 16, "max_num_patches": 64}
    processor = NemotronH_Omni_Reasoning_V3Processor(
        image_processor=NemotronH_Omni_Reasoning_V3ImageProcessor(**budget),
        video_processor=NemotronH_Omni_Reasoning_V3VideoProcessor(patch_size=PATCH),
        tokenizer=tok,
        feature_extractor=ParakeetFeatureExtractor(),
        chat_template=CHATML.replace("IMAGE_TEXT", "<image>"),
    )
    text = {
        **llama(tok),
        "model_type": "nemotron_h",
        "layers_block_type": ["mamba", "attention", "moe"],
        "head_dim": 16,
        "ssm_state_size": 16,
        "mamba_num_heads": 8,
        "mamba_head_dim": 16,
        "n_groups": 2,
        "chunk_size": 16,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "moe_shared_expert_intermediate_size": 32,
    }
    vision = {
        "model_type": "radio",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": PATCH,
        "image_size": IMAGE,
        "max_img_size": 4 * IMAGE,
        "num_registers": 1,
        "video_temporal_patch_size": 2,
    }
    ids = tok.convert_tokens_to_ids
    config = NemotronH_Omni_Reasoning_V3_Config(
        vision_config=vision,
        text_config=text,
        audio_config=None,
        vision_hidden_size=32,
        projector_hidden_size=64,
        image_token_id=ids("<image>"),
        video_token_id=ids("<video>"),
        audio_token_id=ids("<so_embedding>"),
    )
    return _seeded(NemotronH_Omni_Reasoning_V3, config), processor


# Step-3's: `<|BOT|>role\n...<|EOT|>` turns, the image as `<im_patch>` (expanded by the processor).
STEP_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|BOT|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<im_patch>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|EOT|>{% endfor %}"
    "{% if add_generation_prompt %}<|BOT|>assistant\n{% endif %}"
)


def step3p7() -> tuple[Any, Any]:
    """Step-3.7-Flash: a global view plus sliding-window local crops per image, a ViT with two stride-2 conv
    downsamplers; a MoE LM with clamped SwiGLU experts."""
    from transformers import Step3p7Config, Step3p7ForConditionalGeneration, Step3p7Processor
    from transformers.models.step3p7.image_processing_step3p7 import Step3p7ImageProcessor

    patch = 4  # the downsamplers take 4x4 patches into one token: 2x2 tokens for the 32 px global view
    image_tokens = ("<im_patch>", "<patch_start>", "<patch_end>", "<patch_newline>", "<im_start>", "<im_end>")
    # the text config requires an int pad id; the Llama tokenizer has none
    tok = tokenizer(
        "llama2", ("<|BOT|>", "<|EOT|>", "<|pad|>", *image_tokens), eos_token="<|EOT|>", pad_token="<|pad|>"
    )
    image_processor = Step3p7ImageProcessor(
        size={"height": IMAGE, "width": IMAGE}, patch_size=IMAGE // 2, vision_patch_size=patch
    )
    processor = Step3p7Processor(image_processor=image_processor, tokenizer=tok, chat_template=STEP_TEMPLATE)
    text = {
        **llama(tok),
        "head_dim": 16,
        "mlp_layer_types": ["dense", "sparse"],
        "layer_types": ["sliding_attention", "full_attention"],  # the model builds a sliding mask in any case
        "sliding_window": 64,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "share_expert_dim": 32,
    }
    text.pop("model_type")
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": patch,
        "mlp_ratio": 2.0,
        "max_position_embeddings": (IMAGE // patch) ** 2,
    }
    config = Step3p7Config(
        vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<im_patch>")
    )
    return _seeded(Step3p7ForConditionalGeneration, config), processor


# DeepSeek's `User: ... \n\nAssistant: ...<｜end▁of▁sentence｜>` turns, the image as `<image>\n` before the text.
DEEPSEEK_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}User: "
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{{ '\\n\\n' }}"
    "{% else %}Assistant: {{ message['content'][0]['text'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def unlimited_ocr() -> tuple[Any, Any]:
    """Unlimited-OCR: DeepSeek-OCR's encoder (SAM windowed ViT, conv downsampling, then a CLIP ViT over SAM's map),
    tiles plus a global view with a newline per row, a DeepSeek-V2 MoE LM with sliding attention."""
    from transformers import UnlimitedOcrConfig, UnlimitedOcrForConditionalGeneration, UnlimitedOcrProcessor
    from transformers.models.unlimited_ocr.image_processing_unlimited_ocr import UnlimitedOcrImageProcessor

    tok = tokenizer("llama2", ("<image>",), {"image_token": "<image>"})
    image_processor = UnlimitedOcrImageProcessor(
        size={"height": 2 * IMAGE, "width": 2 * IMAGE}, tile_size=IMAGE, min_patches=2, max_patches=4
    )
    processor = UnlimitedOcrProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        downsample_ratio=4,  # SAM's two stride-2 convs
        chat_template=DEEPSEEK_TEMPLATE,
    )
    sam = {
        "hidden_size": 32,
        "output_channels": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 2 * IMAGE,
        "patch_size": PATCH,
        "window_size": 4,
        "global_attn_indexes": [1],
        "mlp_dim": 64,
        "downsample_channels": [32, 32],
        "initializer_range": 0.02,  # the published 1e-10 (weights are loaded) leaves SAM blind to the pixels
    }
    encoder = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 2 * IMAGE // PATCH,
        "patch_size": 4,
    }
    text = {
        **llama(tok),
        "mlp_layer_types": ["dense", "sparse"],
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "moe_intermediate_size": 32,
        "sliding_window": 64,
    }
    text.pop("model_type")
    config = UnlimitedOcrConfig(
        vision_config={"sam_config": sam, "encoder_config": encoder},
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    return _seeded(UnlimitedOcrForConditionalGeneration, config), processor


MINICPM_NAMED = {
    "image_token": "<unk>",
    "video_token": "<|video_pad|>",
    "image_start_token": "<image>",
    "image_end_token": "</image>",
    "slice_start_token": "<slice>",
    "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>",
    "image_id_end_token": "</image_id>",
}


def minicpm_ocr() -> tuple[Any, Any]:
    """MiniCPM-OCR: NaViT-packed slices plus a source view (`target_sizes`), a window-attention merger inside the
    SigLIP tower, a Qwen3.5 (gated delta net / attention) LM; MiniCPM-V's ChatML, the image as the tokenizer's
    `image_token` `<unk>` (the processor packs every image of a batch into one `(1, C, P, L)` pixel_values: the
    adapter's `PACKED_DIMS`)."""
    from transformers import MiniCPMOcrConfig, MiniCPMOcrForConditionalGeneration, MiniCPMOcrProcessor
    from transformers.models.minicpm_ocr.image_processing_minicpm_ocr import MiniCPMOcrImageProcessor
    from transformers.models.minicpm_ocr.video_processing_minicpm_ocr import MiniCPMOcrVideoProcessor

    tok = tokenizer("qwen3", tuple(MINICPM_NAMED.values()), MINICPM_NAMED)
    image_processor = MiniCPMOcrImageProcessor(
        scale_resolution=IMAGE, patch_size=PATCH, max_slice_nums=4, downsample_mode="16x"
    )
    processor = MiniCPMOcrProcessor(
        image_processor=image_processor,
        video_processor=MiniCPMOcrVideoProcessor(scale_resolution=IMAGE, patch_size=PATCH, downsample_mode="16x"),
        tokenizer=tok,
        chat_template=CHATML.replace("IMAGE_TEXT", "<unk>\n"),
    )
    text = {
        **llama(tok),
        "model_type": "qwen3_5_text",
        "head_dim": 16,
        "layer_types": ["linear_attention", "full_attention"],
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
    }
    ids = tok.convert_tokens_to_ids
    config = MiniCPMOcrConfig(
        vision_config=vision,
        text_config=text,
        insert_layer_id=0,
        downsample_mode="16x",
        image_token_id=ids("<unk>"),
        video_token_id=ids("<|video_pad|>"),
    )
    return _seeded(MiniCPMOcrForConditionalGeneration, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "perception_lm": perception_lm,
    "fast_vlm": fast_vlm,
    "minimax_m3_vl": minimax_m3_vl,
    "nemotron_h_omni": nemotron_h_omni,
    "step3p7": step3p7,
    "unlimited_ocr": unlimited_ocr,
    "minicpm_ocr": minicpm_ocr,
}
FAMILIES = list(BUILDERS)
LEFT: dict[str, str] = {}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
