"""The visual-dependence loss inside TRL: `VDSFTConfig` (`SFTConfig` + the `vd_*` fields) and `VDSFTTrainer`.

`VDSFTTrainer` is `VDLossMixin` in front of `trl.SFTTrainer`. Before `vd_start` every step is `SFTTrainer`'s own. From
`vd_start` it still is, with one change: the per-token log-probabilities of TRL's fused LM head (no full logits are
built) are scaled by the VD weights before TRL reduces them, so TRL's loss reduction, its entropy/token-accuracy
metrics, its VLM collator and `assistant_only_loss`/`completion_only_loss` all stay TRL's. The noisy pass uses the
same fused head under `torch.no_grad()`. Needs `pip install vdtrain[trl]`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from transformers import TrainingArguments
from trl import SFTConfig, SFTTrainer

from vdtrain.method.passes import eval_pass
from vdtrain.models.generic import end_of_turn_token
from vdtrain.training.checkpoints import FullCheckpointLoading
from vdtrain.training.config import VDArguments, upgrade_arguments, vd_options
from vdtrain.training.finite import FiniteSteps
from vdtrain.training.mixin import StepMasks, VDLossMixin

__all__ = ["VDSFTConfig", "VDSFTTrainer", "end_of_turn_token_id"]


@dataclass
class VDSFTConfig(VDArguments, SFTConfig):
    """TRL's `SFTConfig` plus the `vd_*` fields of `VDTrainingArguments` (same names, same defaults) and its
    `skip_nonfinite_steps`."""

    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={"help": "Skip optimizer steps whose loss or gradient norm is not finite instead of stopping."},
    )


class VDSFTTrainer(VDLossMixin, FiniteSteps, FullCheckpointLoading, SFTTrainer):
    """`trl.SFTTrainer` with the visual-dependence loss of Eq. 5.5 from `vd_start` on.

    Takes `SFTTrainer`'s arguments plus `projector_modules`, `end_of_turn_id` and `pixel_key` (see `VDLossMixin`).
    Without `end_of_turn_id`, the end-of-turn token of the EOS floor is the one the processor's chat template closes
    an assistant turn with (`end_of_turn_token_id`). `args` may be a `VDSFTConfig`, any `TrainingArguments` (the
    `vd_*` fields it has are kept) or None. An `SFTConfig` stays the object passed (`trainer.args is args`, as with
    `SFTTrainer`), given the `vd_*` fields in place; other `TrainingArguments` become a `VDSFTConfig`, as
    `SFTTrainer` makes them an `SFTConfig`. Checkpoints are resumed as by `VDTrainer` (`FullCheckpointLoading`):
    complete ones only, and a full fine-tune's weights by the names they were saved under. A diverged run stops as
    `VDTrainer`'s does (`FiniteSteps`): a non-finite loss or gradient norm raises `TrainingDiverged` naming the step
    before the optimizer applies it (or skips that step with `skip_nonfinite_steps=True`).
    """

    def __init__(self, model, args: TrainingArguments | None = None, *positional, **kwargs) -> None:
        if isinstance(args, SFTConfig):
            upgrade_arguments(args, VDSFTConfig)
        elif isinstance(args, TrainingArguments):
            names = {spec.name for spec in fields(VDSFTConfig) if spec.init}
            values = {key: value for key, value in args.to_dict().items() if key in names}
            # to_dict hides every `*_token` field (hub_token, SFTConfig's eos_token/pad_token) behind "<NAME>"
            values.update({key: getattr(args, key) for key in values if key.endswith("_token")})
            with warnings.catch_warnings():  # the user's config already warned about its deprecated fields
                warnings.simplefilter("ignore", FutureWarning)
                upgraded = VDSFTConfig(**values)
            for spec in fields(args):  # the fields of a project's own config class stay readable on trainer.args
                if spec.name not in names and not hasattr(upgraded, spec.name):
                    setattr(upgraded, spec.name, getattr(args, spec.name))
            args = upgraded
        if args is not None:
            _check_args(args)
        super().__init__(model, args, *positional, **kwargs)
        _check_parallelism(self.accelerator.parallelism_config, self.vd.vd_start)  # also set by an accelerate YAML
        if self._shift == 0 and self.vd.vd_start < 1.0 and self.vd_off_reason is None:
            raise ValueError(
                f"VDSFTTrainer: {type(self.model).__name__} is an encoder-decoder model, and TRL's SFT scores each "
                "label from the position before it in one prompt + answer sequence (causal LMs); train it with "
                "vdtrain.VDTrainer on a vdtrain.data.SupervisedDataset (EncoderDecoderAdapter), or set vd_start=1.0"
            )
        if self.end_of_turn_id is None:
            self.end_of_turn_id = end_of_turn_token_id(self.processing_class)

    def _vd_masked_logits(self, model) -> bool:
        return False  # TRL's fused LM head already never builds the logits

    def _vd_loss(self, model, inputs, masks: StepMasks, active, return_outputs, num_items_in_batch):
        """`SFTTrainer.compute_loss` on a stand-in for the model that re-weights the fused head's log-probs."""
        reweighting = _ReweightedForward(self, model, masks)
        return SFTTrainer.compute_loss(self, reweighting, inputs, return_outputs, num_items_in_batch)

    def _no_grad_logprobs(self, model, inputs, masks: StepMasks) -> torch.Tensor:
        """`(B, L)` target log-probs from TRL's fused LM head, in an `eval_pass` (no dropout, no checkpointing)."""
        with eval_pass(model):
            outputs = model(**inputs, labels=masks.labels, fused_lm_head=True)
            return F.pad(outputs.log_probs.float(), (1, 0))  # the fused head scores labels[:, 1:]


