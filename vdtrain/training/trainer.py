"""`VDTrainer`: a `transformers.Trainer` whose causal-LM loss is re-weighted by visual dependence (thesis 5.3)."""

from __future__ import annotations

import torch
from transformers import Trainer

from vdtrain.keys import END_OF_TURN_MASK, HAS_IMAGE, LOSS_ONLY_KEYS
from vdtrain.training.checkpoints import FullCheckpointLoading
from vdtrain.training.config import VDTrainingArguments, upgrade_arguments
from vdtrain.training.finite import FiniteSteps
from vdtrain.training.mixin import PIXEL_KEYS, VD_METRICS, VDLossMixin

# Older names of the batch keys, kept for code that imports them from here.
END_OF_TURN_KEY, HAS_IMAGE_KEY, EXTRA_KEYS = END_OF_TURN_MASK, HAS_IMAGE, LOSS_ONLY_KEYS
__all__ = ["EXTRA_KEYS", "PIXEL_KEYS", "VD_METRICS", "VDTrainer"]


class VDTrainer(VDLossMixin, FiniteSteps, FullCheckpointLoading, Trainer):
    """Drop-in `Trainer` with the visual-dependence loss of Eq. 5.5 (`VDLossMixin` on `transformers.Trainer`).

    Before `args.vd_start` (a fraction of the optimizer steps) the loss is the vanilla `Trainer`'s, computed from
    logits at the supervised positions only (`vd_masked_logits`, the same value without float32 `(B, L, V)` logits).
    From then on every training step runs one extra no-grad eval-mode forward with the pixels replaced by a
    diffusion-noised copy, computes `d` (Eq. 5.1) for every supervised token and re-weights the per-token loss with
    `token_weights`. Override `compute_token_weights` to change how `d` becomes weights.

    Args:
        projector_modules (`tuple[str, ...]`, *optional*): parameter-name fragments of the multimodal projector;
            with `args.vd_projector_lr` set they get their own optimizer group (the paper's "MM projector LR").
        end_of_turn_id (`int`, *optional*): token closing an assistant turn; needed by `args.vd_eos_selective`.
        pixel_key (`str`, *optional*): batch key of the image tensor (else `args.vd_pixel_key`, else guessed).
        All other arguments are those of `transformers.Trainer`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        upgrade_arguments(self.args, VDTrainingArguments)  # the user's object itself, given the vd_* defaults

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        """`group_by_length` from the dataset's own `lengths` when it has them (`SupervisedDataset`): the Trainer
        would otherwise read every item, decoding every image, before the first step."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        if getattr(self.args, "train_sampling_strategy", None) != "group_by_length" or lengths is None:
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        group = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler(group, lengths=lengths)
