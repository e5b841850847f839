"""The library behind `vdtrain eval run CONFIG.yaml`: a benchmark protocol (eval/*.yaml), generation then scoring.

A config names the benchmark (`chair` or `pope`), its question files, the prompt and the decoding; the command line
adds the model, the data folders and where results go, and may override the decoding. Generation resumes, and
scoring reuses the standalone `vdtrain eval chair | pope` commands, so their output files are the same.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from vdtrain.commands.eval_generate import decoding_options, load_model
from vdtrain.evaluation.generate import DecodingOptions, generate_answers, run_settings
from vdtrain.evaluation.questions import load_questions, read_answers
from vdtrain.io import atomic_write_json, atomic_write_jsonl, read_json

CONFIG_KEYS = {
    "benchmark",
    "questions",
    "splits",
    "prompt",
    "prompt_suffix",
    "batch_size",
    "decoding",
    "chair",
    "pope",
    "categories",  # mme: only these categories (default: all present)
}


def load_protocol(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a protocol config; question paths become absolute (they are relative to the config)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"protocol config {path} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a protocol is a mapping of key: value")
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(CONFIG_KEYS)}")
    benchmark = config.get("benchmark")
    if benchmark == "chair":
        if not config.get("questions"):
            raise ValueError(f"{path}: a chair protocol needs `questions` (the image list)")
        config["splits"] = {"chair": config.pop("questions")}
    elif benchmark == "pope":
        if not isinstance(config.get("splits"), dict) or not config["splits"]:
            raise ValueError(f"{path}: a pope protocol needs `splits`, a mapping of split name to question file")
    elif benchmark == "mme":  # the questions come from the release folder given as --image-folder
        config["splits"] = {}
    else:
        raise ValueError(f"{path}: benchmark must be 'chair', 'pope' or 'mme', got {benchmark!r}")
    config["splits"] = {name: str((path.parent / file).resolve()) for name, file in config["splits"].items()}
    try:
        DecodingOptions(**(config.get("decoding") or {}))
    except TypeError as error:  # an unknown field
        known = ", ".join(asdict(DecodingOptions()))
        raise ValueError(f"{path}: decoding: {error}; known fields: {known}") from None
    return config


def _check_scorer_inputs(config: dict, args: argparse.Namespace) -> None:
    """Fail before hours of generation, not after: CHAIR's annotation files and NLTK data must be there."""
    if config["benchmark"] != "chair":
        return
    from vdtrain.evaluation.chair_truth import coco_annotation_files
    from vdtrain.evaluation.nltk_check import require_nltk_data

    if not args.coco_dir:
        raise ValueError("CHAIR needs --coco-dir (the COCO 2014 annotations folder; see eval/README.md)")
    coco_annotation_files(args.coco_dir)
    require_nltk_data(args.nltk_data, (config.get("chair") or {}).get("lemmatizer", "nltk"))


def _score(config: dict, args: argparse.Namespace, pairs: dict[str, tuple[Path, Path]], out: Path) -> dict:
    """Run the benchmark's scorer on (questions, answers) pairs; returns its metrics."""
    if config["benchmark"] == "chair":
        from vdtrain.commands import eval_chair

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


def _summary_line(benchmark: str, metrics: dict) -> str:
    if benchmark == "mme":
        return f"perception {metrics['perception']:.1f}  cognition {metrics['cognition']:.1f}"
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
    if config["benchmark"] == "mme":
        from vdtrain.evaluation.mme_protocol import run_mme_protocol

        return run_mme_protocol(config, args)
    out = Path(args.output_dir)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    _check_scorer_inputs(config, args)
    options = decoding_options(args, config.get("decoding"))
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
                options=options,
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
        "decoding": asdict(options),
        "limit": args.limit,
        "answers": {name: str(answers) for name, (_, answers) in pairs.items()},
        "metrics": metrics,
    }
    atomic_write_json(out / "summary.json", summary, indent=1)
    return summary
