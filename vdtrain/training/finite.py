"""A diverged run never reports success: a non-finite loss or gradient norm stops training with one line naming the
step (or, with `skip_nonfinite_steps`, skips that optimizer step), and non-finite weights are never saved as a
complete checkpoint or adapter.

transformers' own `logging_nan_inf_filter` only hides a NaN loss from the logs (`'loss': 0`) while the NaN gradients
are still applied, so a run at `learning_rate: 1e30` exits 0 with every adapter weight NaN.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from vdtrain.errors import TrainingDiverged

logger = logging.getLogger(__name__)


def nonfinite_parameters(model: torch.nn.Module, trainable_only: bool = True) -> list[str]:
    """Names of the (trainable) parameters holding a NaN or an infinity."""
    return [
        name
        for name, parameter in model.named_parameters()
        if (parameter.requires_grad or not trainable_only) and not torch.isfinite(parameter.detach()).all()
    ]


def check_finite_weights(model: torch.nn.Module, what: str) -> None:
    """Raise `TrainingDiverged` naming `what` (e.g. "checkpoint-4 not saved") if a trained weight is not finite."""
    bad = nonfinite_parameters(model)
    if bad:
        trained = sum(1 for parameter in model.parameters() if parameter.requires_grad)
        raise TrainingDiverged(
            f"{len(bad)} of {trained} trained tensors hold NaN or infinite values (e.g. {bad[0]}): {what}. "
            "Lower the learning rate or use bfloat16/float32"
        )


class FiniteSteps:
    """`Trainer` mixin: stop (or skip the step, `args.skip_nonfinite_steps`) when the loss or the gradient norm of
    an optimizer step is not finite, before the optimizer applies it; refuse to save non-finite weights."""

    _vd_nonfinite_loss: float | None = None
    vd_skipped_steps: int = 0

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = super().training_step(model, inputs, *args, **kwargs)
        if self._vd_nonfinite_loss is None and not torch.isfinite(loss.detach()).all():  # the NaN filter syncs too
            self._vd_nonfinite_loss = float(loss.detach().float().sum())
        return loss

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        loss, self._vd_nonfinite_loss = self._vd_nonfinite_loss, None
        norm = float(grad_norm) if grad_norm is not None else 0.0
        if self.args.world_size > 1:
            loss = None  # one process's loss; the all-reduced gradient norm is what every process agrees on
        if loss is None and math.isfinite(norm):
            return grad_norm
        step = self.state.global_step + 1
        parts = [f"the loss is {loss}"] if loss is not None else []
        parts += [f"the gradient norm is {norm}"] if not math.isfinite(norm) else []
        went = " and ".join(parts)
        if getattr(self.args, "skip_nonfinite_steps", False):
            logger.warning("vdtrain: step %d skipped (%s): the weights are left as they were", step, went)
            model.zero_grad(set_to_none=True)  # the optimizer leaves parameters without gradients untouched
            self.vd_skipped_steps += 1
            return grad_norm
        raise TrainingDiverged(f"step {step}: {went}; {self._kept()}. {self._advice()}")

    def _kept(self) -> str:
        from vdtrain.training.checkpoints import complete_checkpoints

        kept = complete_checkpoints(self.args.output_dir)
        newest = f"newest complete checkpoint: {kept[-1]}" if kept else "no checkpoint was saved yet"
        return f"stopped before applying it ({newest})"

    def _advice(self) -> str:
        return (
            "Lower the learning rate, use bfloat16/float32 instead of float16, or pass --skip_nonfinite_steps true to "
            "skip such steps"
        )

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        check_finite_weights(self.model, f"checkpoint-{self.state.global_step} was not saved; {self._advice()}")
        return super()._save_checkpoint(model, trial)
