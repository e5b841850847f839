"""The MME branch of `vdtrain eval run`: answer the release's questions (resumably), merge each answer with its
question's fields into `answers/mme.jsonl`, and score it into `mme.json` as the official calculation.py does."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from vdtrain.evaluation.mme import load_mme_questions, score_mme
from vdtrain.evaluation.questions import read_answers
from vdtrain.io import atomic_write_json, atomic_write_jsonl

QUESTION_FIELDS = ("question_id", "category", "image", "question", "answer")


def run_mme_protocol(config: dict, args: argparse.Namespace) -> dict:
    """`vdtrain eval run` for `benchmark: mme` over the release folder `--image-folder`; returns the summary
    (also written to `summary.json`)."""
    from vdtrain.commands.eval_generate import decoding_options, load_model
    from vdtrain.evaluation.generate import generate_answers, run_settings

    out = Path(args.output_dir)
    questions = load_mme_questions(args.image_folder, config.get("categories"))
    if args.limit:
        questions = questions[: args.limit]
    options = decoding_options(args, config.get("decoding"))
    suffix = config.get("prompt_suffix") or ""
    generated = out / "answers" / "mme.generated.jsonl"
    done = {str(a.get("question_id")) for a in read_answers(generated)}
    if args.overwrite or any(q["question_id"] not in done for q in questions):
        model, processor, adapter = load_model(args.model, args.adapter, args.dtype, getattr(args, "device", "auto"))
        print(f"mme: {len(questions)} questions -> {generated}", file=sys.stderr)
        generate_answers(
            model,
            processor,
            questions,
            generated,
            image_folder=args.image_folder,
            fmt="mme",
            options=options,
            adapter=adapter,
            prompt_suffix=suffix,
            batch_size=args.batch_size or config.get("batch_size") or 8,
            settings=run_settings(args.model, args.adapter, args.image_folder, None, args.dtype),
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    text_of = {str(a["question_id"]): a["text"] for a in read_answers(generated)}
    answers = [
        {key: q[key] for key in QUESTION_FIELDS} | {"prompt": q["text"] + suffix, "text": text_of[q["question_id"]]}
        for q in questions
        if q["question_id"] in text_of
    ]
    merged = out / "answers" / "mme.jsonl"
    atomic_write_jsonl(merged, answers, ensure_ascii=False)
    metrics = score_mme(answers, questions)
    atomic_write_json(out / "mme.json", metrics, indent=1)
    summary = {
        "benchmark": "mme",
        "config": str(args.config),
        "model": str(args.model),
        "adapter": args.adapter,
        "prompt_suffix": suffix,
        "decoding": asdict(options),
        "limit": args.limit,
        "answers": {"mme": str(merged)},
        "metrics": {group: metrics[group]["total"] for group in ("perception", "cognition")},
    }
    atomic_write_json(out / "summary.json", summary, indent=1)
    return summary
