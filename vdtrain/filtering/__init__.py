"""Offline data filtering by visual dependence (thesis 5.4.5): score every sample, remove a fraction, report.

Selection and runs import without torch (`vdtrain filter --help` reads `STRATEGIES`); the scorer and the report load
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vdtrain.filtering.runs import RunMismatchError
from vdtrain.filtering.selection import STRATEGIES, removal_count, select_dataset, select_removed

_LAZY = {
    "plot_histogram": "vdtrain.filtering.report",
    "score_quantiles": "vdtrain.filtering.report",
    "write_report": "vdtrain.filtering.report",
    "score_batch": "vdtrain.filtering.scoring",
    "score_dataset": "vdtrain.filtering.scoring",
}
__all__ = [
    "STRATEGIES",
    "RunMismatchError",
    "plot_histogram",
    "removal_count",
    "score_batch",
    "score_dataset",
    "score_quantiles",
    "select_dataset",
    "select_removed",
    "write_report",
]

if TYPE_CHECKING:
    from vdtrain.filtering.report import plot_histogram, score_quantiles, write_report  # noqa: F401
    from vdtrain.filtering.scoring import score_batch, score_dataset  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vdtrain.filtering' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
