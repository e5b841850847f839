"""Target log-probabilities and visual dependence d (thesis Eq. 5.1), as pure tensor functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
POSITIVE_THRESHOLD = 0.25  # d > 0.25: image-positive; d < -0.25: image-negative; else image-invariant
TOKEN_GROUPS = {1: "pos", 0: "inv", -1: "neg"}  # `token_groups` value -> name


# Elements of float32 logits converted per chunk. On CPU a chunk that stays in cache (32 rows of a 32k vocabulary)
# makes the log-softmax ~3.5x faster than one over 1024 rows; on GPU bigger chunks mean fewer kernel launches,
# and the budget still bounds the float32 copy of a 256k-vocabulary model (Gemma) to 128 MiB.
CHUNK_ELEMENTS = {"cpu": 2**20, "cuda": 2**25}


def row_logprobs(logits: torch.Tensor, targets: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """`log softmax(logits)[target]` per row, `(N,)` float32, converting a bounded number of rows at a time.

    Args:
        logits (`torch.Tensor`): `(N, V)` in any float dtype.
        targets (`torch.Tensor`): `(N,)` token ids (all valid).
        chunk_size (`int`, *optional*): rows per chunk; by default `CHUNK_ELEMENTS[device] // V` (at least 1).
    """
    if chunk_size is None:
        budget = CHUNK_ELEMENTS.get(logits.device.type, CHUNK_ELEMENTS["cuda"])
        chunk_size = max(1, budget // max(1, logits.shape[-1]))
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=logits.device)
    for start in range(0, targets.shape[0], chunk_size):
        rows = logits[start : start + chunk_size].float()  # (c, V): the only float32 copy
        out[start : start + chunk_size] = -F.cross_entropy(rows, targets[start : start + chunk_size], reduction="none")
    return out


def target_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX, chunk_size: int = 32
) -> torch.Tensor:
    """Log-probability of each label under the logits of the position before it, `(B, L)` float32.

    Labels follow the HF convention (aligned with `input_ids`): position `t` holds
    `log p(labels[t] | tokens < t)`, read from `logits[:, t - 1]`. Position 0 and ignored positions hold 0.
    Works over chunks of the sequence (logit at target minus logsumexp), so no float32 copy of the whole
    `(B, L, V)` logits is ever made.

    Args:
        logits (`torch.Tensor`): `(B, L, V)` in any float dtype.
        labels (`torch.Tensor`): `(B, L)` token ids, `ignore_index` where unsupervised.
        chunk_size (`int`, defaults to 32): sequence positions converted to float32 at a time.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not align")
    batch, length = labels.shape
    out = torch.zeros(batch, length, dtype=torch.float32, device=logits.device)
    targets = labels[:, 1:]  # (B, L-1)
    valid = targets != ignore_index
    safe_targets = targets.masked_fill(~valid, 0)
    for b in range(batch):  # one row at a time keeps each slice contiguous: no hidden copies
        rows = valid[b].nonzero().squeeze(-1)  # supervised target positions - 1
        if rows.numel() == 0:
            continue
        first, last = int(rows[0]), int(rows[-1]) + 1
        for start in range(first, last, chunk_size):
            stop = min(start + chunk_size, last)
            out[b, start + 1 : stop + 1] = row_logprobs(logits[b, start:stop], safe_targets[b, start:stop])
    out[:, 1:] *= valid
    return out


def visual_dependence(logp_clean: torch.Tensor, logp_noisy: torch.Tensor) -> torch.Tensor:
    """`d = (p_c - p_n) / max(p_c, p_n)` (Eq. 5.1) in the stable form `sign(lc - ln) (1 - exp(-|lc - ln|))`.

    Args:
        logp_clean (`torch.Tensor`): log p(y_t | y_<t, v), any shape.
        logp_noisy (`torch.Tensor`): log p(y_t | y_<t, v*), same shape.

    Returns:
        `torch.Tensor` of the same shape with values in `[-1, 1]`.
    """
    delta = logp_clean.float() - logp_noisy.float()
    return torch.sign(delta) * -torch.expm1(-delta.abs())


def token_groups(d: torch.Tensor) -> torch.Tensor:
    """The thesis' three token classes of each `d`, as int8: 1 image-positive (d > 0.25), -1 image-negative
    (d < -0.25), 0 image-invariant. The one place the threshold is applied."""
    return (d > POSITIVE_THRESHOLD).to(torch.int8) - (d < -POSITIVE_THRESHOLD).to(torch.int8)


def token_group(d: float) -> str:
    """`pos`, `neg` or `inv`: `token_groups` of one value."""
    return TOKEN_GROUPS[int(token_groups(torch.tensor(d, dtype=torch.float64)))]


def dependence_stats_tensor(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean `d` and the shares of image-positive / -negative / -invariant tokens over `mask` (all 0 if it is empty),
    as a `(4,)` float32 tensor on `d`'s device, computed without a host sync (the trainer's `vd_*` metrics)."""
    mask = mask.bool()
    count = mask.sum().clamp_min(1).float()
    values = d.float() * mask
    groups = token_groups(d)
    pos = ((groups == 1) & mask).sum() / count
    neg = ((groups == -1) & mask).sum() / count
    inv = (mask.any().float() - pos - neg).clamp_min(0)
    return torch.stack([values.sum() / count, pos, neg, inv])
