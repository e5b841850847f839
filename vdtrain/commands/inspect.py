"""`vdtrain inspect`: plot each response token's probability with the clean and the noised image (thesis Fig. 5.1)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdtrain.commands import options
from vdtrain.io import atomic_write_json

CLASSES = ("image-positive", "image-invariant", "image-negative")


def build_parser() -> argparse.ArgumentParser:
    """Options of `vdtrain inspect`."""
    parser = options.parser(
        "vdtrain inspect",
        "Plot each response token's probability with the clean and with the diffusion-noised image, coloured as "
        "image-positive (d > 0.25), invariant or image-negative (d < -0.25): the thesis' Figure 5.1.",
    )
    options.add_model_options(parser)
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--prompt", required=True, help="the user's question")
    parser.add_argument("--response", help="response to score (default: the model's greedy answer)")
    parser.add_argument("--output", required=True, help="figure path (.png); the numbers go to the same name .json")
    options.add_noise_step(parser)
    options.add_seed(parser, "the noise")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="length limit of a generated response")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain inspect`."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.analysis.token_figure import greedy_response, plot_token_dependence, token_dependence
    from vdtrain.data.images import open_image, to_rgb
    from vdtrain.errors import InputError

    if not Path(args.image).is_file():
        raise FileNotFoundError(f"--image {args.image}: no such file")
    try:  # before the model loads: a bad image fails in a second, not after minutes
        with open_image(args.image) as opened:
            image = to_rgb(opened)
    except (OSError, ValueError) as error:
        raise InputError(f"--image {args.image}: cannot be read as an image ({error})") from None
    model, processor, adapter = options.load_model(args)
    response = args.response or greedy_response(model, processor, adapter, image, args.prompt, args.max_new_tokens)
    rows = token_dependence(model, processor, adapter, image, args.prompt, response, args.noise_step, args.seed)
    figure = plot_token_dependence(rows, args.output, image, title=f"Q: {args.prompt}   A: {response}")
    atomic_write_json(
        figure.with_suffix(".json"), {"prompt": args.prompt, "response": response, "tokens": rows}, indent=None
    )
    counts = {name: sum(r["class"] == name for r in rows) for name in CLASSES}
    print(f"{len(rows)} tokens: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" -> {figure}")
    return 0
