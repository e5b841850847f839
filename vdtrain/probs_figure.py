"""Per-token probabilities with the clean and the noised image, and their figure (thesis Figure 5.1); the library
behind `vdtrain inspect`."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vdtrain.dependence import POSITIVE_THRESHOLD, target_logprobs, visual_dependence
from vdtrain.models.base import tokenizer_of
from vdtrain.noise import add_diffusion_noise

COLOURS = {"image-positive": "#2a9d4b", "image-invariant": "#8c8c8c", "image-negative": "#d1495b"}


def token_class(d: float) -> str:
    """The thesis' three token classes at |d| > 0.25."""
    if d > POSITIVE_THRESHOLD:
        return "image-positive"
    return "image-negative" if d < -POSITIVE_THRESHOLD else "image-invariant"


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


@torch.no_grad()
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
    """For each response token: its text, p with the clean image, p with the noised image, d and its class."""
    messages = [{"role": "user", "content": "<image>\n" + prompt}, {"role": "assistant", "content": response}]
    n_image = adapter.num_image_tokens(processor, image.size)
    example = adapter.encode(messages, processor, n_image)[-1]
    device = model.device
    batch = {"input_ids": torch.tensor([example.input_ids], device=device)}
    batch.update({key: torch.tensor([values], device=device) for key, values in example.extra.items()})
    pixels = {k: v.to(device) for k, v in adapter.image_inputs(processor, [image]).items()}
    labels = torch.tensor([example.labels], device=device)
    clean = {**batch, **pixels}
    generator = torch.Generator().manual_seed(seed)
    noised = dict(clean)
    noised[adapter.pixel_key] = add_diffusion_noise(pixels[adapter.pixel_key], noise_step, generator=generator)
    model.eval()
    lc = target_logprobs(model(**clean).logits, labels)[0]
    ln = target_logprobs(model(**noised).logits, labels)[0]
    d = visual_dependence(lc, ln)
    tokenizer = tokenizer_of(processor)
    rows = []
    for position, label in enumerate(example.labels):
        if label == -100 or position == 0:
            continue
        value = d[position].item()
        rows.append(
            {
                "token": tokenizer.decode([label]),
                "p_clean": lc[position].exp().item(),
                "p_noisy": ln[position].exp().item(),
                "d": value,
                "class": token_class(value),
            }
        )
    return rows


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
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, bbox_inches="tight")
    plt.close(fig)
    return output
