"""Information flow to image-positive, -invariant and -negative tokens (thesis Eq. 5.2, Fig. 5.3 and 5.4).

For a picked response token `y_t`, `L` is the cross-entropy of predicting it (from position `t - 1`), and at every
layer the saliency `I = |A ⊙ ∂L/∂A|` is averaged over heads, `A` being the attention probabilities. Row `t - 1` of
`I` says how much each earlier position passes to the prediction: its mean over the image-token keys is the image
flow, its mean over the other keys `0..t-1` the text flow. The model runs with eager attention (the only kind that
returns `A`), one sample at a time; the graph is freed after each sample.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vdtrain.analysis.object_dependence import GROUPS, teacher_forced_dependence
from vdtrain.data.samples import collate_samples, prepare_sample
from vdtrain.errors import DataError
from vdtrain.models.base import ModelAdapter, get_adapter, pad_token_id, tokenizer_of, unwrap_model


def use_eager_attention(model: torch.nn.Module) -> None:
    """Switch the model (and its sub-models) to eager attention, which returns the attention probabilities."""
    base = unwrap_model(model)
    base.set_attn_implementation("eager")
    if base.config._attn_implementation != "eager":
        raise RuntimeError(f"{type(base).__name__} cannot switch to eager attention; saliency needs it")


def pick_tokens(d: Sequence[float], top_k: int) -> dict[str, list[int]]:
    """Indices of the `top_k` most negative (lowest d), then most positive (highest d) and then most invariant
    (smallest |d|) tokens, each group drawn from the tokens the earlier groups left (an answer shorter than
    `3 top_k` tokens gives smaller groups). Ties keep the earlier token."""
    left = list(range(len(d)))
    picked: dict[str, list[int]] = {}
    for group, key in (("neg", lambda k: d[k]), ("pos", lambda k: -d[k]), ("inv", lambda k: abs(d[k]))):
        chosen = sorted(left, key=key)[:top_k]
        picked[group] = sorted(chosen)
        left = [k for k in left if k not in chosen]
    return {group: picked[group] for group in GROUPS}


def _grad_forward(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
    """`(logits (L, V), attentions per layer (1, H, L, L))` of one sequence, the attentions in the autograd graph.

    The parameters stay frozen; the input embeddings are made to require grad so the graph reaches `A`.
    """
    embeddings = unwrap_model(model).get_input_embeddings()
    handle = embeddings.register_forward_hook(lambda module, args, output: output.requires_grad_(True))
    try:
        with torch.enable_grad():
            output = model(**inputs, output_attentions=True)
    finally:
        handle.remove()
    attentions = tuple(a for a in (output.attentions or ()) if a is not None)
    if not attentions or not attentions[0].requires_grad:
        raise RuntimeError("the model returned no attention probabilities in the graph; is attention eager?")
    return output.logits[0], attentions


def token_saliency_rows(
    logits: torch.Tensor, attentions: Sequence[torch.Tensor], position: int, target: int
) -> torch.Tensor:
    """`(layers, L)`: row `position - 1` of `I = mean_heads |A ⊙ ∂L/∂A|` per layer, `L` the cross-entropy of
    `target` at `position` (read from the logits at `position - 1`)."""
    loss = F.cross_entropy(logits[position - 1].float()[None], torch.tensor([target], device=logits.device))
    grads = torch.autograd.grad(loss, attentions, retain_graph=True)
    query = position - 1
    rows = [(a[0, :, query].float() * g[0, :, query].float()).abs().mean(0) for a, g in zip(attentions, grads)]
    return torch.stack(rows)  # (layers, L)


def example_matrix(
    logits: torch.Tensor, attentions: Sequence[torch.Tensor], positions: Sequence[int], targets: Sequence[int]
) -> torch.Tensor:
    """`(n, n)` saliency among response tokens at `positions`: the loss summed over all of them, `I` averaged over
    heads and layers, rows the query token, columns the key token (Fig. 5.4)."""
    index = torch.tensor(list(positions), device=logits.device)
    labels = torch.tensor(list(targets), device=logits.device)
    loss = F.cross_entropy(logits[index - 1].float(), labels, reduction="sum")
    grads = torch.autograd.grad(loss, attentions, retain_graph=True)
    total = sum((a[0].float() * g[0].float()).abs().mean(0) for a, g in zip(attentions, grads)) / len(attentions)
    return total[index][:, index]


def sample_saliency(
    model: torch.nn.Module,
    sample: dict[str, Any],
    adapter: ModelAdapter,
    processor: Any,
    *,
    noise_step: int,
    top_k: int,
    image_token_id: int,
    example: bool = False,
) -> dict[str, Any]:
    """Picked tokens of one prepared sample (`prepare_sample`) with their image and text flow per layer."""
    tokenizer = tokenizer_of(processor)
    pad = pad_token_id(processor)
    batch = collate_samples([sample], pad)
    forced = teacher_forced_dependence(model, batch, noise_step=noise_step, pixel_key=adapter.pixel_key)[0]
    keep = [k for k, flag in enumerate(forced["end_of_turn"]) if not flag]
    positions = [forced["positions"][k] for k in keep]
    ids = [forced["ids"][k] for k in keep]
    ds = [forced["d"][k] for k in keep]
    device = next(model.parameters()).device
    dtype = getattr(model, "dtype", torch.float32)
    inputs = {k: v.to(device) for k, v in batch["inputs"].items() if k != "labels"}
    if inputs[adapter.pixel_key].is_floating_point():
        inputs[adapter.pixel_key] = inputs[adapter.pixel_key].to(dtype)
    image = inputs["input_ids"][0] == image_token_id  # (L,)
    if not image.any():
        raise DataError(f"sample {sample['id']!r} has no image tokens (id {image_token_id}) in its input")
    logits, attentions = _grad_forward(model, inputs)
    picked = []
    for group, chosen in pick_tokens(ds, top_k).items():
        for k in chosen:
            rows = token_saliency_rows(logits, attentions, positions[k], ids[k]).detach()  # (layers, L)
            text = ~image[: positions[k]]  # keys 0..t-1 that are not image tokens
            picked.append(
                {
                    "group": group,
                    "position": positions[k],
                    "token": tokenizer.decode([ids[k]]),
                    "d": ds[k],
                    "image": rows[:, : positions[k]][:, image[: positions[k]]].mean(1).tolist(),
                    "text": rows[:, : positions[k]][:, text].mean(1).tolist(),
                }
            )
    result: dict[str, Any] = {"id": sample["id"], "index": sample["index"], "tokens": picked}
    if example:
        matrix = example_matrix(logits, attentions, positions, ids).detach().cpu()
        result["example"] = {"tokens": [tokenizer.decode([t]) for t in ids], "d": ds, "matrix": matrix.tolist()}
    del logits, attentions
    return result


def layer_means(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per group and layer: mean image flow, mean text flow over all picked tokens, and the image share
    `image / (image + text)` of those means; plus the number of picked tokens per group."""
    layers: dict[str, Any] = {}
    counts = {}
    for group in GROUPS:
        tokens = [t for s in samples for t in s["tokens"] if t["group"] == group]
        counts[group] = len(tokens)
        if not tokens:
            continue
        n_layers = len(tokens[0]["image"])
        image = [sum(t["image"][layer] for t in tokens) / len(tokens) for layer in range(n_layers)]
        text = [sum(t["text"][layer] for t in tokens) / len(tokens) for layer in range(n_layers)]
        share = [i / (i + x) if i + x > 0 else 0.0 for i, x in zip(image, text)]
        layers[group] = {"image": image, "text": text, "image_share": share}
    return {"layers": layers, "counts": counts}


