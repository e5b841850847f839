"""Tiny random-weight models of the OCR and document families (GOT-OCR2, DeepSeek-OCR, MiniCPM-V, Ovis, ...), built
like tests/zoo.py: real npm tokenizers, the PIL image processors, chat templates written like the published ones, a
few layers.

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families in the zoo, `LEFT` the others with why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo import CHATML, IMAGE, PATCH, _seeded, llama, qwen2, siglip, tokenizer
from zoo import DEEPSEEK_TEMPLATE as DEEPSEEK_VL_TEMPLATE
from zoo_torchvision import MISTRAL3_TEMPLATE

# GOT-OCR2's prompt (its checkpoint has no chat template; the processor writes this ChatML itself): a fixed system
# turn, the image as `<img><imgpad>...</img>` on its own line, `<|im_end|>` closing every turn.
GOT_SYSTEM = "You should follow the instructions carefully and explain your answers in detail."
GOT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + GOT_SYSTEM + "<|im_end|>{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<img><imgpad></img>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# DeepSeek's conversation format (DeepSeek-OCR, DeepSeek-VL2): `<|User|>: ` / `<|Assistant|>: ` turns separated by
# blank lines, the image as `<image>` on its own line, EOS closing every answer.
DEEPSEEK_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|User|>: "
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}\n\n"
    "{% elif message['role'] == 'assistant' %}<|Assistant|>: {{ message['content'][0]['text'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)

# Granite's (Granite-Docling): `<|start_of_role|>role<|end_of_role|>`, `<|end_of_text|>` and a newline closing every
# turn, the image as `<image>` before the text.
GRANITE_TEMPLATE = (
    "{% for message in messages %}<|start_of_role|>{{ message['role'] }}<|end_of_role|>"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}<image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|end_of_text|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
)


def got_vision(**extra: Any) -> dict[str, Any]:
    """A two-layer SAM-style GOT-OCR2 tower: 32 px in 4-px patches, two stride-2 convolutions after it (4 tokens)."""
    return {
        "hidden_size": 32,
        "output_channels": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH // 2,
        "window_size": 4,
        "global_attn_indexes": [1],
        "mlp_dim": 64,
        "initializer_range": 0.02,  # 1e-10 by default: the image would not reach the text
        **extra,
    }


def got_ocr2() -> tuple[Any, Any]:
    """GOT-OCR2: a SAM tower, convolutions down to the processor's fixed 256 tokens per image, Qwen2 text model;
    ChatML.

    The processor writes 256 image tokens per image whatever its checkpoint says (`num_image_tokens` is a class
    default that no saved file changes), so the tower makes 256: 64 px in 1-px patches (a 64 x 64 grid, 16 x 16
    after the two stride-2 convolutions), one windowed layer to keep it cheap.
    """
    from transformers import GotOcr2Config, GotOcr2ForConditionalGeneration, GotOcr2ImageProcessorPil, GotOcr2Processor

    # Llama-2's 32k vocabulary, not Qwen's 151k: 256 image tokens a row make full-vocabulary logits the cost
    tok = tokenizer("llama2", ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<imgpad>"))
    size = 64
    image_processor = GotOcr2ImageProcessorPil(size={"height": size, "width": size})
    processor = GotOcr2Processor(image_processor=image_processor, tokenizer=tok, chat_template=GOT_TEMPLATE)
    vision = got_vision(
        image_size=size,
        patch_size=1,
        num_hidden_layers=1,
        hidden_size=16,
        mlp_dim=32,
        window_size=8,
        global_attn_indexes=[],
    )
    config = GotOcr2Config(
        vision_config=vision,
        text_config=qwen2(tok),
        image_token_index=tok.convert_tokens_to_ids("<imgpad>"),
        image_seq_length=processor.num_image_tokens,
    )
    return _seeded(GotOcr2ForConditionalGeneration, config), processor


def pp_chart2table() -> tuple[Any, Any]:
    """PP-Chart2Table: GOT-OCR2's model; the processor expands nothing, the chat template writes every `<imgpad>`."""
    from transformers import GotOcr2ForConditionalGeneration, PPChart2TableConfig, PPChart2TableProcessor
    from transformers.models.pp_chart2table.image_processing_pil_pp_chart2table import (
        PPChart2TableImageProcessorPil,
    )

    tokens = 4
    tok = tokenizer("qwen3", ("<img>", "</img>", "<imgpad>"))
    image_processor = PPChart2TableImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    template = GOT_TEMPLATE.replace("<imgpad>", "<imgpad>" * tokens)
    processor = PPChart2TableProcessor(image_processor=image_processor, tokenizer=tok, chat_template=template)
    config = PPChart2TableConfig(
        vision_config=got_vision(),
        text_config=qwen2(tok),
        image_token_index=tok.convert_tokens_to_ids("<imgpad>"),
        image_seq_length=tokens,
    )
    return _seeded(GotOcr2ForConditionalGeneration, config), processor


