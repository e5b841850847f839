"""`vdtrain eval mme`: score an MME answers file exactly as the benchmark's official calculation.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from vdtrain.commands import options

DESCRIPTION = (
    "Score MME answers (jsonl from `vdtrain eval run eval/mme.yaml`, each line with question_id, category, image, "
    "answer = the ground truth and the model's text) exactly as the benchmark's official calculation.py: "
    "perception and cognition totals, per category score = acc + acc_plus."
)


def build_parser() -> argparse.ArgumentParser:
    p = options.parser("vdtrain eval mme", DESCRIPTION)
    p.add_argument("--answers", required=True, help="answers .jsonl (or .json list)")
    p.add_argument("--output", required=True, help="where mme.json goes")
    p.add_argument("--mme-dir", help="MME release folder: every one of its questions must have an answer")
    return p


def main(argv: list[str]) -> int:
    """`vdtrain eval mme`: score an answers file and print the two totals."""
    args = build_parser().parse_args(argv)
    from vdtrain.evaluation.mme import format_mme, load_mme_questions, score_mme
    from vdtrain.io import atomic_write_json, read_objects

    answers = read_objects(args.answers)
    questions = load_mme_questions(args.mme_dir) if args.mme_dir else None
    result = score_mme(answers, questions)
    atomic_write_json(Path(args.output), result, indent=1)
    print(f"{format_mme(result)} -> {args.output}")
    return 0
