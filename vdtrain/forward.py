"""The model forwards the VD loss and the offline filter share: logits only where a label is predicted.

Position `t - 1` predicts `labels[t]`, so the lm_head runs at the `targets_at` positions only when the model's
forward takes a boolean `logits_to_keep` (transformers 5 models do); a model that ignores it gets its full
`(B, L, V)` logits sliced the same way, so callers always see `(N, V)` rows in row-major order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vdtrain.dependence import IGNORE_INDEX, row_logprobs


def targets_at(labels: torch.Tensor) -> torch.Tensor:
    """`(B, L)` bool: the positions whose next label is supervised (where the logits are needed)."""
    return F.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def supervised_targets(labels: torch.Tensor) -> torch.Tensor:
    """`(N,)` the supervised labels in row-major order, aligned with the rows of `supervised_logits`."""
    return labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]


def supervised_logits(
    model: Any, inputs: dict[str, torch.Tensor], targets_at: torch.Tensor, logits_mask: bool
) -> tuple[torch.Tensor, Any]:
    """`((N, V) logits at the `targets_at` positions, the model's outputs)` from one forward of `model(**inputs)`.

    Args:
        inputs: the model's inputs, without `labels` and the collator's loss-only keys.
        targets_at (`torch.Tensor`): `(B, L)` bool, from `targets_at(labels)`.
        logits_mask (`bool`): whether the forward takes `logits_to_keep` (`models.base.accepts_logits_mask`).
    """
    outputs = model(**inputs, **({"logits_to_keep": targets_at} if logits_mask else {}))
    logits = outputs.logits
    return (logits if logits.dim() == 2 else logits[targets_at]), outputs  # (N, V)


@torch.no_grad()
def no_grad_logprobs(
    model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor, logits_mask: bool
) -> torch.Tensor:
    """`(N,)` float32 `log p(label)` of the supervised labels (row-major) from one no-grad forward in eval mode.

    A model in training mode is switched to eval for the pass (no dropout, no gradient checkpointing) and back.
    """
    was_training = model.training
    if was_training:
        model.eval()
    try:
        logits, _ = supervised_logits(model, inputs, targets_at(labels), logits_mask)
    finally:
        if was_training:
            model.train()
    return row_logprobs(logits, supervised_targets(labels))