def _check_args(args: SFTConfig) -> None:
    """Refuse, before any data is prepared, the SFT options the VD loss cannot re-weight."""
    options = vd_options(args)
    if options["vd_eos_selective"]:
        raise ValueError(
            "vd_eos_selective needs the full softmax at each supervised position, which TRL's fused LM head never "
            "builds; use vdtrain.VDTrainer for the selective EOS baseline"
        )
    if options["vd_start"] < 1.0 and args.loss_type != "nll":
        raise ValueError(f"the VD loss re-weights the NLL; loss_type={args.loss_type!r} is not it")
    if options["vd_start"] < 1.0 and (args.packing or args.padding_free):
        raise ValueError(
            "VDSFTTrainer: packing / padding_free put several samples in one row, and the VD weights are a softmax "
            "over each sample's tokens; set packing=False and padding_free=False (or vd_start=1.0)"
        )
    _check_parallelism(getattr(args, "parallelism_config", None), options["vd_start"])


def _check_parallelism(config, vd_start: float) -> None:
    """Refuse sequence or context parallelism: each rank holds a slice of every sample, and the VD weights are a
    softmax over a whole sample's tokens (under DeepSpeed Ulysses, SFTTrainer takes the unweighted model loss)."""
    if vd_start < 1.0 and config is not None and (config.sp_enabled or config.cp_enabled):
        raise ValueError(
            "VDSFTTrainer: sequence/context parallelism (sp_size/cp_size > 1) splits each sample across ranks, and "
            "the VD weights are a softmax over each sample's tokens; train without it (or set vd_start=1.0)"
        )


class _ReweightedForward:
    """Stands in for the model in `SFTTrainer.compute_loss`: runs it, then multiplies the per-token log-probs of the
    fused LM head by the (detached) VD weights, so TRL's `-log_probs.sum() / num_tokens` is the loss of Eq. 5.5."""

    def __init__(self, trainer: VDSFTTrainer, model, masks: StepMasks) -> None:
        self.trainer, self.model, self.masks = trainer, model, masks

    def __call__(self, **kwargs):
        if not kwargs.get("fused_lm_head") and "labels" not in kwargs:
            return self.model(**kwargs)  # the logits forward of `return_outputs=True`: no loss to re-weight
        if not kwargs.get("fused_lm_head"):
            raise RuntimeError("VDSFTTrainer expects SFTTrainer to call the fused LM head (loss_type='nll')")
        if kwargs["labels"] is not self.masks.labels:
            raise RuntimeError("VDSFTTrainer: SFTTrainer.compute_loss passed other labels than the batch's")
        inputs = {key: value for key, value in kwargs.items() if key not in ("labels", "fused_lm_head")}
        noisy = self.trainer._noisy_pass(self.model, inputs, self.masks)  # before the graph is built
        outputs = self.model(**kwargs)
        log_probs = outputs.log_probs  # (B, L - 1), aligned with labels[:, 1:], 0 where ignored
        logp_clean = log_probs.detach()[self.masks.supervised[:, 1:]]  # (N,)
        weights = self.trainer._visual_dependence_weights(noisy, self.masks, logp_clean)  # (B, L)
        outputs.log_probs = log_probs * weights[:, 1:].to(log_probs.dtype)
        return outputs

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def end_of_turn_token_id(processing_class) -> int | None:
    """The id of the special token the chat template closes an assistant turn with (`<|im_end|>`, `<end_of_turn>`,
    `</s>`); the tokenizer's EOS when the template has none or closes with text (`generic.end_of_turn_token`)."""
    return end_of_turn_token(processing_class)[1]
