"""`vdtrain eval pope-build`: write the random / popular / adversarial POPE question sets from COCO instances."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdtrain.commands import options
from vdtrain.errors import InputError
from vdtrain.io import atomic_write_jsonl


def build_parser() -> argparse.ArgumentParser:
    """Options of `vdtrain eval pope-build`."""
    p = options.parser(
        "vdtrain eval pope-build",
        "Write coco_pope_{random,popular,adversarial}.json (jsonl) question sets from COCO instances.",
    )
    p.add_argument("--instances", required=True, help="COCO-format instances file, e.g. instances_val2014.json")
    p.add_argument(
        "--num-images", type=options.positive_int, required=True, help="images to sample (the released sets use 500)"
    )
    p.add_argument(
        "--seed", type=int, required=True, help=f"{options.SEED_HELP} (the image sample and the random negatives)"
    )
    p.add_argument("--output-dir", required=True, help="directory for the three question files")
    p.add_argument("--categories-from", help="restrict objects to the categories listed in this file")
    p.add_argument("--prefix", default="coco_pope", help="file name prefix")
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval pope-build`: build the three POPE question files."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.evaluation.pope_build import build_pope, load_instances, read_categories

    instances = load_instances(args.instances)
    categories = None
    if args.categories_from:
        categories = read_categories(args.categories_from)
        unknown = sorted(set(categories) - {c["name"] for c in instances["categories"]})
        if unknown:
            raise InputError(f"{args.categories_from}: categories not in {args.instances}: {', '.join(unknown[:5])}")
    splits = build_pope(instances, args.num_images, args.seed, categories)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for strategy, questions in splits.items():
        path = out / f"{args.prefix}_{strategy}.json"
        atomic_write_jsonl(path, questions)
        print(f"{path}: {len(questions)} questions on {args.num_images} images")
    return 0
