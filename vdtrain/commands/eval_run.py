"""`vdtrain eval run CONFIG.yaml`: a benchmark protocol (eval/*.yaml) end to end, generation then scoring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdtrain.commands import options


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
    p.add_argument(
        "--limit",
        type=options.positive_int,
        help="only the first N questions of each file (MME: of whole images; smoke runs; not comparable)",
    )
    p.add_argument("--overwrite", action="store_true", help="regenerate instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    options.add_decoding_arguments(p, defaults={})
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval run`: run one protocol config for a model and print its metrics."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.evaluation.protocol import ProtocolRun, load_protocol, run_protocol
    from vdtrain.locks import output_lock

    config = load_protocol(args.config)
    run = ProtocolRun(
        config_path=args.config,
        model=args.model,
        image_folder=args.image_folder,
        output_dir=args.output_dir,
        decoding=options.decoding_options(args, config.get("decoding")),
        adapter=args.adapter,
        dtype=args.dtype,
        batch_size=args.batch_size,
        coco_dir=args.coco_dir,
        nltk_data=args.nltk_data,
        cache_dir=args.cache_dir,
        limit=args.limit,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    with output_lock(args.output_dir, "vdtrain eval run"):
        summary = run_protocol(
            config, run, lambda: options.load_model(args), lambda line: print(line, file=sys.stderr)
        )
    decoding = summary["decoding"]
    limit = f", limit {args.limit}" if args.limit else ""
    line = summary_line(summary["benchmark"], summary["metrics"], summary.get("categories"))
    print(
        f"{summary['benchmark']} ({decoding['decoding']}, max_new_tokens {decoding['max_new_tokens']}{limit}): {line}"
    )
    print(f"-> {Path(args.output_dir) / 'summary.json'}")
    return 0


def summary_line(benchmark: str, metrics: dict, categories: dict | None = None) -> str:
    """The printed result line; MME's says how many categories each total sums (absent folders are left out)."""
    if benchmark == "mme":
        counts = categories or {}
        return "  ".join(
            f"{group} {metrics[group]:.1f}" + (f" ({len(counts[group])} categories)" if group in counts else "")
            for group in ("perception", "cognition")
        )
    if benchmark == "chair":
        return (
            f"CHAIRs {100 * metrics['CHAIRs']:.1f}  CHAIRi {100 * metrics['CHAIRi']:.1f}  "
            f"Recall {100 * metrics['Recall']:.1f}  Len {metrics['mean_length']:.1f}"
        )
    return "  ".join(
        f"{name}: acc {100 * m['accuracy']:.1f} F1 {100 * m['f1']:.1f} yes {100 * m['yes_ratio']:.1f}"
        for name, m in metrics.items()
    )


def on_interrupt(argv: list[str]) -> str:
    """What Ctrl-C leaves: the answers generated so far, which the same command resumes after."""
    output_dir = options.flag_value(argv, "--output-dir") or "the output dir"
    return f"the answers generated so far are kept in {output_dir}/answers; rerun the same command to resume"