def select_samples(n_records: int, samples: int | None, seed: int) -> list[int]:
    """Indices of `samples` records drawn at random (seeded), in file order; all records if `samples` is None or
    not smaller than their number."""
    if samples is None or samples >= n_records:
        return list(range(n_records))
    return sorted(random.Random(seed).sample(range(n_records), samples))


def analyze_saliency(
    model: torch.nn.Module,
    processor: Any,
    records: Sequence[Mapping[str, Any]],
    *,
    image_folder: str | os.PathLike | None,
    adapter: ModelAdapter | None = None,
    samples: int | None = 500,
    top_k: int = 10,
    noise_step: int = 900,
    seed: int = 0,
    max_length: int = 2048,
    example: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """`saliency.json`'s content for LLaVA-format conversation records (first question and answer of each).

    Switches the model to eager attention. Sample `i`'s noise (for picking tokens by d) comes from the filter's
    per-sample generator `(seed, i)`; `samples` records are drawn at random with `seed`.

    Args:
        example (`int`, *optional*): index (in `records`) of a sample whose response x response matrix is kept.
    """
    from tqdm.auto import tqdm

    adapter = adapter or get_adapter(model, processor)
    image_token_id = adapter.image_token_id(processor)
    use_eager_attention(model)
    model.eval()
    chosen = select_samples(len(records), samples, seed)
    if example is not None and example not in chosen:
        chosen = sorted([*chosen, example])
    results, errors, kept = [], [], None
    for index in tqdm(chosen, desc="analyze saliency", disable=not progress):
        record = dict(records[index])
        record["conversations"] = list(record.get("conversations") or [])[:2]  # the first question and answer
        sample = prepare_sample(record, index, adapter, processor, image_folder, max_length=max_length, seed=seed)
        if "error" in sample:
            errors.append({"index": index, "id": sample["id"], "error": sample["error"]})
            continue
        try:
            result = sample_saliency(
                model,
                sample,
                adapter,
                processor,
                noise_step=noise_step,
                top_k=top_k,
                image_token_id=image_token_id,
                example=index == example,
            )
        except ValueError as error:
            errors.append({"index": index, "id": sample["id"], "error": str(error)})
            continue
        if "example" in result:
            kept = {"index": index, "id": sample["id"], **result.pop("example")}
        results.append(result)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    summary = layer_means(results)
    settings = {"samples": len(chosen), "top_k": top_k, "noise_step": noise_step, "seed": seed}
    return {"settings": settings, **summary, "example": kept, "samples": results, "errors": errors}
