"""`vdtrain eval run CONFIG.yaml`: a benchmark protocol (eval/*.yaml) end to end, generation then scoring."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from vdtrain.commands import options
from vdtrain.commands.eval_generate import add_decoding_arguments, decoding_options, load_model

MME_QUESTION_FIELDS = ("question_id", "category", "image", "question", "answer")


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
    add_decoding_arguments(p, defaults={})
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval run`: run one protocol config for a model and print its metrics."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.evaluation.protocol import load_protocol

    config = load_protocol(args.config)
    summary = run_protocol(config, args)
    decoding = summary["decoding"]
    limit = f", limit {args.limit}" if args.limit else ""
    line = summary_line(summary["benchmark"], summary["metrics"], summary.get("categories"))
    print(
        f"{summary['benchmark']} ({decoding['decoding']}, max_new_tokens {decoding['max_new_tokens']}{limit}): {line}"
    )
    print(f"-> {Path(args.output_dir) / 'summary.json'}")
    return 0


def _check_scorer_inputs(config: dict, args: argparse.Namespace) -> None:
    """Fail before hours of generation, not after: CHAIR's annotation files and NLTK data must be there."""
    if config["benchmark"] != "chair":
        return
    from vdtrain.evaluation.chair_truth import coco_annotation_files
    from vdtrain.evaluation.nltk_check import require_nltk_data

    if not args.coco_dir:
        raise ValueError("CHAIR needs --coco-dir (the COCO 2014 annotations folder; see eval/README.md)")
    coco_annotation_files(args.coco_dir)
    require_nltk_data(args.nltk_data, (config.get("chair") or {}).get("lemmatizer", "nltk"), fetch=True)


def _score(config: dict, args: argparse.Namespace, pairs: dict[str, tuple[Path, Path]], out: Path) -> dict:
    """Run the benchmark's scorer on (questions, answers) pairs; returns its metrics."""
    from vdtrain.io import read_json

    if config["benchmark"] == "chair":
        from vdtrain.commands import eval_chair  # the standalone command's output file, the same

        report = out / "chair.json"
        argv = ["--captions", str(pairs["chair"][1]), "--coco-dir", args.coco_dir, "--output", str(report)]
        argv += ["--lemmatizer", (config.get("chair") or {}).get("lemmatizer", "nltk")]
        argv += ["--nltk-data", args.nltk_data] if args.nltk_data else []
        argv += ["--cache-dir", args.cache_dir] if args.cache_dir else []
        argv += ["--skip-unknown-ids"] if (config.get("chair") or {}).get("skip_unknown_ids") else []
        eval_chair.main(argv)
        return read_json(report)["overall_metrics"]
    from vdtrain.commands import eval_pope

    report = out / "pope.json"
    argv = ["--output", str(report), "--parser", (config.get("pope") or {}).get("parser", "pope")]
    for questions, answers in pairs.values():
        argv += ["--questions", str(questions), "--answers", str(answers)]
    eval_pope.main(argv)
    result = read_json(report)
    names = {str(Path(q).stem): name for name, (q, _) in pairs.items()}
    metrics = {names.get(key, key): split["metrics"] for key, split in result["splits"].items()}
    return {**metrics, "average": result["average"]}


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


