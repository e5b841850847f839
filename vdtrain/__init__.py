"""vdtrain: fine-tune vision-language models to hallucinate fewer objects by re-weighting the loss with each
token's visual dependence (thesis chapter 5, Eq. 5.1-5.5)."""

from vdtrain.config import VDTrainingArguments
from vdtrain.dependence import target_logprobs, visual_dependence
from vdtrain.mixin import VDLossMixin
from vdtrain.noise import add_diffusion_noise
from vdtrain.trainer import VDTrainer
from vdtrain.weighting import register_weighting, token_weights

__version__ = "0.1.0"
__all__ = [
    "VDLossMixin",
    "VDTrainer",
    "VDTrainingArguments",
    "add_diffusion_noise",
    "register_weighting",
    "target_logprobs",
    "token_weights",
    "visual_dependence",
]
