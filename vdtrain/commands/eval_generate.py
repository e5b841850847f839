"""`vdtrain eval generate`: the command line that loads a model and answers a question file (resumable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdtrain.commands import options
from vdtrain.evaluation.questions import FORMATS


def build_parser() -> argparse.ArgumentParser:
    p = options.parser(
        "vdtrain eval generate",
        "Generate answers (POPE), captions (CHAIR) or descriptions for a question file; resumable.",
    )
    options.add_model_options(p)
    p.add_argument("--questions", required=True, help="POPE/CHAIR jsonl, an image folder or a .txt image list")
    p.add_argument(
        "--image-folder",
        help="where the images are (default: --questions when it is a folder of images, else the current folder)",
    )
    p.add_argument("--output", required=True, help="answers .jsonl (resumed if it exists)")
    p.add_argument("--format", choices=FORMATS, help="question format (default: guessed)")
    p.add_argument("--prompt", help="question asked about every image (replaces the file's text)")
    p.add_argument("--prompt-suffix", default="", help="appended to every question")
    p.add_argument("--limit", type=options.positive_int, help="only the first N questions")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    options.add_decoding_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval generate`: answer a question file with a model (and LoRA adapter) into a jsonl file."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.evaluation.generate import generate_answers, generation_settings, remaining_questions, run_settings
    from vdtrain.evaluation.questions import load_questions

    decoding = options.decoding_options(args)
    questions, fmt = load_questions(args.questions, args.format, args.prompt)
    questions = questions[: args.limit] if args.limit else questions
    image_folder = args.image_folder or (args.questions if Path(args.questions).is_dir() else ".")
    from vdtrain.locks import output_lock

    settings = run_settings(args.model, args.adapter, args.questions, args.prompt, args.dtype)
    run = generation_settings(decoding, fmt, args.prompt_suffix, settings)
    with output_lock(args.output, "vdtrain eval generate", is_file=True):  # before the model: fail in a second
        if not args.overwrite and not remaining_questions(questions, args.output, run):  # before minutes of loading
            done = f"0 new answers ({len(questions)} questions, all answered in {args.output} already)"
            print(f"{done} -> {args.output}")
            return 0
        model, processor, adapter = options.load_model(args)
        written = generate_answers(
            model,
            processor,
            questions,
            args.output,
            image_folder=image_folder,
            fmt=fmt,
            options=decoding,
            adapter=adapter,
            prompt_suffix=args.prompt_suffix,
            batch_size=args.batch_size,
            settings=settings,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    print(f"{written} new answers ({len(questions)} questions) -> {args.output}")
    return 0


def on_interrupt(argv: list[str]) -> str:
    """What Ctrl-C leaves: every answer written so far; the same command resumes after them."""
    output = options.flag_value(argv, "--output") or "the output file"
    return f"the answers written so far are kept in {output}; rerun the same command to resume"
