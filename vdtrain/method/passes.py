"""The forward passes every part of vdtrain shares: logits only where a label is predicted, and teacher forcing.

In a causal LM position `t - 1` predicts `labels[t]` (labels aligned with `input_ids`, `shift=1`); in an
encoder-decoder model (`config.is_encoder_decoder`) the decoder's position `t` predicts `labels[t]` (`shift=0`: the
model feeds the labels shifted right as `decoder_input_ids`). The lm_head runs at the `targets_at` positions only
when the model's forward takes a boolean `logits_to_keep` and honours it (checked once per model class); a model that
ignores it or fails on it gets its full `(B, L, V)` logits sliced the same way, so callers always see `(N, V)` rows in
row-major order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from vdtrain.keys import COORDINATE_CHANNELS, HAS_IMAGE
from vdtrain.method.dependence import IGNORE_INDEX, row_logprobs, visual_dependence
from vdtrain.method.noise import add_diffusion_noise, keep_coordinates, keep_padding


def label_shift(model: Any) -> int:
    """How far a label lies after the position whose logits predict it: 1 in a causal LM (labels aligned with
    `input_ids`), 0 in an encoder-decoder model (`config.is_encoder_decoder`: labels are the decoder's targets)."""
    config = getattr(_base_model(model), "config", None)
    return 0 if getattr(config, "is_encoder_decoder", False) else 1


def targets_at(labels: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """`(B, L)` bool: the positions whose logits predict a supervised label (where the logits are needed)."""
    if shift == 0:
        return labels != IGNORE_INDEX
    return F.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)


def supervised_mask(labels: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """`(B, L)` bool: the supervised labels, `labels[t] != -100`; with `shift=1` for `t >= 1` only (a causal LM never
    predicts position 0)."""
    if shift == 0:
        return labels != IGNORE_INDEX
    return F.pad(labels[:, 1:] != IGNORE_INDEX, (1, 0), value=False)


def supervised_targets(labels: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """`(N,)` the supervised labels in row-major order, aligned with the rows of `supervised_logits`."""
    targets = labels[:, shift:]
    return targets[targets != IGNORE_INDEX]


def with_decoder_inputs(model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> dict[str, Any]:
    """`inputs` plus the `decoder_input_ids` an encoder-decoder model would build from `labels` itself (it does so
    only when given `labels`, which vdtrain's forwards leave out); `inputs` unchanged for a causal LM or when the
    batch carries decoder inputs already."""
    if label_shift(model) != 0 or "decoder_input_ids" in inputs or "decoder_inputs_embeds" in inputs:
        return inputs
    return {**inputs, "decoder_input_ids": decoder_input_ids(model, labels)}


def decoder_input_ids(model: Any, labels: torch.Tensor) -> torch.Tensor:
    """`(B, L)` the labels shifted right behind the decoder start token, -100 as padding: the model's own
    `prepare_decoder_input_ids_from_labels` (or T5's `_shift_right`) where it has one, else from the config's
    `decoder_start_token_id` and `pad_token_id` (on the config, its `text_config` or its `decoder`)."""
    base = _base_model(model)
    for name in ("prepare_decoder_input_ids_from_labels", "_shift_right"):
        method = getattr(base, name, None)
        if callable(method):
            return method(labels)
    start, pad = (_decoder_setting(base.config, name) for name in ("decoder_start_token_id", "pad_token_id"))
    if start is None:
        raise ValueError(f"{type(base).__name__}: its config names no decoder_start_token_id to start its decoder")
    shifted = torch.cat([labels.new_full((labels.shape[0], 1), start), labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == IGNORE_INDEX, 0 if pad is None else pad)


def _decoder_setting(config: Any, name: str) -> int | None:
    """`name` from the config's `text_config` or `decoder` (where the decoder's own settings live), else its own."""
    for part in (getattr(config, "text_config", None), getattr(config, "decoder", None), config):
        value = getattr(part, name, None)
        if value is not None:
            return value
    return None


# Model classes whose forward takes `logits_to_keep` but does not return (N, V) rows for a boolean one (Chameleon
# indexes its own 2-D result and fails): measured on the first forward, then every forward takes full logits.
_IGNORES_LOGITS_MASK: dict[type, bool] = {}


def supervised_logits(
    model: Any, inputs: dict[str, torch.Tensor], targets_at: torch.Tensor, logits_mask: bool
) -> tuple[torch.Tensor, Any]:
    """`((N, V) logits at the `targets_at` positions, the model's outputs)` from one forward of `model(**inputs)`.

    With `logits_mask`, the first forward of a model class checks that a boolean `logits_to_keep` really gives
    `(N, V)` rows (or the full `(B, L, V)` logits, sliced here); a class that fails or returns another shape is
    remembered and from then on runs with full logits, so the answer is the same either way.

    Args:
        inputs: the model's inputs, without `labels` and the collator's loss-only keys.
        targets_at (`torch.Tensor`): `(B, L)` bool, from `targets_at(labels)`.
        logits_mask (`bool`): whether the forward takes `logits_to_keep` (`models.base.accepts_logits_mask`).
    """
    kind = type(_base_model(model))
    if logits_mask and not _IGNORES_LOGITS_MASK.get(kind, False):
        checked = kind in _IGNORES_LOGITS_MASK
        try:
            outputs = model(**inputs, logits_to_keep=targets_at)
        except (IndexError, RuntimeError, TypeError, ValueError):
            if checked:
                raise
            outputs = None
        rows = None if outputs is None else _rows(outputs.logits, targets_at)
        if rows is not None:
            _IGNORES_LOGITS_MASK[kind] = False
            return rows, outputs
        outputs = model(**inputs)  # a failure here is the model's own, so nothing is remembered
        _IGNORES_LOGITS_MASK[kind] = True
        return _text_logits(outputs.logits, targets_at)[targets_at], outputs
    outputs = model(**inputs)
    return _text_logits(outputs.logits, targets_at)[targets_at], outputs  # (N, V)


def _text_logits(logits: torch.Tensor, targets_at: torch.Tensor) -> torch.Tensor:
    """`(B, L, V)` logits of the text positions: a model that puts positions of its own in front of the text (GIT
    prepends the image's patch embeddings, and its logits cover them) has its last `L` kept."""
    if logits.dim() == 3 and logits.shape[0] == targets_at.shape[0] and logits.shape[1] > targets_at.shape[1]:
        return logits[:, -targets_at.shape[1] :]
    return logits


def _rows(logits: torch.Tensor, targets_at: torch.Tensor) -> torch.Tensor | None:
    """The `(N, V)` rows at `targets_at` from what a forward given `logits_to_keep` returned, or None if it is
    neither those rows nor the full `(B, L, V)` logits."""
    if logits.dim() == 2 and logits.shape[0] == int(targets_at.sum()):
        return logits
    logits = _text_logits(logits, targets_at)
    if logits.dim() == 3 and logits.shape[:2] == targets_at.shape:
        return logits[targets_at]
    return None


def auxiliary_loss(model: Any, outputs: Any) -> torch.Tensor | None:
    """The term a mixture-of-experts forward adds to its loss when it returns router logits: its `aux_loss` times its
    `router_aux_loss_coef` (the model's attribute where it keeps one, else its text config's), or None without one.

    A forward given `labels` adds it to `outputs.loss` itself; the loss from logits at the supervised positions must
    add the same term, or `Trainer`'s load-balancing objective would be silently dropped."""
    aux = getattr(outputs, "aux_loss", None)
    if aux is None:
        return None
    base = _base_model(model)
    coef = getattr(base, "router_aux_loss_coef", None)
    if coef is None:
        coef = getattr(base.config.get_text_config(), "router_aux_loss_coef", None)
    return None if coef is None else coef * aux


def _base_model(model: Any) -> Any:
    """The transformers model under DDP/DeepSpeed (`.module`) and PEFT wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def eval_pass(model: Any) -> Iterator[None]:
    """A no-grad pass in eval mode (no dropout, no gradient checkpointing); a model in training mode is switched back
    afterwards, even if the pass raises. Every extra forward of the method (noised, eval-mode clean) runs in one."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def no_grad_logprobs(
    model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor, logits_mask: bool, shift: int = 1
) -> torch.Tensor:
    """`(N,)` float32 `log p(label)` of the supervised labels (row-major) from one `eval_pass` forward; `shift` is
    `label_shift(model)` (an encoder-decoder model's `inputs` carry `decoder_input_ids`: `with_decoder_inputs`)."""
    with eval_pass(model):
        logits, _ = supervised_logits(model, inputs, targets_at(labels, shift), logits_mask)
        return row_logprobs(logits, supervised_targets(labels, shift))


# ---------------------------------------------------------------------------------------------- teacher forcing
@torch.no_grad()
def teacher_forced_logprobs(
    model: torch.nn.Module, batch: dict[str, Any], *, noise_step: int, pixel_key: str, logits_mask: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`(log p_clean, log p_noisy, labels)` of a collated batch (`collate_samples`): one clean and one noised no-grad
    pass, `(N,)` float32 log-probs of every supervised target in row-major order, and the labels on the model's
    device. `log p_noisy` is None for a batch without images (nothing to noise)."""
    device = next(model.parameters()).device
    dtype = getattr(model, "dtype", torch.float32)
    inputs = {key: value.to(device, non_blocking=True) for key, value in batch["inputs"].items()}
    pixels = inputs.get(pixel_key)
    if pixels is not None and pixels.is_floating_point():
        inputs[pixel_key] = pixels.to(dtype)
    labels, shift = inputs.pop("labels"), label_shift(model)
    inputs = with_decoder_inputs(model, inputs, labels)
    logp_clean = no_grad_logprobs(model, inputs, labels, logits_mask, shift)  # (N,)
    if pixels is None:
        return logp_clean, None, labels
    noise = batch["noise"].to(device, non_blocking=True)
    noised = add_diffusion_noise(pixels.float(), noise_step, noise=noise)  # f32 math
    noised = keep_coordinates(pixels, keep_padding(pixels, noised), batch.get(COORDINATE_CHANNELS))
    inputs[pixel_key] = noised.to(dtype)
    return logp_clean, no_grad_logprobs(model, inputs, labels, logits_mask, shift), labels


def batch_dependence(
    model: torch.nn.Module, batch: dict[str, Any], *, noise_step: int, pixel_key: str, logits_mask: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(d, labels)`: Eq. 5.1's `d` `(N,)` of every supervised target of a collated batch in row-major order (0 for
    text-only examples: nothing changes under noise), and the labels on the model's device."""
    logp_clean, logp_noisy, labels = teacher_forced_logprobs(
        model, batch, noise_step=noise_step, pixel_key=pixel_key, logits_mask=logits_mask
    )
    if logp_noisy is None:
        return torch.zeros_like(logp_clean), labels
    rows = supervised_mask(labels, label_shift(model)).nonzero()[:, 0]  # (N,) example of each target, row-major
    return visual_dependence(logp_clean, logp_noisy) * batch[HAS_IMAGE].to(labels.device)[rows], labels
