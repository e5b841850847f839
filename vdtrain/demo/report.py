"""Tables (mean ± std over seeds, paired differences), the metrics figure and `report.md` of `vdtrain demo`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdtrain.demo.intervals import Stat, describe_difference, format_difference

Runs = Mapping[str, Mapping[str, Mapping[str, float]]]  # seed -> row -> metric key -> value


@dataclass(frozen=True)
class Column:
    """One table column: a metric key, its header, and whether it is a rate shown in percent."""

    key: str
    header: str
    percent: bool = True


def caption_columns(split: str) -> tuple[Column, ...]:
    """The caption metrics of one eval split: partner rate, CHAIR_s, CHAIR_i, recall, length."""
    return (
        Column(f"{split}/partner_rate", "Partner ↓"),
        Column(f"{split}/CHAIRs", "CHAIR_s ↓"),
        Column(f"{split}/CHAIRi", "CHAIR_i ↓"),
        Column(f"{split}/Recall", "Recall ↑"),
        Column(f"{split}/length", "Len", percent=False),
    )


MAIN_COLUMNS = (
    *caption_columns("counterfactual"),
    Column("test/pope_accuracy", "POPE acc test"),
    Column("test/pope_f1", "POPE F1 test"),
    Column("counterfactual/pope_accuracy", "POPE acc cf"),
    Column("counterfactual/pope_f1", "POPE F1 cf"),
)
TEST_COLUMNS = caption_columns("test")
# The paired differences the report also words in sentences.
HEADLINE_COLUMNS = (
    Column("counterfactual/partner_rate", "partner rate"),
    Column("counterfactual/length", "caption length", percent=False),
)
POPE_COLUMNS = tuple(
    Column(f"{split}/pope_{variant}_{metric}", f"{split[:4]} {variant[:3]} {metric[:3]}")
    for split in ("test", "counterfactual")
    for variant in ("random", "popular", "adversarial")
    for metric in ("accuracy", "f1")
)
FIGURE_PANELS = (
    ("counterfactual/partner_rate", "partner hallucination (cf) ↓", True),
    ("counterfactual/CHAIRs", "CHAIR_s (cf) ↓", True),
    ("counterfactual/CHAIRi", "CHAIR_i (cf) ↓", True),
    ("counterfactual/Recall", "Recall (cf) ↑", True),
    ("counterfactual/length", "mean caption length (words, cf)", False),
    ("counterfactual/pope_f1", "POPE F1 (cf, mean of 3 types) ↑", True),
)


def _stat(values: Sequence[float]) -> Stat | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def summarize(runs: Runs) -> dict[str, dict[str, Stat]]:
    """Mean and sample std over seeds of every metric of every row."""
    rows = list(dict.fromkeys(row for per_seed in runs.values() for row in per_seed))
    out: dict[str, dict[str, Stat]] = {}
    for row in rows:
        keys = dict.fromkeys(k for per_seed in runs.values() for k in per_seed.get(row, {}))
        stats = {k: _stat([per_seed[row].get(k) for per_seed in runs.values() if row in per_seed]) for k in keys}
        out[row] = {k: s for k, s in stats.items() if s is not None}
    return out


def paired_differences(runs: Runs, pairs: Sequence[tuple[str, str]]) -> dict[str, dict[str, Stat]]:
    """`row - base` per seed, then mean and std over seeds, for each `(row, base)`; labelled `"row − base"`."""
    out: dict[str, dict[str, Stat]] = {}
    for row, base in pairs:
        seeds = [s for s, per_seed in runs.items() if row in per_seed and base in per_seed]
        keys = [k for k in runs[seeds[0]][row] if k in runs[seeds[0]][base]] if seeds else []
        diffs = {
            k: _stat([runs[s][row][k] - runs[s][base][k] for s in seeds if k in runs[s][row] and k in runs[s][base]])
            for k in keys
        }
        out[f"{row} − {base}"] = {k: s for k, s in diffs.items() if s is not None}
    return out


def format_cell(stat: Stat | None, percent: bool = True, signed: bool = False) -> str:
    """`12.3 ± 1.4` (percent points for rates), `+0.8 ± 0.5` when `signed`, just the mean for one seed."""
    if stat is None:
        return "—"
    mean, std, _ = stat
    scale = 100.0 if percent else 1.0
    text = f"{mean * scale:+.1f}" if signed else f"{mean * scale:.1f}"
    return text if std is None else f"{text} ± {std * scale:.1f}"


def format_table(
    stats: Mapping[str, Mapping[str, Stat]],
    columns: Sequence[Column],
    rows: Sequence[str] | None = None,
    signed: bool = False,
    first: str = "variant",
    interval: bool = False,
) -> str:
    """A markdown table, one row per entry of `stats` (or `rows`), one column per `Column`; `interval`: cells are
    paired differences with their 95% interval (`format_difference`)."""
    rows = list(stats) if rows is None else [r for r in rows if r in stats]
    lines = [
        "| " + " | ".join([first, *(c.header for c in columns)]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for row in rows:
        cells = [
            format_difference(stats[row].get(c.key), c.percent)
            if interval
            else format_cell(stats[row].get(c.key), c.percent, signed)
            for c in columns
        ]
        lines.append("| " + " | ".join([row, *cells]) + " |")
    return "\n".join(lines)


def plot_metrics(runs: Runs, rows: Sequence[str], path: str | Path) -> Path:
    """Bar chart of the headline metrics per row: mean over seeds, std error bars, one dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarize(runs)
    rows = [r for r in rows if r in stats]
    colours = {"mle": "#7f7f7f", "vd-neg": "#1f77b4", "vd-pos": "#ff7f0e", "eos": "#2ca02c"}
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True)
    for ax, (key, title, percent) in zip(axes.flat, FIGURE_PANELS):
        scale = 100.0 if percent else 1.0
        for x, row in enumerate(rows):
            stat = stats[row].get(key)
            if stat is None:
                continue
            matched = row.startswith("mle @")
            colour = colours.get(row.split("(")[-1].rstrip(")") if matched else row, "#9467bd")
            ax.bar(
                x,
                stat[0] * scale,
                yerr=(stat[1] or 0.0) * scale,
                capsize=4,
                color=colour,
                alpha=0.45 if matched else 0.9,
                hatch="//" if matched else None,
                edgecolor="black",
                linewidth=0.6,
            )
            seeds = [per_seed[row][key] * scale for per_seed in runs.values() if key in per_seed.get(row, {})]
            ax.plot([x] * len(seeds), seeds, "k.", markersize=5, zorder=3)
        if not any(key in stats[row] for row in rows):
            ax.text(0.5, 0.5, "not measured\n(no object named)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=11)
        ax.set_xticks(range(len(rows)), [r.replace(" @ ", "\n@ ") for r in rows], fontsize=8.5, rotation=30)
        ax.set_ylabel("%" if percent else "words", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    n_seeds = len(runs)
    fig.suptitle(
        f"vdtrain demo: mean over {n_seeds} seed{'s' * (n_seeds > 1)} (bars), std (error bars), seeds (dots); "
        "hatched: MLE decoded to the length of that variant",
        fontsize=11,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def result_tables(results: Mapping[str, Any]) -> dict[str, str]:
    """The report's markdown tables from `results.json`'s content: main, test split, POPE types, differences."""
    runs = {s: {row: r["metrics"] for row, r in per_seed.items()} for s, per_seed in results["runs"].items()}
    rows, pairs = results["rows"], [tuple(p) for p in results["pairs"]]
    stats = summarize(runs)
    differences = paired_differences(runs, pairs)
    return {
        "main": format_table(stats, MAIN_COLUMNS, rows),
        "test": format_table(stats, TEST_COLUMNS, rows),
        "pope": format_table(stats, POPE_COLUMNS, rows),
        "differences": format_table(differences, MAIN_COLUMNS, first="paired", interval=True),
        "difference_lines": "\n".join(
            "- " + describe_difference(label, column.header, stat.get(column.key), column.percent)
            for label, stat in differences.items()
            for column in HEADLINE_COLUMNS
        ),
    }


def _setup_lines(results: Mapping[str, Any]) -> list[str]:
    setup, s = results["setup"], results["settings"]
    data = s["data"]
    return [
        f"- Command: `{setup['command']}`; {setup['date']}; wall time {setup['wall_time_s'] / 60:.1f} min "
        f"({setup['workers']} worker process{'es' * (setup['workers'] > 1)}).",
        f"- Machine: {setup['machine']}; load average at start {setup['load_start']}, at end {setup['load_end']} "
        "(other jobs on the machine inflate the times).",
        f"- Data (seed {data['seed']}, fixed across seeds): {data['n_train']} training conversations, "
        f"{data['n_test']} test and {data['n_counterfactual']} counterfactual images of {data['image_size']} px; "
        f"P(B | A) = {data['p_pair']} in train and test; {data['p_noisy']:.0%} of train captions of an A without its "
        f"B name B anyway; {data['frac_qa']:.0%} yes/no conversations. Partner pairs: {setup['pairs']}.",
        f'- Evaluation: greedy captions ("Describe this image.", at most {s["max_new_tokens"]} new tokens) of '
        f"{setup['caption_images']} images per split; POPE (random, popular, adversarial; answers of at most two "
        f"tokens) on the questions of {setup['pope_images']} images per split ({setup['pope_questions']}). CHAIR and "
        "POPE are vdtrain's evaluators with the demo's synonyms and COCO-format annotations.",
        f"- Model: {setup['model']}; parameters: "
        + ", ".join(f"{part} {n:,}" for part, n in setup["parameters"].items())
        + ". The Vicuna system prompt is one token of the demo's vocabulary (shorter sequences, same text).",
        f"- Training, per seed: the CLIP tower is pre-trained for {s['vision_steps']} steps to tell which objects an "
        "image holds (multi-label BCE on the train images' objects; our stand-in for CLIP pre-training), then frozen "
        "as LLaVA freezes CLIP; projector and language model are fine-tuned fully (no LoRA) for "
        f"{s['steps']} optimizer steps of batch {s['batch_size']} ({setup['epochs']:.1f} epochs), AdamW, "
        f"learning rate {s['learning_rate']} cosine; plain MLE to step {s['steps'] // 2} (checkpoint), then each "
        f"variant resumes that checkpoint with the same batch order to step {s['steps']} (`vd_start=0.5`). "
        f"vd-neg / vd-pos: tau = {s['temperature']}, noise step {s['noise_step']}; eos: selective EOS supervision.",
        f"- Seeds: {s['seeds']} (model initialisation, batch order, VD noise). Tables: mean ± sample std over seeds; "
        "rates in percent. `mle @ len(X)`: the seed's MLE model decoded with an end-of-turn logit bias bisected "
        f"({s['length_iters']} steps on {s['length_images']} counterfactual images) to X's mean caption length.",
    ]


def machine_description() -> str:
    """Platform, cores, Python, torch (threads) and transformers, for the report."""
    import os
    import platform

    import torch
    import transformers

    threads = torch.get_num_threads()
    return (
        f"{platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({threads} threads), transformers {transformers.__version__}"
    )


def inspect_figure(
    output: Path, processor: Any, example: tuple[Any, Path, str] | None, noise_step: int = 900
) -> tuple[Path | None, str]:
    """The thesis Fig. 5.1 view (`vdtrain inspect`) of `(model, image path, caption)`.

    Returns `(figure or None, a line for the report)`; a failure is reported, never raised.
    """
    try:
        from vdtrain.analysis.token_figure import plot_token_dependence, token_dependence
    except ImportError:
        return None, "_No per-token dependence figure: `vdtrain.analysis.token_figure` is not in this install._"
    if example is None:
        return None, "_No per-token dependence figure: no caption to inspect._"
    from vdtrain.data.images import load_image
    from vdtrain.models import get_adapter

    model, image_path, caption = example
    prompt = "Describe this image."
    try:
        image = load_image(image_path)
        rows = token_dependence(model, processor, get_adapter(model), image, prompt, caption, noise_step, seed=0)
        plot_token_dependence(rows, output, image, title=f"{image_path.name}: {caption}")  # one line: no wrap
    except Exception as error:  # a figure must not cost the whole run
        return None, f"_The per-token dependence figure failed: {type(error).__name__}: {error}_"
    return output, (
        f"Per-token probabilities with the clean and the noised image (noise step {noise_step}) of seed 0's MLE "
        f"caption of `{image_path.name}` (first counterfactual caption naming an absent partner, if any)."
    )


def write_report(
    root: str | Path, results: Mapping[str, Any], inspect_figure: Path | None = None, inspect_note: str = ""
) -> str:
    """Write `report.md` and `figures/metrics.png` under `root`; return the main and paired tables for the terminal."""
    root = Path(root)
    runs = {s: {row: r["metrics"] for row, r in per_seed.items()} for s, per_seed in results["runs"].items()}
    figure = plot_metrics(runs, results["rows"], root / "figures" / "metrics.png")
    tables = result_tables(results)
    biases = {
        row: [per_seed[row]["eos_bias"] for per_seed in results["runs"].values() if row in per_seed]
        for row in results["rows"]
        if row.startswith("mle @")
    }
    losses = summarize(
        {
            s: {row: {k: v for k, v in r.get("training", {}).items() if isinstance(v, float)} for row, r in ps.items()}
            for s, ps in results["runs"].items()
        }
    )
    lines = [
        "# vdtrain demo report",
        "",
        "A tiny LLaVA trained on synthetic shapes whose captions carry a co-occurrence prior (each A usually comes "
        "with its partner B). The **partner rate** is the share of counterfactual captions (every image has an A "
        "without its B) that name the absent B. Numbers are what this run measured.",
        "",
        "## Setup",
        "",
        *_setup_lines(results),
        "",
        "## Results (counterfactual captions; POPE mean of its three question types)",
        "",
        tables["main"],
        "",
        "## Paired differences from the same seed's baseline (percentage points; words for Len)",
        "",
        "Mean of the per-seed differences and its 95% interval over seeds (t distribution), in brackets; a "
        "difference whose interval contains 0 is not detectable with this many seeds.",
        "",
        tables["differences"],
        "",
        tables["difference_lines"],
        "",
        "## Test-split captions",
        "",
        tables["test"],
        "",
        "## POPE by split and question type (accuracy, F1)",
        "",
        tables["pope"],
        "",
        "## Length matching and training",
        "",
        *(f"- `{row}`: end-of-turn logit bias per seed {[round(b, 2) for b in bs]}" for row, bs in biases.items()),
        *(
            f"- `{row}`: last logged training loss {format_cell(st.get('final_loss'), percent=False)}"
            + (f", mean d {format_cell(st['vd_mean'], percent=False)}" if "vd_mean" in st else "")
            for row, st in losses.items()
            if "final_loss" in st
        ),
        "",
        "## Figures",
        "",
        f"![metrics]({figure.relative_to(root).as_posix()})",
        "",
    ]
    if inspect_figure is not None:
        lines += [f"![token dependence]({Path(inspect_figure).relative_to(root).as_posix()})", ""]
    if inspect_note:
        lines += [inspect_note, ""]
    if results.get("analysis"):  # thesis Fig. 5.2 and 5.5 on the MLE model (`vdtrain analyze dependence`)
        from vdtrain.analysis.object_dependence import summary_lines

        analysis = results["analysis"]
        lines += ["## Objects by visual dependence (thesis Fig. 5.2, 5.5)", "", analysis["note"], ""]
        if analysis.get("totals"):
            lines += [*summary_lines(analysis["totals"]), ""]
            lines += [f"![{Path(f).stem}]({Path(f).as_posix()})" for f in analysis["figures"]]  # relative to root
            lines += [""]
    (root / "report.md").write_text("\n".join(lines))
    return (
        f"{tables['main']}\n\nPaired differences (same seed; mean [95% interval over seeds]):\n\n"
        f"{tables['differences']}\n\n{tables['difference_lines']}"
    )
