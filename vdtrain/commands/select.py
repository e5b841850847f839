"""`vdtrain select active`: choose what to label next (multimodal active learning)."""

from __future__ import annotations

import argparse
import sys

from vdtrain.commands import options, select_active

SUBCOMMANDS = ("active",)  # the error boundary names them: `vdtrain select active: error: ...`


def build_parser() -> argparse.ArgumentParser:
    """The `vdtrain select` parser with its subcommands."""
    parser = options.parser("vdtrain select", "Choose what to label or train on.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{active}")
    active = commands.add_parser(
        "active",
        help="pool-based active learning over embeddings (BMMAL, CCMA, BADGE, ...)",
        description=select_active.DESCRIPTION,
        formatter_class=options.HelpFormatter,
    )
    select_active.add_arguments(active)
    options.add_debug(active)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain select`."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "active":
        return select_active.main(args)
    return 2
