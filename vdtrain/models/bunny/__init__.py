"""Native transformers-5 port of Bunny-v1.1-Llama-3-8B-V; importing this package registers it with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

from .configuration_bunny import LLAMA3_IMAGE_TOKEN_ID, BunnyConfig
from .convert import PUBLISHED_KEY_MAPPING
from .modeling_bunny import (
    BunnyForConditionalGeneration,
    BunnyModel,
    BunnyPreTrainedModel,
    merge_chessboard,
    s2_forward,
    split_chessboard,
)

AutoConfig.register(BunnyConfig.model_type, BunnyConfig, exist_ok=True)
AutoModel.register(BunnyConfig, BunnyModel, exist_ok=True)
AutoModelForImageTextToText.register(BunnyConfig, BunnyForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(BunnyConfig, BunnyForConditionalGeneration, exist_ok=True)

__all__ = [
    "LLAMA3_IMAGE_TOKEN_ID",
    "PUBLISHED_KEY_MAPPING",
    "BunnyConfig",
    "BunnyForConditionalGeneration",
    "BunnyModel",
    "BunnyPreTrainedModel",
    "merge_chessboard",
    "s2_forward",
    "split_chessboard",
]
