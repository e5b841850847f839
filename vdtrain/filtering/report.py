"""Filtering report: `summary.json` (counts, score quantiles, Table 5.3's lengths) and the Fig. 5.6 histogram."""

from __future__ import annotations

import os
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from vdtrain.data.conversations import ROLES
from vdtrain.io import atomic_write_json, writing

SUMMARY_FILE = "summary.json"
HISTOGRAM_FILE = "score_hist.png"
DOMINANCE_LABEL = r"modality dominance of a sample, $\rho$ (BMMAL, thesis eq. 3.5)"
QUANTILES = {"min": 0, "p5": 5, "p25": 25, "p50": 50, "p75": 75, "p95": 95, "max": 100}


def score_quantiles(scores: list[float] | np.ndarray) -> dict[str, float]:
    """Min, 5/25/50/75/95th percentiles, max and mean of the per-sample scores."""
    if not len(scores):
        return {}
    values = np.asarray(scores, dtype=np.float64)
    out = {name: float(np.percentile(values, q)) for name, q in QUANTILES.items()}
    out["mean"] = float(values.mean())
    return out


def words(record: Any, roles: tuple[str, ...] = ("assistant",)) -> int:
    """Words (whitespace-separated) in the record's turns of the given roles; the `<image>` marker is not a word."""
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        return 0
    total = 0
    for turn in turns:
        if isinstance(turn, dict) and ROLES.get(str(turn.get("from", turn.get("role", ""))).lower()) in roles:
            total += len(str(turn.get("value", turn.get("content", ""))).replace("<image>", " ").split())
    return total


def word_counts(records: Any) -> tuple[np.ndarray, np.ndarray]:
    """`(words of the whole conversation, words of the assistant turns)` of each record, in one pass."""
    both, answers = array("q"), array("q")
    for record in records:
        both.append(words(record, ("user", "assistant")))
        answers.append(words(record))
    return np.asarray(both, dtype=np.int64), np.asarray(answers, dtype=np.int64)


def _lengths(counts: tuple[np.ndarray, np.ndarray], indices: np.ndarray) -> dict[str, float | None]:
    """Table 5.3's columns: mean words per sample of the whole conversation and of the assistant turns."""
    if not len(indices):
        return {"data_len_words": None, "response_len_words": None}
    return {
        "data_len_words": float(np.mean(counts[0][indices])),
        "response_len_words": float(np.mean(counts[1][indices])),
    }


