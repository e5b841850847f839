"""Token weights from visual dependence (thesis Eq. 5.3-5.5): a scheme registry and the per-sample softmax."""

from __future__ import annotations

from collections.abc import Callable

import torch

WeightScheme = Callable[[torch.Tensor], torch.Tensor]
_SCHEMES: dict[str, WeightScheme] = {}


def register_weighting(name: str, *, override: bool = False) -> Callable[[WeightScheme], WeightScheme]:
    """Register `fn(d) -> w` as weighting scheme `name`; `w` is the pre-softmax score of each token.

    A name already registered is refused (as PEFT refuses a method name twice) unless `override=True`, so two
    schemes never silently share a name.

    Example:
        >>> @register_weighting("abs")
        ... def _abs(d):
        ...     return d.abs()
    """

    def decorator(fn: WeightScheme) -> WeightScheme:
        if name in _SCHEMES and not override and _SCHEMES[name] is not fn:
            raise ValueError(f"weighting scheme {name!r} is already registered; pass override=True to replace it")
        _SCHEMES[name] = fn
        return fn

    return decorator


def get_weighting(name: str) -> WeightScheme:
    """The scheme registered as `name`."""
    if name not in _SCHEMES:
        raise ValueError(f"unknown weighting scheme {name!r}; registered: {sorted(_SCHEMES)}")
    return _SCHEMES[name]


def available_weightings() -> list[str]:
    """Names of the registered schemes."""
    return sorted(_SCHEMES)


@register_weighting("neg")
def _neg(d: torch.Tensor) -> torch.Tensor:
    # Eq. 5.3: emphasise image-negative tokens.
    return (-d).clamp_min(0)


@register_weighting("pos")
def _pos(d: torch.Tensor) -> torch.Tensor:
    # Eq. 5.4: emphasise image-positive tokens.
    return d.clamp_min(0)


@register_weighting("none")
def _none(d: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(d)


def token_weights(
    d: torch.Tensor,
    mask: torch.Tensor,
    *,
    scheme: str = "neg",
    temperature: float = 0.5,
    end_of_turn_mask: torch.Tensor | None = None,
    eos_min_weight: float = 1.0,
    eos_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token loss weights `n * softmax(temperature * w)` over each sample's `n` supervised tokens (Eq. 5.5).

    A sample's weights average 1, so `temperature=0` (or scheme `none`) is the vanilla loss. End-of-turn tokens
    are then floored at `eos_min_weight` (the thesis keeps the EOS weight >= 1 to protect response length).
    Unsupervised positions, and every position of a sample with nothing supervised, get 0. No gradient flows.

    Args:
        d (`torch.Tensor`): `(B, L)` visual dependence.
        mask (`torch.Tensor`): `(B, L)` bool, True where supervised.
        scheme (`str`, defaults to `"neg"`): a registered weighting scheme (`neg`, `pos`, `none`, ...).
        temperature (`float`, defaults to 0.5): tau of Eq. 5.5.
        end_of_turn_mask (`torch.Tensor`, *optional*): `(B, L)` bool, the end-of-turn tokens.
        eos_min_weight (`float`, defaults to 1.0): floor applied at `end_of_turn_mask`.
        eos_mask (`torch.Tensor`, *optional*): the same mask by the design contract's name (SPEC section 3); give
            one of the two.
    """
    if eos_mask is not None:
        if end_of_turn_mask is not None:
            raise ValueError("give the end-of-turn tokens once: `eos_mask` and `end_of_turn_mask` are one argument")
        end_of_turn_mask = eos_mask
    with torch.no_grad():
        mask = mask.bool()
        scores = temperature * get_weighting(scheme)(d.detach().float())
        scores = scores.masked_fill(~mask, float("-inf"))
        n = mask.sum(dim=-1, keepdim=True)  # (B, 1)
        # A row with nothing supervised is all -inf: softmax would give NaN, so give it a zero row instead.
        probs = torch.softmax(scores.masked_fill(n == 0, 0.0), dim=-1)
        weights = torch.where(mask, probs * n, torch.zeros_like(probs))
        if end_of_turn_mask is not None:
            floor = end_of_turn_mask.bool() & mask
            weights = torch.where(floor, weights.clamp_min(eos_min_weight), weights)
    return weights
