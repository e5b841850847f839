"""The README's demo table and sentences from a run's `results.json`: `python -m vdtrain.demo.readme RESULTS`.

The README quotes a default `vdtrain demo` run; this prints that block (the date, the stack, mean ± std per variant,
paired differences with their 95% intervals worded as the report words them), so it is regenerated, not retyped.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vdtrain.demo.intervals import describe_difference
from vdtrain.demo.report import Column, format_table, paired_differences, summarize

README_COLUMNS = (
    Column("counterfactual/partner_rate", "Partner ↓"),
    Column("counterfactual/CHAIRs", "CHAIR_s ↓"),
    Column("counterfactual/CHAIRi", "CHAIR_i ↓"),
    Column("counterfactual/Recall", "Recall ↑"),
    Column("counterfactual/length", "Len", percent=False),
    Column("counterfactual/pope_f1", "POPE F1 cf"),
)
PARTNER = Column("counterfactual/partner_rate", "partner rate")


def _stack(setup: Mapping[str, Any]) -> str:
    machine = setup.get("machine", "")
    if "transformers" in machine:
        return machine
    import transformers

    return f"{machine}, Python {platform.python_version()}, transformers {transformers.__version__} (this install)"


def readme_block(results: Mapping[str, Any]) -> str:
    """Markdown for the README: the run's provenance, the main table and the partner-rate differences."""
    setup, settings = results["setup"], results["settings"]
    runs = {s: {row: r["metrics"] for row, r in per_seed.items()} for s, per_seed in results["runs"].items()}
    rows = [r for r in results["rows"] if not r.startswith("mle @")]
    differences = paired_differences(runs, [tuple(p) for p in results["pairs"]])
    lines = [
        f"From a run of `{setup['command']}` ({setup['date']}, {setup['wall_time_s'] / 60:.1f} min; "
        f"{_stack(setup)}; load average {setup['load_start']} at start), {settings['seeds']} "
        f"seed{'s' * (settings['seeds'] > 1)}, mean ± std; counterfactual split, percent:",
        "",
        format_table(summarize(runs), README_COLUMNS, rows),
        "",
        "Paired per seed (mean of the per-seed differences, 95% interval over seeds; "
        "`mle @ len(X)` is the MLE model decoded to X's mean caption length):",
        "",
    ]
    for label, stats in differences.items():
        lines.append("- " + describe_difference(label, PARTNER.header, stats.get(PARTNER.key), PARTNER.percent))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the README block of `results.json` (default: `vdtrain-demo/results.json`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path = Path(argv[0] if argv else "vdtrain-demo/results.json")
    print(readme_block(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
