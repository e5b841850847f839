"""Model-family adapters, looked up by `config.model_type`; importing this package registers them all."""

import vdtrain.models.bunny  # noqa: F401  (registers the native Bunny port with the Auto classes)
from vdtrain.errors import ConversationError
from vdtrain.models.base import (
    Example,
    ModelAdapter,
    get_adapter,
    register_adapter,
)
from vdtrain.models.bunny.adapter import BunnyAdapter
from vdtrain.models.encdec import (
    DecoderPromptAdapter,
    EncoderDecoderAdapter,
    Pix2StructAdapter,
    PPFormulaNetAdapter,
    UdopAdapter,
)
from vdtrain.models.generic import ChatTemplateAdapter, Gemma3Adapter, Qwen2VLAdapter
from vdtrain.models.idefics import IdeficsAdapter
from vdtrain.models.instructblip import InstructBlipAdapter, InstructBlipVideoAdapter
from vdtrain.models.kosmos2 import Kosmos2Adapter
from vdtrain.models.llava import LlavaAdapter
from vdtrain.models.paligemma import PaliGemmaAdapter
from vdtrain.models.plain import PromptAnswerAdapter

__all__ = [
    "BunnyAdapter",
    "ChatTemplateAdapter",
    "ConversationError",
    "DecoderPromptAdapter",
    "EncoderDecoderAdapter",
    "Example",
    "Gemma3Adapter",
    "IdeficsAdapter",
    "InstructBlipAdapter",
    "InstructBlipVideoAdapter",
    "Kosmos2Adapter",
    "LlavaAdapter",
    "ModelAdapter",
    "PPFormulaNetAdapter",
    "PaliGemmaAdapter",
    "Pix2StructAdapter",
    "PromptAnswerAdapter",
    "Qwen2VLAdapter",
    "UdopAdapter",
    "get_adapter",
    "register_adapter",
]
