"""`vdtrain select pairs`: cold-start selection of B image-text pairs from an unlabelled pool (thesis ch. 4)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from vdtrain.commands import options

METHODS = ("random", "kmeans", "kcenter", "activeft", "mmcsal")  # vdtrain.selection.pairs.METHODS (not imported)
FORMS = ("thesis", "contrastive")

DESCRIPTION = """Cold-start selection (thesis ch. 4, MMCSAL): pick B pairs of an unlabelled pool to label or to build
a dataset from, using frozen embeddings of both modalities (`vdtrain embed`, or any (N, D) .npy files in record
order).

  random    B pairs drawn uniformly
  kmeans    the pair nearest each of B k-means centres of the joint features
  kcenter   greedy k-center on the joint features
  activeft  ActiveFT's parametric selection (distribution gap - diversity)
  mmcsal    ActiveFT plus MMCSAL's cross-modal alignment term (both modalities in one space: a dual encoder's
            towers, or --stage1)

--stage1 first trains projector-only prototype-contrastive heads on the frozen features (MMCSAL stage 1; the thesis
trains whole encoders) and selects in their shared space. Writes OUT/selected_indices.json (indices, seed,
settings, embedding fingerprints) and OUT/summary.json; with --data also OUT/selected.json (the chosen records).
"""


def build_parser() -> argparse.ArgumentParser:
    """The `vdtrain select pairs` parser."""
    parser = options.parser("vdtrain select pairs", DESCRIPTION)
    parser.add_argument(
        "--embeddings", default=None, help="a `vdtrain embed --encoder` directory with image.npy and text.npy"
    )
    parser.add_argument("--image-embeddings", default=None, help="image embeddings: an (N, D) .npy or an embed dir")
    parser.add_argument("--text-embeddings", default=None, help="text embeddings: an (N, D) .npy or an embed dir")
    parser.add_argument(
        "--budget", type=float, required=True, help="pairs to select: a fraction (0.05) or a count (500)"
    )
    parser.add_argument("--method", default="mmcsal", choices=METHODS, help="selection method")
    parser.add_argument("--output-dir", required=True, help="where selected_indices.json and summary.json go")
    parser.add_argument(
        "--data", default=None, help="the pool's records (JSON list or JSONL, record order); writes selected.json"
    )
    options.add_seed(parser, "initial parameters, mini-batches, k-means, stage 1, random")
    group = parser.add_argument_group("parametric selection (activeft, mmcsal)")
    group.add_argument(
        "--form", default="thesis", choices=FORMS, help="thesis: gap - λ_div diversity; contrastive: ActiveFT's code"
    )
    group.add_argument("--lambda-div", type=float, default=1.0, help="weight of the diversity term")
    group.add_argument(
        "--lambda-align", type=float, default=1.0, help="weight of the alignment term (mmcsal); > 0 raises alignment"
    )
    group.add_argument("--tau", type=float, default=0.07, help="temperature")
    group.add_argument("--steps", type=options.positive_int, default=300, help="Adam steps")
    group.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine-annealed)")
    group.add_argument(
        "--pool-batch-size", type=options.positive_int, default=None, help="pool rows per step (default: all)"
    )
    stage1 = parser.add_argument_group("stage 1 (projector-only prototype-contrastive heads)")
    stage1.add_argument("--stage1", action="store_true", help="train the heads first and select in their shared space")
    stage1.add_argument("--stage1-dim", type=options.positive_int, default=128, help="width of the shared space")
    stage1.add_argument("--stage1-epochs", type=options.positive_int, default=20, help="passes over the pool")
    stage1.add_argument(
        "--stage1-warmup", type=int, default=5, help="epochs of InfoNCE alone before the prototype term"
    )
    return parser


def _inputs(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    from vdtrain.errors import UsageError
    from vdtrain.selection.store import load_embeddings

    if args.embeddings:
        image_source, text_source = (args.embeddings, "image"), (args.embeddings, "text")
    elif args.image_embeddings and args.text_embeddings:
        image_source, text_source = (args.image_embeddings, "image"), (args.text_embeddings, "text")
    else:
        raise UsageError("give --embeddings DIR, or both --image-embeddings and --text-embeddings")
    image, image_print = load_embeddings(*image_source)
    text, text_print = load_embeddings(*text_source)
    return image, text, {"image": image_print, "text": text_print}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Select and write the outputs; returns the summary."""
    import torch

    from vdtrain.io import atomic_write_json, read_records, records_format, write_records
    from vdtrain.selection.pairs import budget_count, pair_alignment, select_pairs
    from vdtrain.selection.prototypes import modality_gap, train_projectors

    image, text, fingerprints = _inputs(args)
    if image.shape[0] != text.shape[0]:
        raise ValueError(f"{image.shape[0]} image rows but {text.shape[0]} text rows: the pairs must be row-aligned")
    usable = ~(torch.isnan(image).any(1) | torch.isnan(text).any(1))  # rows that failed to embed
    pool = usable.nonzero().flatten()
    image, text = image[pool], text[pool]
    budget = budget_count(args.budget, len(pool))
    if args.stage1:
        image, text = train_projectors(
            image, text, dim=args.stage1_dim, epochs=args.stage1_epochs, warmup=args.stage1_warmup, seed=args.seed
        )
    picks = select_pairs(
        image,
        text,
        budget,
        method=args.method,
        seed=args.seed,
        form=args.form,
        lambda_div=args.lambda_div,
        lambda_align=args.lambda_align,
        tau=args.tau,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.pool_batch_size,
    )
    chosen = pool[picks]
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("form", "lambda_div", "lambda_align", "tau", "steps", "lr", "stage1")}
    atomic_write_json(
        output_dir / "selected_indices.json",
        {
            "indices": sorted(chosen.tolist()),
            "pick_order": chosen.tolist(),
            "method": args.method,
            "seed": args.seed,
            "budget": budget,
            "pool_size": int(usable.numel()),
            "skipped_rows": (~usable).nonzero().flatten().tolist(),
            "settings": settings,
            "embeddings": fingerprints,
        },
    )
    summary: dict[str, Any] = {"method": args.method, "budget": budget, "pool_size": int(usable.numel())}
    if image.shape[1] == text.shape[1]:
        alignment = pair_alignment(image, text)
        summary["mean_alignment"] = {"pool": float(alignment.mean()), "selected": float(alignment[picks].mean())}
        summary["modality_gap"] = modality_gap(image, text)
    if args.data:
        records = read_records(args.data)
        if len(records) != usable.numel():
            raise ValueError(f"--data {args.data} has {len(records)} records, the embeddings {usable.numel()} rows")
        write_records(
            output_dir / "selected.json", [records[i] for i in sorted(chosen.tolist())], records_format(args.data)
        )
        summary["selected_file"] = str(output_dir / "selected.json")
    atomic_write_json(output_dir / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain select pairs`."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = run(args)
    line = f"vdtrain select pairs: {summary['budget']} of {summary['pool_size']} pairs by {summary['method']}"
    if "mean_alignment" in summary:
        cosine = summary["mean_alignment"]
        line += f"; image-text cosine {cosine['selected']:.3f} (pool {cosine['pool']:.3f})"
    print(line + f" -> {Path(args.output_dir) / 'selected_indices.json'}")
    return 0