def score_columns(scores: list[dict[str, Any]] | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`index`, `score`, `n_tokens`, `frac_pos`, `frac_neg` of the score rows as arrays (as given if already so)."""
    if isinstance(scores, dict):
        return scores
    return {
        "index": np.array([int(row["index"]) for row in scores], dtype=np.int64),
        "score": np.array([float(row["score"]) for row in scores], dtype=np.float64),
        "n_tokens": np.array([int(row.get("n_tokens", 0)) for row in scores], dtype=np.int64),
        "frac_pos": np.array([float(row.get("frac_pos", 0.0)) for row in scores], dtype=np.float64),
        "frac_neg": np.array([float(row.get("frac_neg", 0.0)) for row in scores], dtype=np.float64),
    }


def write_report(
    output_dir: str | os.PathLike,
    scores: list[dict[str, Any]] | dict[str, np.ndarray],
    errors: list[dict[str, Any]],
    *,
    records: list[Any] | None = None,
    removed: set[int] | np.ndarray | None = None,
    selection: dict[str, Any] | None = None,
    counts: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write `summary.json` and `score_hist.png` into `output_dir` and return the summary.

    With `records` (or their `word_counts` as `counts`) and `removed` (after a selection) the counts include
    kept/removed, the lengths of Table 5.3 are given for all, kept and removed samples, and the histogram marks
    the cut. `scores` are the score rows, or their `score_columns`.
    """
    output_dir = Path(output_dir)
    columns = score_columns(scores)
    values = columns["score"]
    tokens = int(columns["n_tokens"].sum())  # dominance rows (balanced) have no tokens
    summary: dict[str, Any] = {
        "counts": {"scored": len(values), "errors": len(errors)},
        "score_quantiles": score_quantiles(values),
        "tokens": {
            "total": tokens,
            "mean_d": sum(values.tolist()) / tokens if tokens else None,
            "frac_pos": sum((columns["frac_pos"] * columns["n_tokens"]).tolist()) / tokens if tokens else None,
            "frac_neg": sum((columns["frac_neg"] * columns["n_tokens"]).tolist()) / tokens if tokens else None,
        },
    }
    cut, mask = None, None
    if (records is not None or counts is not None) and removed is not None:
        counts = counts if counts is not None else word_counts(records)
        removed = np.unique(np.fromiter(removed, dtype=np.int64) if isinstance(removed, set) else removed)
        scored = np.unique(columns["index"])
        kept = np.setdiff1d(scored, removed, assume_unique=True)
        summary["counts"].update(kept=len(kept), removed=len(removed))
        summary["selection"] = dict(selection or {})
        summary["lengths"] = {
            "all": _lengths(counts, scored),
            "kept": _lengths(counts, kept),
            "removed": _lengths(counts, removed),
        }
        mask = np.isin(columns["index"], removed)
        strategy = (selection or {}).get("strategy")
        if mask.any() and strategy in ("lowest", "highest", "balanced"):
            cut = float(values[mask].max() if strategy == "lowest" else values[mask].min())
            summary["selection"]["cut_score"] = cut
    plot_histogram(
        output_dir / HISTOGRAM_FILE,
        values,
        removed=mask,
        cut=cut,
        label=_cut_label(selection, cut),
        xlabel=DOMINANCE_LABEL if (selection or {}).get("strategy") == "balanced" else None,
    )
    summary["histogram"] = str(output_dir / HISTOGRAM_FILE)
    atomic_write_json(output_dir / SUMMARY_FILE, summary)
    return summary


def _cut_label(selection: dict[str, Any] | None, cut: float | None) -> str | None:
    if not selection:
        return None
    text = f"{selection['strategy']} {100 * selection['fraction']:g}% removed"
    return f"{text} (cut at {cut:.2f})" if cut is not None else text


def plot_histogram(
    path: str | os.PathLike,
    scores: list[float] | np.ndarray,
    *,
    removed: list[bool] | np.ndarray | None = None,
    cut: float | None = None,
    label: str | None = None,
    xlabel: str | None = None,
) -> None:
    """Histogram of per-sample scores (thesis Fig. 5.6), removed samples stacked in another colour, cut as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    values = np.asarray(scores, dtype=np.float64)
    bins = np.histogram_bin_edges(values, bins=min(80, max(10, int(np.sqrt(len(values)))))) if len(values) else 10
    if removed is not None and np.any(removed):
        mask = np.asarray(removed, dtype=bool)
        axes.hist(
            [values[~mask], values[mask]],
            bins=bins,
            stacked=True,
            color=["#4c72b0", "#dd8452"],
            label=[f"kept ({int((~mask).sum())})", f"removed ({int(mask.sum())})"],
        )
    else:
        axes.hist(values, bins=bins, color="#4c72b0", label=f"scored ({len(values)})")
    if cut is not None:
        axes.axvline(cut, color="black", linestyle="--", linewidth=1.2, label=label)
    elif label:
        axes.plot([], [], " ", label=label)
    axes.axvline(0.0, color="grey", linewidth=0.6)
    axes.set_xlabel(xlabel or r"visual dependence of a sample, $\sum_t d(y_t)$")
    axes.set_ylabel("samples")
    axes.set_title("Distribution of per-sample " + ("modality dominance" if xlabel else "visual dependence"))
    axes.legend(framealpha=0.9, edgecolor="none")
    with writing(path):
        figure.savefig(path)
