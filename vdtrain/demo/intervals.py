"""95% intervals of paired differences over seeds, and how the report words them ("no detectable difference")."""

from __future__ import annotations

import math

Stat = tuple[float, float | None, int]  # mean, sample std (None for one seed), number of seeds

# t quantiles t_{0.975, df} for df = 1..30 (two-sided 95%); beyond 30 the normal 1.96 is within 2%.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def confidence_interval(stat: Stat | None) -> tuple[float, float] | None:
    """95% interval of a mean over seeds, `mean ± t_{0.975, n-1} std / sqrt(n)`; None for fewer than two seeds."""
    if stat is None or stat[1] is None or stat[2] < 2:
        return None
    mean, std, n = stat
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * std / math.sqrt(n)
    return mean - half, mean + half


def format_difference(stat: Stat | None, percent: bool = True) -> str:
    """`-1.0 [-3.5, +1.5]`: a paired difference's mean and 95% interval over seeds (the mean alone for one seed)."""
    if stat is None:
        return "—"
    scale = 100.0 if percent else 1.0
    interval = confidence_interval(stat)
    text = f"{stat[0] * scale:+.1f}"
    return text if interval is None else f"{text} [{interval[0] * scale:+.1f}, {interval[1] * scale:+.1f}]"


def describe_difference(label: str, name: str, stat: Stat | None, percent: bool = True) -> str:
    """One sentence on a paired difference: its size and 95% interval, or "no detectable difference" when the
    interval contains 0 (or cannot be computed from one seed)."""
    if stat is None:
        return f"`{label}`: {name} not measured."
    unit = " points" if percent else " words"
    scale = 100.0 if percent else 1.0
    interval = confidence_interval(stat)
    if interval is None:
        return f"`{label}`: {name} {stat[0] * scale:+.1f}{unit} (one seed: no interval, nothing can be concluded)."
    span = f"95% interval {interval[0] * scale:+.1f} to {interval[1] * scale:+.1f} over {stat[2]} seeds"
    if interval[0] <= 0.0 <= interval[1]:
        return f"`{label}`: {name} {stat[0] * scale:+.1f}{unit} ({span}): no detectable difference."
    direction = "lower" if stat[0] < 0 else "higher"
    return f"`{label}`: {name} {direction} by {abs(stat[0]) * scale:.1f}{unit} ({span})."


__all__ = ["Stat", "confidence_interval", "describe_difference", "format_difference"]
