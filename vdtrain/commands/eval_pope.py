"""`vdtrain eval pope`: score answers files against POPE question files and write the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdtrain.commands import options
from vdtrain.evaluation.pope import PARSERS


def build_parser() -> argparse.ArgumentParser:
    """Options of `vdtrain eval pope`."""
    p = options.parser(
        "vdtrain eval pope",
        "POPE accuracy/precision/recall/F1/yes-ratio of yes/no answers, per split and averaged. Empty answers are "
        "scored by the parser's rule (POPE's: 'yes') and counted and listed in the output.",
    )
    p.add_argument("--questions", action="append", default=[], help="question file (jsonl; repeat per split)")
    p.add_argument("--answers", action="append", default=[], help="answers file, paired with --questions in order")
    p.add_argument("--questions-dir", help="directory of question files, one per split")
    p.add_argument("--answers-dir", help="directory of answers files named like the question files")
    p.add_argument("--output", required=True, help="where to write the JSON result")
    p.add_argument("--parser", choices=PARSERS, default="pope", help="answer parser")
    p.add_argument("--answer-key", default="answer", help="key of the answer text; `text` when absent")
    return p


def _pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    from vdtrain.errors import UsageError
    from vdtrain.evaluation.pope import answers_for

    if args.questions_dir or args.answers_dir:
        if not (args.questions_dir and args.answers_dir):
            raise UsageError("--questions-dir and --answers-dir go together")
        qdir, adir = Path(args.questions_dir), Path(args.answers_dir)
        questions = sorted(p for p in qdir.iterdir() if p.suffix in (".json", ".jsonl"))
        if not questions:
            raise ValueError(f"{qdir}: no .json or .jsonl question files")
        return [(q, answers_for(q, adir)) for q in questions]
    if len(args.questions) != len(args.answers) or not args.questions:
        raise UsageError("give --questions and --answers in pairs (as many of each), or --questions-dir/--answers-dir")
    return [(Path(q), Path(a)) for q, a in zip(args.questions, args.answers)]


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval pope`: score answers files against POPE question files and write the report."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.evaluation.pope import format_table
    from vdtrain.evaluation.reports import pope_report
    from vdtrain.io import atomic_write_json

    report = pope_report(_pairs(args), args.parser, args.answer_key)
    splits = report["splits"]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output, report, indent=1)
    for name, split in splits.items():
        if split["empty_answers"]:
            ids = split["empty_answers"]
            shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
            print(
                f"warning: {name}: {len(ids)} empty answer(s), scored by the {args.parser} parser's rule "
                f"(question_id {shown}); see num_empty_answers in {output}",
                file=sys.stderr,
            )
    print(format_table(splits, report["average"] if len(splits) > 1 else None))
    print(f"-> {output}")
    return 0
