"""`vdtrain select <subcommand>`: choose what to train on or label. One entry in `SUBCOMMANDS` adds a subcommand
(a module with `main(argv) -> int` and its one-line help)."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with `main(argv: list[str]) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "pairs": (
        "vdtrain.commands.select_pairs",
        "cold-start selection of B image-text pairs from an unlabelled pool (MMCSAL, ActiveFT, k-center, k-means)",
    ),
    "active": (
        "vdtrain.commands.select_active",
        "multimodal active learning: what to label next, round by round (BMMAL, CCMA, BADGE, CoreSet, ...)",
    ),
}


def usage() -> str:
    """The `vdtrain select --help` text: one line per subcommand."""
    lines = ["usage: vdtrain select <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "Run `vdtrain select <subcommand> --help` for its options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `vdtrain select <subcommand> ...` to the subcommand's module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"vdtrain select: error: unknown subcommand {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(importlib.import_module(SUBCOMMANDS[argv[0]][0]).main(argv[1:]) or 0)