def run_protocol(config: dict, args: argparse.Namespace) -> dict:
    """Generate every split's answers (resuming), score them, and write `summary.json`; returns the summary."""
    from vdtrain.evaluation.generate import generate_answers, run_settings
    from vdtrain.evaluation.questions import load_questions, read_answers
    from vdtrain.io import atomic_write_json, atomic_write_jsonl

    if config["benchmark"] == "mme":
        return _run_mme(config, args)
    out = Path(args.output_dir)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    _check_scorer_inputs(config, args)
    decoding = decoding_options(args, config.get("decoding"))
    batch_size = args.batch_size or config.get("batch_size") or 8
    prompt, suffix = config.get("prompt"), config.get("prompt_suffix") or ""
    loaded = None
    pairs: dict[str, tuple[Path, Path]] = {}
    for name, question_file in config["splits"].items():
        questions, fmt = load_questions(question_file, config["benchmark"], prompt)
        question_path = Path(question_file)
        if args.limit:
            questions = questions[: args.limit]
            question_path = out / "questions" / f"{Path(question_file).stem}.jsonl"
            question_path.parent.mkdir(exist_ok=True)
            atomic_write_jsonl(question_path, questions)
        answers = out / "answers" / f"{Path(question_file).stem}.jsonl"
        answered = {str(a.get("question_id")) for a in read_answers(answers)}
        if args.overwrite or any(str(q["question_id"]) not in answered for q in questions):
            loaded = loaded or load_model(args.model, args.adapter, args.dtype, getattr(args, "device", "auto"))
            model, processor, adapter = loaded
            print(f"{name}: {len(questions)} questions -> {answers}", file=sys.stderr)
            settings = run_settings(args.model, args.adapter, question_file, prompt, args.dtype)
            generate_answers(
                model,
                processor,
                questions,
                answers,
                image_folder=args.image_folder,
                fmt=fmt,
                options=decoding,
                adapter=adapter,
                prompt_suffix=suffix,
                batch_size=batch_size,
                settings=settings,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
        pairs[name] = (question_path, answers)
    metrics = _score(config, args, pairs, out)
    summary = {
        "benchmark": config["benchmark"],
        "config": str(args.config),
        "model": str(args.model),
        "adapter": args.adapter,
        "prompt": prompt,
        "prompt_suffix": suffix,
        "decoding": asdict(decoding),
        "limit": args.limit,
        "answers": {name: str(answers) for name, (_, answers) in pairs.items()},
        "metrics": metrics,
    }
    atomic_write_json(out / "summary.json", summary, indent=1)
    return summary


def _run_mme(config: dict, args: argparse.Namespace) -> dict:
    """`benchmark: mme` over the release folder `--image-folder`: answer the questions (resumably), merge each answer
    with its question's fields into `answers/mme.jsonl`, score it into `mme.json` as the official calculation.py
    does; returns the summary (also written to `summary.json`)."""
    from vdtrain.evaluation.generate import generate_answers, run_settings
    from vdtrain.evaluation.mme import load_mme_questions, score_mme
    from vdtrain.evaluation.questions import read_answers
    from vdtrain.io import atomic_write_json, atomic_write_jsonl

    out = Path(args.output_dir)
    questions = load_mme_questions(args.image_folder, config.get("categories"))
    if args.limit:  # whole images: the scorer needs both questions of each
        images = {(q["category"], q["image"]) for q in questions[: args.limit]}
        questions = [q for q in questions if (q["category"], q["image"]) in images]
    decoding = decoding_options(args, config.get("decoding"))
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
            options=decoding,
            adapter=adapter,
            prompt_suffix=suffix,
            batch_size=args.batch_size or config.get("batch_size") or 8,
            settings=run_settings(args.model, args.adapter, args.image_folder, None, args.dtype),
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    text_of = {str(a["question_id"]): a["text"] for a in read_answers(generated)}
    answers = [
        {key: q[key] for key in MME_QUESTION_FIELDS}
        | {"prompt": q["text"] + suffix, "text": text_of[q["question_id"]]}
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
        "decoding": asdict(decoding),
        "limit": args.limit,
        "answers": {"mme": str(merged)},
        "metrics": {group: metrics[group]["total"] for group in ("perception", "cognition")},
        "categories": {group: list(metrics[group]["categories"]) for group in ("perception", "cognition")},
    }
    atomic_write_json(out / "summary.json", summary, indent=1)
    return summary


def on_interrupt(argv: list[str]) -> str:
    """What Ctrl-C leaves: the answers generated so far, which the same command resumes after."""
    output_dir = options.flag_value(argv, "--output-dir") or "the output dir"
    return f"the answers generated so far are kept in {output_dir}/answers; rerun the same command to resume"