def qianfan_ocr() -> tuple[Any, Any]:
    """Qianfan-OCR: InternVL's layout (tiles plus a thumbnail, pixel shuffle), `<image>` in the template expanded to
    `<img><IMG_CONTEXT>...</img>`, Qwen3 text model."""
    from transformers import (
        GotOcr2ImageProcessorPil,
        QianfanOCRConfig,
        QianfanOCRForConditionalGeneration,
        QianfanOCRProcessor,
    )

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>"}
    tok = tokenizer("qwen3", (*named.values(), "<image>"), named)
    image_processor = GotOcr2ImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, min_patches=1, max_patches=4)
    tokens = (IMAGE // PATCH) ** 2 // 4  # pixel shuffle halves each side
    processor = QianfanOCRProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_length=tokens,
        chat_template=CHATML.replace("IMAGE_TEXT", "<image>\n"),
    )
    config = QianfanOCRConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE,
            "patch_size": PATCH,
            "drop_path_rate": 0.0,
        },
        text_config={**qwen2(tok), "model_type": "qwen3", "head_dim": 16},
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=tokens,
    )
    return _seeded(QianfanOCRForConditionalGeneration, config), processor


def deepseek_ocr2() -> tuple[Any, Any]:
    """DeepSeek-OCR-2: a SAM tower whose 3x3 output a causal encoder reads with 144 learned queries (the 768-px
    ones; the processor's count, (size / patch / downsample)^2 + 1 separator, is set to match), a DeepSeek-V2 MoE
    text model. Images no larger than `tile_size` get no local tiles."""
    from transformers import DeepseekOcr2Config, DeepseekOcr2ForConditionalGeneration, DeepseekOcr2Processor
    from transformers.models.deepseek_ocr2.image_processing_pil_deepseek_ocr2 import DeepseekOcr2ImageProcessorPil

    tok = tokenizer("llama2", ("<image>", "<|User|>", "<|Assistant|>"), {"image_token": "<image>"})
    side = 48  # 12 x 12 processor patches: the 144 queries of the 768-px view
    image_processor = DeepseekOcr2ImageProcessorPil(size={"height": side, "width": side}, tile_size=side)
    processor = DeepseekOcr2Processor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=4,
        downsample_ratio=1,
        chat_template=DEEPSEEK_TEMPLATE,
    )
    sam = {**got_vision(), "image_size": side, "downsample_channels": [16, 32]}
    sam.pop("mlp_dim")
    encoder = {**qwen2(tok, hidden=32), "model_type": None, "vocab_size": 16, "num_attention_heads": 2}
    text = {
        **llama(tok),
        "model_type": None,
        "mlp_layer_types": ["dense", "sparse"],
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "moe_intermediate_size": 32,
    }
    config = DeepseekOcr2Config(
        vision_config={"sam_config": sam, "encoder_config": encoder},
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    return _seeded(DeepseekOcr2ForConditionalGeneration, config), processor


def deepseek_vl_hybrid() -> tuple[Any, Any]:
    """DeepSeek-VL (hybrid): a SigLIP tower on the low-res view beside a SAM tower on a 2x view, aligned to 16
    tokens per image; DeepSeek-VL's chat format."""
    from transformers import (
        DeepseekVLHybridConfig,
        DeepseekVLHybridForConditionalGeneration,
        DeepseekVLHybridProcessor,
    )
    from transformers.models.deepseek_vl_hybrid.image_processing_pil_deepseek_vl_hybrid import (
        DeepseekVLHybridImageProcessorPil,
    )

    tok = tokenizer("llama2", ("<image_placeholder>",), {"image_token": "<image_placeholder>"})
    image_processor = DeepseekVLHybridImageProcessorPil(
        size={"height": IMAGE, "width": IMAGE}, high_res_size={"height": 2 * IMAGE, "width": 2 * IMAGE}
    )
    tokens = (IMAGE // PATCH) ** 2
    processor = DeepseekVLHybridProcessor(
        image_processor=image_processor, tokenizer=tok, chat_template=DEEPSEEK_VL_TEMPLATE, num_image_tokens=tokens
    )
    sam = {**got_vision(), "model_type": "sam_vision_model", "image_size": 2 * IMAGE, "patch_size": PATCH}
    config = DeepseekVLHybridConfig(
        vision_config=siglip(),
        high_res_vision_config=sam,
        text_config=llama(tok),
        image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"),
    )
    return _seeded(DeepseekVLHybridForConditionalGeneration, config), processor


def granite_docling() -> tuple[Any, Any]:
    """Granite-Docling: Idefics3's tiles (`<row_r_col_c>` tags, a global image), a SigLIP-like tower with a
    pixel-shuffle connector, Granite text model."""
    from transformers import (
        GraniteDoclingConfig,
        GraniteDoclingForConditionalGeneration,
        GraniteDoclingImageProcessorPil,
        GraniteDoclingProcessor,
    )

    specials = ("<fake_token_around_image>", "<image>", "<global-img>", "<|start_of_role|>", "<|end_of_role|>")
    tok = tokenizer("llama3", specials, {"image_token": "<image>"})
    image_processor = GraniteDoclingImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, max_patches=4)
    processor = GraniteDoclingProcessor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=GRANITE_TEMPLATE
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
        "out_hidden_size": 64,
        "scale_factor": 2,
    }
    config = GraniteDoclingConfig(
        vision_config=vision,
        # Granite's 12x embedding multiplier would drown the (unscaled) image features of a random tower
        text_config={**llama(tok), "model_type": None, "embedding_multiplier": 1.0},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.eos_token_id,
    )
    return _seeded(GraniteDoclingForConditionalGeneration, config), processor


