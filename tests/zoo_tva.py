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
            **llama(tok),
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


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "apertus1p5": apertus1p5,
}
FAMILIES = list(BUILDERS)
LEFT: dict[str, str] = {}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
