"""`vdtrain analyze saliency`: image and text information flow to each kind of token (thesis Eq. 5.2, Fig. 5.3/5.4)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vdtrain.analysis.dependence_cli import add_model_arguments, load_model
from vdtrain.analysis.saliency import analyze_saliency
from vdtrain.models.base import ConversationError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vdtrain analyze saliency",
        description="Saliency I = |A ⊙ dL/dA| (averaged over heads) of the top-k most image-negative, "
        "-positive and -invariant answer tokens of each sample, split into the flow from image tokens and from "
        "earlier text tokens, per layer (thesis Eq. 5.2, Fig. 5.3); --example N adds one sample's response x "
        "response matrix (Fig. 5.4). The model is switched to EAGER attention (the only implementation that "
        "returns attention probabilities): slower and more memory than sdpa/flash; samples run one at a time "
        "and each graph is freed, so a 7B model fits on one 80 GB GPU. Writes OUT/saliency.json and "
        "OUT/figures/saliency_by_layer.png (+ saliency_example.png).",
    )
    add_model_arguments(p)
    p.add_argument("--data", required=True, help="LLaVA-format conversations .json/.jsonl (the paper: Detail-23k)")
    p.add_argument("--image-folder", help="folder the records' `image` paths are relative to")
    p.add_argument("--samples", type=int, default=500, help="samples drawn at random with --seed (500; all if fewer)")
    p.add_argument("--top-k", type=int, default=10, help="tokens picked per group and sample (10)")
    p.add_argument("--example", type=int, help="index of a sample whose response x response matrix is drawn")
    p.add_argument("--output-dir", required=True, help="saliency.json and figures/ go here")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain analyze saliency`: write saliency.json and the Fig. 5.3 (and 5.4) figures."""
    from vdtrain.analysis.figures import plot_saliency_by_layer, plot_saliency_example
    from vdtrain.data.conversations import load_conversations

    args = build_parser().parse_args(argv)
    try:
        records = load_conversations(args.data)
        if args.example is not None and not 0 <= args.example < len(records):
            raise ValueError(f"--example {args.example}: {args.data} has {len(records)} samples")
        model, processor, adapter = load_model(args)
        result = analyze_saliency(
            model, processor, records, image_folder=args.image_folder, adapter=adapter, samples=args.samples,
            top_k=args.top_k, noise_step=args.noise_step, seed=args.seed, max_length=args.max_length,
            example=args.example, progress=not args.no_progress,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, ConversationError, RuntimeError) as error:
        print(f"vdtrain analyze saliency: error: {error}", file=sys.stderr)
        return 1
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["settings"] |= {"model": args.model, "adapter": args.adapter, "data": str(args.data)}
    tmp = out / "saliency.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out / "saliency.json")
    if not result["layers"]:
        print(f"vdtrain analyze saliency: error: no sample could be analysed ({len(result['errors'])} errors, "
              f"see {out / 'saliency.json'})", file=sys.stderr)  # fmt: skip
        return 1
    plot_saliency_by_layer(result["layers"], out / "figures" / "saliency_by_layer.png")
    if result["example"]:
        plot_saliency_example(result["example"]["matrix"], result["example"]["tokens"],
                              out / "figures" / "saliency_example.png")  # fmt: skip
    for group, values in result["layers"].items():
        shares = ", ".join(f"{100 * v:.0f}%" for v in values["image_share"])
        print(f"{group}: {result['counts'][group]} tokens, image share by layer {shares}")
    print(f"-> {out / 'saliency.json'}")
    return 0
