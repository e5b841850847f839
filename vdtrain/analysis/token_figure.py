"""Per-token probabilities with the clean and the noised image, and their figure (thesis Figure 5.1); the library
behind `vdtrain inspect`."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vdtrain.errors import DataError
from vdtrain.io import atomic_path
from vdtrain.method.dependence import IGNORE_INDEX, token_group, visual_dependence
from vdtrain.models.base import accepts_logits_mask, pad_token_id, tokenizer_of

COLOURS = {"image-positive": "#2a9d4b", "image-invariant": "#8c8c8c", "image-negative": "#d1495b"}


CLASS_NAMES = {"pos": "image-positive", "inv": "image-invariant", "neg": "image-negative"}


def token_class(d: float) -> str:
    """The figure's name of `d`'s token class (`token_group`: image-positive at d > 0.25, ...)."""
    return CLASS_NAMES[token_group(d)]


@torch.no_grad()
def greedy_response(
    model: Any, processor: Any, adapter: Any, image: Image.Image, prompt: str, max_new_tokens: int = 64
) -> str:
    """The model's greedy answer to `prompt` about `image`, in its family's prompt format."""
    inputs = adapter.generation_inputs(processor, [adapter.prompt(prompt, processor)], [image])
    inputs = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    return tokenizer_of(processor).decode(new, skip_special_tokens=True).strip()


def token_dependence(
    model: Any,
    processor: Any,
    adapter: Any,
    image: Image.Image,
    prompt: str,
    response: str,
    noise_step: int = 900,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For each response token: its text, p with the clean image, p with the noised image, d and its class.

    The one-turn conversation goes through the filter's data path and passes (`prepare_sample`, `collate_samples`,
    `teacher_forced_logprobs`), so the numbers are those `vdtrain filter score` computes for it as sample 0.
    """
    from vdtrain.data.samples import collate_samples, prepare_sample
    from vdtrain.method.passes import teacher_forced_logprobs

    record = {
        "id": "inspect",
        "image": "image",
        "conversations": [{"from": "human", "value": "<image>\n" + prompt}, {"from": "gpt", "value": response}],
    }
    sample = prepare_sample(record, 0, adapter, processor, None, max_length=1 << 20, seed=seed, image=image)
    if "error" in sample:
        raise DataError(sample["error"])
    batch = collate_samples([sample], pad_token_id(processor))
    model.eval()
    logp_clean, logp_noisy, labels = teacher_forced_logprobs(
        model, batch, noise_step=noise_step, pixel_key=adapter.pixel_key, logits_mask=accepts_logits_mask(model)
    )
    d = visual_dependence(logp_clean, logp_noisy).tolist()
    targets = labels[0, 1:][labels[0, 1:] != IGNORE_INDEX].tolist()  # one example: row-major is its own order
    tokenizer = tokenizer_of(processor)
    return [
        {
            "token": tokenizer.decode([label]),
            "p_clean": math.exp(clean),
            "p_noisy": math.exp(noisy),
            "d": value,
            "class": token_class(value),
        }
        for label, clean, noisy, value in zip(targets, logp_clean.tolist(), logp_noisy.tolist(), d)
    ]


def plot_token_dependence(
    rows: list[dict[str, Any]],
    output: str | os.PathLike,
    image: Image.Image | None = None,
    title: str | None = None,
    per_line: int = 28,
) -> Path:
    """Grouped bars of p(clean) and p(noised) per token, token labels coloured by class; wraps long responses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lines = [rows[i : i + per_line] for i in range(0, len(rows), per_line)] or [[]]
    fig = plt.figure(figsize=(max(8, 0.42 * min(len(rows), per_line) + 3), 2.6 * len(lines) + 1.2), dpi=130)
    grid = fig.add_gridspec(len(lines), 2, width_ratios=[1, 6], wspace=0.3, hspace=0.9)
    if image is not None:
        ax_image = fig.add_subplot(grid[0, 0])
        ax_image.imshow(image, interpolation="nearest")
        ax_image.set_axis_off()
    for row_index, line in enumerate(lines):
        ax = fig.add_subplot(grid[row_index, 1])
        x = torch.arange(len(line)).tolist()
        ax.bar([i - 0.2 for i in x], [r["p_clean"] for r in line], 0.4, color="#3a6ea5", label="clean image")
        ax.bar([i + 0.2 for i in x], [r["p_noisy"] for r in line], 0.4, color="#f4a259", label="noised image")
        ax.set_xticks(x)
        ax.set_xticklabels([repr(r["token"])[1:-1] or "·" for r in line], rotation=60, ha="right", fontsize=8)
        for label, r in zip(ax.get_xticklabels(), line):
            label.set_color(COLOURS[r["class"]])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("p(token)")
        ax.spines[["top", "right"]].set_visible(False)
        if row_index == 0:
            handles = ax.get_legend_handles_labels()[0] + [Patch(color=c, label=k) for k, c in COLOURS.items()]
            ax.legend(handles=handles, fontsize=7, ncol=5, loc="lower left", bbox_to_anchor=(0, 1.02), frameon=False)
    if title:
        # above the figure's top edge (the tight bbox grows to it): however many lines, it cannot cover the legend
        fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9, y=1.0, va="bottom")
    output = Path(output)
    output = output if output.suffix else output.with_suffix(".png")  # the name matplotlib writes, returned as is
    with atomic_path(output) as tmp:
        fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    return output
