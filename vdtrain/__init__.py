"""vdtrain: fine-tune vision-language models to hallucinate fewer objects by re-weighting the loss with each
token's visual dependence (thesis chapter 5, Eq. 5.1-5.5).

The names below load on first use (PEP 562), so `import vdtrain` and `vdtrain --help` do not import torch or
transformers; `from vdtrain import VDTrainer` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
_LAZY = {
    "VDLossMixin": "vdtrain.training.mixin",
    "VDTrainer": "vdtrain.training.trainer",
    "VDTrainingArguments": "vdtrain.training.config",
    "add_diffusion_noise": "vdtrain.method.noise",
    "load_for_training": "vdtrain.models.loading",
    "register_weighting": "vdtrain.method.weighting",
    "target_logprobs": "vdtrain.method.dependence",
    "token_weights": "vdtrain.method.weighting",
    "visual_dependence": "vdtrain.method.dependence",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # names for type checkers and IDEs
    from vdtrain.method.dependence import target_logprobs, visual_dependence  # noqa: F401
    from vdtrain.method.noise import add_diffusion_noise  # noqa: F401
    from vdtrain.method.weighting import register_weighting, token_weights  # noqa: F401
    from vdtrain.models.loading import load_for_training  # noqa: F401
    from vdtrain.training.config import VDTrainingArguments  # noqa: F401
    from vdtrain.training.mixin import VDLossMixin  # noqa: F401
    from vdtrain.training.trainer import VDTrainer  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vdtrain' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
