"""`vdtrain merge`: fold a trained LoRA adapter (and its projector) into the base model's weights."""

from __future__ import annotations

import argparse
import logging
import sys

from vdtrain.commands import options


def build_parser() -> argparse.ArgumentParser:
    """Options of `vdtrain merge`."""
    parser = options.parser(
        "vdtrain merge",
        "Merge a LoRA adapter and its trained projector into the base model; the output loads with "
        "AutoModelForImageTextToText.from_pretrained (import vdtrain.models first for vdtrain's native ports).",
    )
    parser.add_argument("--adapter", required=True, help="adapter directory (training output or checkpoint-N)")
    parser.add_argument("--output", required=True, help="new directory for the merged model and processor")
    parser.add_argument(
        "--model", "--base", dest="model", default=None, help="base model (default: the adapter's base model)"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=options.DTYPES,
        help="dtype of the merged weights; default: the base checkpoint's own (a bfloat16 model stays bfloat16 "
        "wherever it is merged). " + options.DTYPE_HELP,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain merge`."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)  # messages say vdtrain
    from vdtrain.models.merge import merge_adapter

    options.check_adapter_path(args.adapter)
    base = options.check_model_path(args.model) if args.model else None
    dtype = "auto" if args.dtype is None else options.resolve_dtype(args.dtype)  # transformers' auto: as saved
    merge_adapter(args.adapter, args.output, base=base, dtype=dtype)
    print(f"vdtrain merge: {args.adapter} -> {args.output}")
    return 0
