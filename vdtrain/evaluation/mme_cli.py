"""`vdtrain eval mme` (score an answers file) and the MME branch of `vdtrain eval run` (generate, then score)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vdtrain.evaluation.mme import format_mme, load_mme_questions, score_mme
from vdtrain.evaluation.questions import read_answers

try:  # the JSON/JSONL readers are moving to vdtrain.io
    from vdtrain.io import read_objects as read_records
except ImportError:
    from vdtrain.evaluation.questions import read_records


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


def run_mme_protocol(config: dict, args: argparse.Namespace) -> dict:
    """`vdtrain eval run` for `benchmark: mme`: the questions of the release folder `--image-folder`, answered
    (resumably) into `answers/mme.generated.jsonl`, merged with each question's fields into `answers/mme.jsonl`,
    scored into `mme.json`; returns the summary (also `summary.json`)."""
    from vdtrain.evaluation.generate import generate_answers, run_settings
    from vdtrain.evaluation.generate_cli import decoding_options, load_model

    out = Path(args.output_dir)
    questions = load_mme_questions(args.image_folder, config.get("categories"))
    if args.limit:
        questions = questions[: args.limit]
    options = decoding_options(args, config.get("decoding"))
    suffix = config.get("prompt_suffix") or ""
    generated = out / "answers" / "mme.generated.jsonl"
    done = {str(a.get("question_id")) for a in read_answers(generated)}
    if args.overwrite or any(q["question_id"] not in done for q in questions):
        model, processor, adapter = load_model(args.model, args.adapter, args.dtype)
        print(f"mme: {len(questions)} questions -> {generated}", file=sys.stderr)
        settings = run_settings(args.model, args.adapter, args.image_folder, None, args.dtype)
        generate_answers(
            model, processor, questions, generated, image_folder=args.image_folder, fmt="mme", options=options,
            adapter=adapter, prompt_suffix=suffix, batch_size=args.batch_size or config.get("batch_size") or 8,
            settings=settings, overwrite=args.overwrite, progress=not args.no_progress,
        )  # fmt: skip
    text_of = {str(a["question_id"]): a["text"] for a in read_answers(generated)}
    answers = [
        {key: q[key] for key in ("question_id", "category", "image", "question", "answer")}
        | {"prompt": q["text"] + suffix, "text": text_of[q["question_id"]]}
        for q in questions
        if q["question_id"] in text_of
    ]
    merged = out / "answers" / "mme.jsonl"
    tmp = merged.with_name(merged.name + ".tmp")
    tmp.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))
    os.replace(tmp, merged)
    metrics = score_mme(answers, questions)
    _write_json(out / "mme.json", metrics)
    summary = {
        "benchmark": "mme", "config": str(args.config), "model": str(args.model), "adapter": args.adapter,
        "prompt_suffix": suffix, "decoding": asdict(options), "limit": args.limit, "answers": {"mme": str(merged)},
        "metrics": {group: metrics[group]["total"] for group in ("perception", "cognition")},
    }  # fmt: skip
    _write_json(out / "summary.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vdtrain eval mme",
        description="Score MME answers (jsonl from `vdtrain eval run eval/mme.yaml`, each line with question_id, "
        "category, image, answer = the ground truth and the model's text) exactly as the benchmark's official "
        "calculation.py: perception and cognition totals, per category score = acc + acc_plus.",
    )
    p.add_argument("--answers", required=True, help="answers .jsonl (or .json list)")
    p.add_argument("--output", required=True, help="where mme.json goes")
    p.add_argument("--mme-dir", help="MME release folder: every one of its questions must have an answer")
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval mme`: score an answers file and print the two totals."""
    args = build_parser().parse_args(argv)
    try:
        answers = read_records(args.answers)
        questions = load_mme_questions(args.mme_dir) if args.mme_dir else None
        result = score_mme(answers, questions)
    except (ValueError, FileNotFoundError) as error:
        print(f"vdtrain eval mme: error: {error}", file=sys.stderr)
        return 1
    _write_json(Path(args.output), result)
    print(f"{format_mme(result)} -> {args.output}")
    return 0
