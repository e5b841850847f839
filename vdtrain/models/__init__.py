"""Model-family adapters, looked up by `config.model_type`."""

from vdtrain.models.base import (
    ConversationError,
    Example,
    ModelAdapter,
    get_adapter,
    register_adapter,
    registered_adapters,
)
from vdtrain.models.llava import LlavaAdapter

__all__ = [
    "ConversationError",
    "Example",
    "LlavaAdapter",
    "ModelAdapter",
    "get_adapter",
    "register_adapter",
    "registered_adapters",
]
