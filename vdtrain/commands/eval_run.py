"""`vdtrain eval run CONFIG.yaml`: a benchmark protocol (eval/*.yaml) end to end, generation then scoring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdtrain.commands import options
from vdtrain.commands.eval_generate import add_decoding_arguments


def build_parser() -> argparse.ArgumentParser:
    """Options of `vdtrain eval run`."""
    p = options.parser(
        "vdtrain eval run",
        "Run an evaluation protocol (eval/*.yaml): generate answers, score them, print the summary.",
    )
    p.add_argument("config", help="protocol config, e.g. eval/chair-coco500.yaml or eval/pope-coco.yaml")
    options.add_model_options(p)
    p.add_argument("--image-folder", required=True, help="folder of the benchmark's images (COCO val2014)")
    p.add_argument("--output-dir", required=True, help="answers, scores and summary.json go here (resumed)")
    p.add_argument("--coco-dir", help="CHAIR: folder with instances_val2014.json and captions_val2014.json")
    p.add_argument("--nltk-data", help="CHAIR: NLTK data directory")
    p.add_argument("--cache-dir", help="CHAIR: ground-truth cache directory")
    p.add_argument("--limit", type=int, help="only the first N questions of each file (smoke runs; not comparable)")
    p.add_argument("--overwrite", action="store_true", help="regenerate instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    add_decoding_arguments(p, defaults={})
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval run`: run one protocol config for a model and print its metrics."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.evaluation.protocol import _summary_line, load_protocol, run_protocol

    config = load_protocol(args.config)
    summary = run_protocol(config, args)
    decoding = summary["decoding"]
    limit = f", limit {args.limit}" if args.limit else ""
    line = _summary_line(summary["benchmark"], summary["metrics"])
    print(
        f"{summary['benchmark']} ({decoding['decoding']}, max_new_tokens {decoding['max_new_tokens']}{limit}): {line}"
    )
    print(f"-> {Path(args.output_dir) / 'summary.json'}")
    return 0


def on_interrupt(argv: list[str]) -> str:
    """What Ctrl-C leaves: the answers generated so far, which the same command resumes after."""
    output_dir = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--output-dir"), "the output dir")
    return f"the answers generated so far are kept in {output_dir}/answers; rerun the same command to resume"
