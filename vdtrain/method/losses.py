"""Per-token cross-entropy on supervised positions, with the selective EOS supervision option."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_token_nll(logits: torch.Tensor, targets: torch.Tensor, *, eos_id: int | None = None) -> torch.Tensor:
    """`-log p(target)` per row in float32, as the HF causal-LM loss computes it.

    With `eos_id` given this is selective EOS supervision (Yue et al. 2024): rows whose target is not the
    end-of-turn token take the softmax over every token but `eos_id`; rows whose target is it keep the full softmax.

    Args:
        logits (`torch.Tensor`): `(N, V)` logits of the supervised positions.
        targets (`torch.Tensor`): `(N,)` target ids.
        eos_id (`int`, *optional*): end-of-turn token id for selective EOS supervision.
    """
    logits = logits.float()
    if eos_id is not None:
        keep_eos = (targets == eos_id)[:, None]  # (N, 1)
        eos_logit = logits[:, eos_id : eos_id + 1]
        masked = torch.where(keep_eos, eos_logit, torch.full_like(eos_logit, float("-inf")))
        index = torch.full_like(targets[:, None], eos_id)
        logits = logits.scatter(-1, index, masked)  # out of place: autograd sees a fresh tensor
    return F.cross_entropy(logits, targets, reduction="none")