def pixtral_vision(**extra: Any) -> dict[str, Any]:
    """A two-layer Pixtral tower over 8-px patches."""
    return {
        "model_type": "pixtral",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "head_dim": 16,
        "image_size": IMAGE,
        "patch_size": PATCH,
        **extra,
    }


def lighton_ocr() -> tuple[Any, Any]:
    """LightOnOCR: a Pixtral tower (image sizes kept, padded in the batch), 2x2 patch merging, Qwen3 text model;
    ChatML with the image as `<|image_pad|>`."""
    from transformers import (
        LightOnOcrConfig,
        LightOnOcrForConditionalGeneration,
        LightOnOcrProcessor,
        PixtralImageProcessorPil,
    )

    named = {
        "image_token": "<|image_pad|>",
        "image_break_token": "<|vision_pad|>",
        "image_end_token": "<|vision_end|>",
    }
    tok = tokenizer("qwen3", tuple(named.values()), named)
    merged = {"height": 2 * PATCH, "width": 2 * PATCH}  # the processor's sizes are multiples of merged patches
    image_processor = PixtralImageProcessorPil(size={"longest_edge": IMAGE}, patch_size=merged)
    processor = LightOnOcrProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        spatial_merge_size=2,
        chat_template=CHATML.replace("IMAGE_TEXT", "<|image_pad|>"),
    )
    config = LightOnOcrConfig(
        vision_config=pixtral_vision(),
        text_config={**qwen2(tok), "model_type": "qwen3", "head_dim": 16},
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        spatial_merge_size=2,
    )
    return _seeded(LightOnOcrForConditionalGeneration, config), processor


