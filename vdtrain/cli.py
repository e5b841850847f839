"""`vdtrain` command line: dispatches `vdtrain <command> [<subcommand>] ...` to each module's `main(argv)`."""

from __future__ import annotations

import importlib
import sys

# command -> module with `main(argv: list[str]) -> int`; nested groups map a subcommand the same way.
COMMANDS: dict[str, str | dict[str, str]] = {
    "train": "vdtrain.train_cli",
    "merge": "vdtrain.merge",
    "filter": "vdtrain.filtering_cli",
    "inspect": "vdtrain.inspect",
    "demo": "vdtrain.demo.run",
    "eval": {
        "chair": "vdtrain.evaluation.chair_cli",
        "pope": "vdtrain.evaluation.pope",
        "pope-build": "vdtrain.evaluation.pope_build",
        "generate": "vdtrain.evaluation.generate_cli",
        "run": "vdtrain.evaluation.protocol",
        "mme": "vdtrain.evaluation.mme_cli",
    },
    "analyze": {
        "dependence": "vdtrain.analysis.dependence_cli",
        "saliency": "vdtrain.analysis.saliency_cli",
    },
}

HELP = {
    "train": "fine-tune a vision-language model with the visual-dependence loss (YAML config + overrides)",
    "merge": "merge a LoRA adapter (and projector) into its base model",
    "filter": "score a dataset by visual dependence and remove a fraction (score | select | run)",
    "inspect": "plot per-token probabilities with the clean and the noised image (thesis Fig. 5.1)",
    "demo": "end-to-end synthetic hallucination benchmark on a tiny model (CPU, minutes)",
    "eval": "evaluation: chair | pope | pope-build | generate | run | mme",
    "analyze": "the thesis' analysis of a model: dependence (Fig. 5.2, 5.5) | saliency (Fig. 5.3, 5.4)",
    "dependence": "objects of generated captions by visual dependence (thesis Fig. 5.2, 5.5)",
    "saliency": "image and text information flow to each kind of token (Eq. 5.2, Fig. 5.3, 5.4; eager attention)",
    "mme": "score MME answers exactly as the benchmark's calculation.py (perception, cognition)",
}


def _usage(group: dict[str, str | dict[str, str]], prefix: str) -> str:
    lines = [f"usage: {prefix} <command> [options]", "", "commands:"]
    for name in group:
        lines.append(f"  {name:<12} {HELP.get(name, '')}".rstrip())
    lines.append("")
    lines.append(f"Run `{prefix} <command> --help` for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vdtrain` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    group: dict = COMMANDS
    prefix = "vdtrain"
    while True:
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage(group, prefix))
            return 0 if argv else 2
        name = argv.pop(0)
        if name not in group:
            print(f"{prefix}: unknown command {name!r}\n\n{_usage(group, prefix)}", file=sys.stderr)
            return 2
        target = group[name]
        prefix = f"{prefix} {name}"
        if isinstance(target, dict):
            group = target
            continue
        module = importlib.import_module(target)
        return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
