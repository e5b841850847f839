"""Offline data filtering by visual dependence (thesis 5.4.5): score every sample, remove a fraction, report."""

from vdtrain.filtering.report import plot_histogram, score_quantiles, write_report
from vdtrain.filtering.runs import RunMismatchError
from vdtrain.filtering.scoring import score_batch, score_dataset
from vdtrain.filtering.selection import STRATEGIES, removal_count, select_dataset, select_removed

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