def mistral_large4() -> tuple[Any, Any]:
    """Mistral-Large-4: a Pixtral tower (`[IMG_BREAK]` after every row, `[IMG_END]`), a DeepSeek-V3-style text model
    (latent attention, a top-k indexer, MoE)."""
    from transformers import (
        MistralLarge4Config,
        MistralLarge4ForConditionalGeneration,
        PixtralImageProcessorPil,
        PixtralProcessor,
    )

    tok = tokenizer("llama2", ("[IMG]", "[IMG_BREAK]", "[IMG_END]", "[INST]", "[/INST]"))
    patch = {"height": PATCH, "width": PATCH}
    image_processor = PixtralImageProcessorPil(size={"longest_edge": IMAGE}, patch_size=patch)
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=PATCH,
        spatial_merge_size=2,
        chat_template=MISTRAL3_TEMPLATE,
    )
    text = {
        **llama(tok),
        "model_type": None,
        "moe_intermediate_size": 32,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "kv_lora_rank": 16,
        "q_lora_rank": 32,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 16,
        "index_head_dim": 16,
        "index_n_heads": 2,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512 * 2048,  # what its YaRN factor over a 512-token window implies
    }
    config = MistralLarge4Config(
        vision_config=pixtral_vision(),
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
    )
    return _seeded(MistralLarge4ForConditionalGeneration, config), processor


OVIS_INDICATORS = ("<IMG_START>", "<IMG_GRID>", "<IMG_COL>", "<IMG_ROW>", "<IMG_END>")


def ovis2() -> tuple[Any, Any]:
    """Ovis2: a visual tokenizer (probabilities over a visual vocabulary, embedded by a table), `<image>` expanded to
    `<IMG_START><IMG_ATOM>...<IMG_GRID>...<IMG_END>`, Qwen2 text model, ChatML."""
    from transformers import Ovis2Config, Ovis2ForConditionalGeneration, Ovis2ImageProcessorPil, Ovis2Processor

    tok = tokenizer("qwen3", ("<image>", "<IMG_ATOM>", *OVIS_INDICATORS))
    image_processor = Ovis2ImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    tokens = (IMAGE // PATCH // 2) ** 2  # hidden stride 2
    processor = Ovis2Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_length=tokens,
        chat_template=CHATML.replace("IMAGE_TEXT", "<image>\n"),
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
        "vocab_size": 64,
        "hidden_stride": 2,
    }
    config = Ovis2Config(
        vision_config=vision,
        text_config=qwen2(tok),
        image_token_id=tok.convert_tokens_to_ids("<IMG_ATOM>"),
        visual_indicator_token_ids=tok.convert_tokens_to_ids(list(OVIS_INDICATORS)),
        vocab_size=len(tok),
        hidden_size=64,
    )
    return _seeded(Ovis2ForConditionalGeneration, config), processor


