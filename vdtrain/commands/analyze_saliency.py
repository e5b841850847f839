"""`vdtrain analyze saliency`: image and text information flow to each kind of token (thesis Eq. 5.2, Fig. 5.3/5.4)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vdtrain.commands import options
from vdtrain.errors import InputError

DESCRIPTION = (
    "Saliency I = |A * dL/dA| (averaged over heads) of the top-k most image-negative, -positive and -invariant "
    "answer tokens of each sample, split into the flow from image tokens and from earlier text tokens, per layer "
    "(thesis Eq. 5.2, Fig. 5.3); --example N adds one sample's response x response matrix (Fig. 5.4).\n\n"
    "The model is switched to EAGER attention (the only implementation that returns attention probabilities): "
    "slower and more memory than sdpa/flash. Samples run one at a time and each graph is freed, so a 7B model fits "
    "on one 80 GB GPU. Writes OUT/saliency.json and OUT/figures/saliency_by_layer.png (+ saliency_example.png)."
)


def build_parser() -> argparse.ArgumentParser:
    p = options.parser("vdtrain analyze saliency", DESCRIPTION)
    options.add_teacher_forcing_options(p)
    p.add_argument("--data", required=True, help="LLaVA-format conversations .json/.jsonl (the paper: Detail-23k)")
    p.add_argument("--image-folder", help="folder the records' `image` paths are relative to")
    p.add_argument(
        "--samples", type=options.positive_int, default=500, help="samples drawn at random with --seed (all if fewer)"
    )
    p.add_argument("--top-k", type=options.positive_int, default=10, help="tokens picked per group and sample")
    p.add_argument("--example", type=int, help="index of a sample whose response x response matrix is drawn")
    p.add_argument("--output-dir", required=True, help="saliency.json and figures/ go here")
    return p


def main(argv: list[str]) -> int:
    """`vdtrain analyze saliency`: write saliency.json and the Fig. 5.3 (and 5.4) figures."""
    args = build_parser().parse_args(argv)
    from vdtrain.analysis.figures import plot_saliency_by_layer, plot_saliency_example
    from vdtrain.analysis.saliency import analyze_saliency
    from vdtrain.data.conversations import load_conversations
    from vdtrain.io import atomic_write_json

    records = load_conversations(args.data)
    if args.example is not None and not 0 <= args.example < len(records):
        raise InputError(f"--example {args.example}: {args.data} has {len(records)} samples")
    model, processor, adapter = options.load_model(args)
    result = analyze_saliency(
        model,
        processor,
        records,
        image_folder=args.image_folder,
        adapter=adapter,
        samples=args.samples,
        top_k=args.top_k,
        noise_step=args.noise_step,
        seed=args.seed,
        max_length=args.max_length,
        example=args.example,
        progress=not args.no_progress,
    )
    out = Path(args.output_dir)
    result["settings"] |= {"model": args.model, "adapter": args.adapter, "data": str(args.data)}
    atomic_write_json(out / "saliency.json", result, indent=1)
    if not result["layers"]:
        raise InputError(
            f"no sample of {args.data} could be analysed ({len(result['errors'])} errors, see {out / 'saliency.json'})"
        )
    plot_saliency_by_layer(result["layers"], out / "figures" / "saliency_by_layer.png")
    if result["example"]:
        example = result["example"]
        plot_saliency_example(example["matrix"], example["tokens"], out / "figures" / "saliency_example.png")
    for group, values in result["layers"].items():
        shares = ", ".join(f"{100 * v:.0f}%" for v in values["image_share"])
        print(f"{group}: {result['counts'][group]} tokens, image share by layer {shares}")
    print(f"-> {out / 'saliency.json'}")
    return 0
