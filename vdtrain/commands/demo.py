"""`vdtrain demo`: the command line of the synthetic end-to-end benchmark; `vdtrain.demo.run` does the work."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from vdtrain.commands import options
from vdtrain.errors import UsageError

DESCRIPTION = (
    "Train a tiny LLaVA on synthetic shapes with and without visual-dependence weighting, evaluate CHAIR / POPE / "
    "partner hallucination, and write a report (CPU, minutes; CHAIR's NLTK data is fetched once into ~/nltk_data on "
    "first use)."
)


def build_parser() -> argparse.ArgumentParser:
    """Options of `vdtrain demo`."""
    p = options.parser("vdtrain demo", DESCRIPTION)
    p.add_argument(
        "--quick",
        action="store_true",
        help="pipeline check: tiny data, few steps, 1 seed (about 2 min on 2 idle cores; the default run up to ~20)",
    )
    p.add_argument("--seeds", type=int, help="number of seeds (default 3; --quick: 1)")
    p.add_argument("--steps", type=int, help="optimizer steps in all, an even number; the variants branch at half")
    p.add_argument("--temperature", type=float, help="tau of the vd-neg / vd-pos softmax (default 1.0)")
    p.add_argument(
        "--output-dir",
        default="vdtrain-demo",
        help="where data, runs, results.json, report.md go; a rerun with the same settings goes on from the jobs "
        "(seed, variant) already finished there",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --output-dir (without it, a run with other settings there is refused)",
    )
    p.add_argument(
        "--workers",
        type=int,
        nargs="?",
        const=0,
        default=1,
        help="parallel worker processes (default 1; --workers alone: one per CPU core)",
    )
    p.add_argument(
        "--nltk-data",
        help="NLTK data directory for CHAIR (default: NLTK_DATA or NLTK's paths; what is missing is fetched once "
        "into ~/nltk_data)",
    )
    return p


def main(argv: list[str]) -> int:
    """`vdtrain demo`: run the protocol, print the results table, write the report."""
    args = build_parser().parse_args(argv)
    from vdtrain.demo.run import init_process, run_demo
    from vdtrain.demo.settings import demo_settings

    overrides = {"steps": args.steps, "seeds": args.seeds, "temperature": args.temperature}
    settings = replace(demo_settings(args.quick), **{k: v for k, v in overrides.items() if v is not None})
    settings.workers = args.workers if args.workers > 0 else os.cpu_count() or 1
    if settings.steps < 2 or settings.steps % 2 or settings.seeds < 1:
        raise UsageError("--steps must be an even number >= 2 and --seeds >= 1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the jobs' own bars (tokenizing, saving shards): one bar per phase
    init_process(os.cpu_count() or 1, args.nltk_data)
    command = " ".join(["vdtrain demo", *argv])
    results = run_demo(args.output_dir, settings, args.nltk_data, command=command, overwrite=args.overwrite)
    print(f"\n{results['table']}\n")
    print(f"Report: {Path(args.output_dir) / 'report.md'}  (wall time {results['setup']['wall_time_s'] / 60:.1f} min)")
    return 0
