"""Figures of `vdtrain analyze`: objects by visual dependence (Fig. 5.2), tokens near hallucinations (Fig. 5.5),
information flow by layer (Fig. 5.3) and one sample's response-token saliency (Fig. 5.4)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vdtrain.io import atomic_path
from vdtrain.method.dependence import POSITIVE_THRESHOLD

GROUP_COLOURS = {"pos": "#2a9d4b", "inv": "#8c8c8c", "neg": "#d1495b"}
GROUP_NAMES = {"pos": "image-positive", "inv": "image-invariant", "neg": "image-negative"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_objects_by_dependence(totals: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Fig. 5.2: grounded and hallucinated object tokens per d bin (left) and per token group (right)."""
    plt = _pyplot()
    edges = totals["bin_edges"]
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    width = (edges[1] - edges[0]) * 0.42
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2.4, 1]})
    bins = totals["object_tokens_by_bin"]
    left.bar([c - width / 2 for c in centres], bins["grounded"], width, color="#3a6ea5", label="grounded")
    left.bar([c + width / 2 for c in centres], bins["hallucinated"], width, color="#e07a5f", label="hallucinated")
    for threshold in (-POSITIVE_THRESHOLD, POSITIVE_THRESHOLD):
        left.axvline(threshold, color="black", linestyle=":", linewidth=0.8)
    left.set_xlabel("visual dependence d of the object's tokens")
    left.set_ylabel("object tokens")
    left.set_xlim(-1, 1)
    left.legend(frameon=False)
    groups = totals["object_tokens_by_group"]
    x = range(3)
    names = ("neg", "inv", "pos")
    right.bar([i - 0.2 for i in x], [groups["grounded"][g] for g in names], 0.4, color="#3a6ea5")
    right.bar([i + 0.2 for i in x], [groups["hallucinated"][g] for g in names], 0.4, color="#e07a5f")
    right.set_xticks(list(x), [GROUP_NAMES[g].replace("-", "-\n") for g in names])
    for label, group in zip(right.get_xticklabels(), names):
        label.set_color(GROUP_COLOURS[group])
    mentions = totals["mentions"]
    fig.suptitle(
        (title + ": " if title else "")
        + f"{mentions['grounded']} grounded and {mentions['hallucinated']} hallucinated mentions "
        f"in {totals['captions']} captions",
        fontsize=10,
    )
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def plot_hallucination_distance(distance: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Fig. 5.5: share of hallucinated mentions with a token of each group within k tokens."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for group in ("pos", "inv", "neg"):
        ax.plot(
            distance["k"],
            [100 * v for v in distance[group]],
            "o-",
            color=GROUP_COLOURS[group],
            label=GROUP_NAMES[group],
        )
    ax.set_xlabel("distance k (tokens before or after the mention)")
    ax.set_ylabel("% of hallucinated mentions")
    ax.set_ylim(0, 105)
    ax.set_xticks(distance["k"])
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title((title + ": " if title else "") + f"{distance['mentions']} hallucinated mentions", fontsize=10)
    return _save(fig, path)


def plot_saliency_by_layer(layers: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike) -> Path:
    """Fig. 5.3: per layer and token group, the mean image and text flow and the image share."""
    plt = _pyplot()
    fig, (flows, share) = plt.subplots(1, 2, figsize=(11, 3.8))
    for group, values in layers.items():
        x = list(range(len(values["image"])))
        colour = GROUP_COLOURS[group]
        flows.plot(x, values["image"], "-", color=colour, label=f"{GROUP_NAMES[group]}: image")
        flows.plot(x, values["text"], "--", color=colour, label=f"{GROUP_NAMES[group]}: text")
        share.plot(x, [100 * v for v in values["image_share"]], "o-", color=colour, label=GROUP_NAMES[group])
    flows.set_xlabel("layer")
    flows.set_ylabel("mean saliency |A ⊙ ∂L/∂A|")
    flows.legend(frameon=False, fontsize=7)
    share.set_xlabel("layer")
    share.set_ylabel("image share of the flow (%)")
    share.set_ylim(0, 100)
    share.legend(frameon=False, fontsize=8)
    layers_n = max((len(v["image"]) for v in layers.values()), default=0)
    for ax in (flows, share):
        ax.set_xticks(range(layers_n))
        ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def plot_saliency_example(matrix: Sequence[Sequence[float]], tokens: Sequence[str], path: str | os.PathLike) -> Path:
    """Fig. 5.4: response x response saliency (rows: query token, columns: key token), mean over heads and layers."""
    plt = _pyplot()
    n = len(tokens)
    size = min(14, 2 + 0.22 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="viridis")
    labels = [repr(t)[1:-1] or "·" for t in tokens]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(n), labels, fontsize=6)
    ax.set_xlabel("key (information from)")
    ax.set_ylabel("query (information to)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _save(fig, path)
