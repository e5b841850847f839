"""`vdtrain eval chair`: read a captions file, build the ground truth and write the CHAIR report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vdtrain.commands import options
from vdtrain.evaluation.lemmatize import LEMMATIZERS
from vdtrain.evaluation.reports import default_cache_dir
from vdtrain.io import atomic_write_json


def build_parser() -> argparse.ArgumentParser:
    """Options of `vdtrain eval chair`."""
    p = options.parser(
        "vdtrain eval chair",
        "CHAIR object hallucination of generated captions against COCO-format annotations "
        "(OPERA's computation; metrics printed in percent).",
    )
    p.add_argument("--captions", required=True, help="generated captions, .jsonl or .json list")
    p.add_argument("--output", required=True, help="where to write the JSON result")
    p.add_argument("--coco-dir", help="directory with instances_val2014.json + captions_val2014.json (+ train2014)")
    p.add_argument("--instances", action="append", default=[], help="a COCO-format instances file (repeatable)")
    p.add_argument("--coco-captions", action="append", default=[], help="a COCO-format captions file (repeatable)")
    p.add_argument("--image-id-key", default="image_id", help="key of the image id (else `image` file names)")
    p.add_argument("--caption-key", default="caption", help="key of the caption text (else `text`)")
    p.add_argument("--questions", help="question file mapping question_id to image, for answers without image ids")
    p.add_argument("--lemmatizer", choices=LEMMATIZERS, default="nltk", help="nltk (OPERA) or pattern (2018)")
    p.add_argument("--nltk-data", help="NLTK data directory to search first")
    p.add_argument("--synonyms", help="synonyms file (default: the 80 COCO categories)")
    p.add_argument(
        "--skip-unknown-ids",
        action="store_true",
        help="leave out captions whose image id is not in the annotations (listed in the output) instead of failing",
    )
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="ground-truth cache")
    p.add_argument("--no-cache", action="store_true", help="build the ground truth without reading or writing a cache")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="processes for the ground truth")
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval chair`: evaluate a captions file and write the per-caption report."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.evaluation.chair import format_summary
    from vdtrain.evaluation.chair_truth import coco_annotation_files
    from vdtrain.evaluation.nltk_check import require_nltk_data
    from vdtrain.evaluation.reports import chair_report

    instances, references = coco_annotation_files(args.coco_dir) if args.coco_dir else ([], [])
    instances += [Path(p) for p in args.instances]
    references += [Path(p) for p in args.coco_captions]
    if not instances and not references:
        parser.error("give --coco-dir, or --instances / --coco-captions files")
    require_nltk_data(args.nltk_data, args.lemmatizer, fetch=True)  # first use: fetched into the user's folder
    result = chair_report(
        args.captions,
        instances,
        references,
        lemmatizer=args.lemmatizer,
        synonyms_path=args.synonyms,
        image_id_key=args.image_id_key,
        caption_key=args.caption_key,
        questions=args.questions,
        cache_dir=None if args.no_cache else args.cache_dir,
        num_workers=args.workers,
        nltk_data=args.nltk_data,
        unknown_ids="skip" if args.skip_unknown_ids else "error",
        progress=sys.stderr.isatty(),
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output, result, indent=1)
    skipped = result["overall_metrics"].get("skipped_unknown_ids") or []
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
        print(f"warning: left out the captions of {len(skipped)} image id(s) not in the annotations: {shown}")
    print(f"{format_summary(result['overall_metrics'])} -> {output}")
    return 0