def ovis2_5() -> tuple[Any, Any]:
    """Ovis2.5: a native-resolution SigLIP2 tower (Qwen2-VL-style `image_grid_thw`), a visual tokenizer with
    indicator tokens, `<image>` expanded between start and end tokens, Qwen3 text model, ChatML."""
    from transformers import (
        Ovis2_5Config,
        Ovis2_5ForConditionalGeneration,
        Ovis2_5ImageProcessorPil,
        Ovis2_5Processor,
    )
    from transformers.video_processing_utils import VideoProcessorMixin

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    named = {
        "image_token": "<image>",
        "video_token": "<video>",
        "image_start_token": "<ovis_image_start>",
        "image_end_token": "<ovis_image_end>",
        "video_start_token": "<ovis_video_start>",
        "video_end_token": "<ovis_video_end>",
    }
    tok = tokenizer("qwen3", tuple(named.values()), named)
    image_processor = Ovis2_5ImageProcessorPil(
        patch_size=PATCH, merge_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    )
    processor = Ovis2_5Processor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=VideoProcessorMixin(),
        chat_template=CHATML.replace("IMAGE_TEXT", "<image>\n"),
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": PATCH,
        "image_size": IMAGE,
        "window_size": 2 * IMAGE,
        "vocab_size": 64,
    }
    ids = tok.convert_tokens_to_ids
    config = Ovis2_5Config(
        vision_config=vision,
        text_config={**qwen2(tok), "model_type": "qwen3", "head_dim": 16},
        image_token_id=ids("<image>"),
        video_token_id=ids("<video>"),
        image_start_token_id=ids("<ovis_image_start>"),
        image_end_token_id=ids("<ovis_image_end>"),
        video_start_token_id=ids("<ovis_video_start>"),
        video_end_token_id=ids("<ovis_video_end>"),
    )
    return _seeded(Ovis2_5ForConditionalGeneration, config), processor


def _minicpmv(version: str) -> tuple[Any, Any]:
    """MiniCPM-V 4.6 / 4.7: a NaViT tower with a merger inside it and after it (16 patches to a token), images
    sliced into a grid plus the whole, every image's patches packed side by side in one `(1, C, P, L)` tensor, a
    Qwen3.5 text model (linear and full attention); ChatML with the image as `<|image_pad|>`."""
    import transformers
    from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil
    from transformers.models.minicpmv4_6.video_processing_minicpmv4_6 import MiniCPMV4_6VideoProcessor

    from vdtrain.models.generic import allow_processors_without_torchvision

    allow_processors_without_torchvision()
    named = {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "image_start_token": "<image>",
        "image_end_token": "</image>",
        "slice_start_token": "<slice>",
        "slice_end_token": "</slice>",
        "image_id_start_token": "<image_id>",
        "image_id_end_token": "</image_id>",
    }
    tok = tokenizer("qwen3", tuple(named.values()), named)
    sizes = {"scale_resolution": IMAGE, "patch_size": PATCH}
    processor = getattr(transformers, f"MiniCPMV{version}Processor")(
        image_processor=MiniCPMV4_6ImageProcessorPil(**sizes, max_slice_nums=4),
        video_processor=MiniCPMV4_6VideoProcessor(**sizes),
        tokenizer=tok,
        chat_template=CHATML.replace("IMAGE_TEXT", "<|image_pad|>\n"),
    )
    text = {
        **qwen2(tok),
        "model_type": "qwen3_5_text",
        "head_dim": 16,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "layer_types": ["linear_attention", "full_attention"],
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
    }
    config = getattr(transformers, f"MiniCPMV{version}Config")(
        vision_config=vision,
        text_config=text,
        insert_layer_id=1,
        image_size=IMAGE,
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
    )
    return _seeded(getattr(transformers, f"MiniCPMV{version}ForConditionalGeneration"), config), processor


def minicpmv4_6() -> tuple[Any, Any]:
    """MiniCPM-V 4.6."""
    return _minicpmv("4_6")


def minicpmv4_7() -> tuple[Any, Any]:
    """MiniCPM-V 4.7 (4.6's image processor; its processor adds `mm_token_type_ids`)."""
    return _minicpmv("4_7")


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "got_ocr2": got_ocr2,
    "pp_chart2table": pp_chart2table,
    "qianfan_ocr": qianfan_ocr,
    "deepseek_ocr2": deepseek_ocr2,
    "deepseek_vl_hybrid": deepseek_vl_hybrid,
    "granite_docling": granite_docling,
    "lighton_ocr": lighton_ocr,
    "mistral_large4": mistral_large4,
    "ovis2": ovis2,
    "ovis2_5": ovis2_5,
    "minicpmv4_6": minicpmv4_6,
    "minicpmv4_7": minicpmv4_7,
}
FAMILIES = list(BUILDERS)
NEEDS_TORCHVISION = {"mistral_large4"}  # PixtralProcessor requires torchvision
LEFT: dict[str, str] = {}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
