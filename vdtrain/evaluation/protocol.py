"""Evaluation protocols (eval/*.yaml): read and check a benchmark's config before anything runs, then run it.

A config names the benchmark (`chair`, `pope` or `mme`), its question files, the prompt and the decoding; a
`ProtocolRun` (built by `vdtrain eval run`) adds the model, the data folders and where results go. `run_protocol`
generates every split's answers (resuming), scores them with the same report functions as `vdtrain eval chair | pope
| mme`, and writes `summary.json`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from vdtrain.evaluation.decoding import DecodingOptions
from vdtrain.evaluation.questions import load_questions, read_answers
from vdtrain.io import atomic_write_json, atomic_write_jsonl

MME_QUESTION_FIELDS = ("question_id", "category", "image", "question", "answer")

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
    batch_size = config.get("batch_size")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"{path}: batch_size must be a whole number of at least 1, got {batch_size!r}")
    try:
        DecodingOptions(**(config.get("decoding") or {}))
    except ValueError as error:  # a value of the wrong type or range
        raise ValueError(f"{path}: decoding: {error}") from None
    except TypeError as error:  # an unknown field
        known = ", ".join(asdict(DecodingOptions()))
        raise ValueError(f"{path}: decoding: {error}; known fields: {known}") from None
    return config


@dataclass
class ProtocolRun:
    """What a protocol run adds to its config: the model, the data folders, where results go, the decoding."""

    config_path: str
    model: str
    image_folder: str
    output_dir: str
    decoding: DecodingOptions
    adapter: str | None = None
    dtype: str = "auto"
    batch_size: int | None = None  # None: the config's, else 8
    coco_dir: str | None = None  # CHAIR's annotations
    nltk_data: str | None = None
    cache_dir: str | None = None  # CHAIR's ground-truth cache (None: the default one)
    limit: int | None = None  # only the first N questions of each file (MME: of whole images)
    overwrite: bool = False
    progress: bool = True


ModelLoader = Callable[[], tuple[Any, Any, Any]]  # () -> (model, processor, adapter), called only if needed


def check_scorer_inputs(config: dict, run: ProtocolRun) -> None:
    """Fail before hours of generation, not after: CHAIR's annotation files and NLTK data must be there."""
    if config["benchmark"] != "chair":
        return
    from vdtrain.errors import InputError
    from vdtrain.evaluation.chair_truth import coco_annotation_files
    from vdtrain.evaluation.nltk_check import require_nltk_data

    if not run.coco_dir:
        raise InputError("CHAIR needs --coco-dir (the COCO 2014 annotations folder; see eval/README.md)")
    coco_annotation_files(run.coco_dir)
    require_nltk_data(run.nltk_data, (config.get("chair") or {}).get("lemmatizer", "nltk"), fetch=True)


def run_protocol(
    config: dict, run: ProtocolRun, load_model: ModelLoader, log: Callable[[str], None] | None = None
) -> dict:
    """Generate every split's answers (resuming), score them, and write `summary.json`; returns the summary.

    Args:
        config (`dict`): from `load_protocol`.
        load_model (`Callable`): returns `(model, processor, adapter)`; called once, only when answers are missing.
        log (`Callable[[str], None]`, *optional*): receives one line per split generated and per scorer warning.
    """
    if config["benchmark"] == "mme":
        return _run_mme(config, run, load_model, log or _quiet)
    log = log or _quiet
    out = Path(run.output_dir)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    check_scorer_inputs(config, run)
    prompt, suffix = config.get("prompt"), config.get("prompt_suffix") or ""
    loaded = None
    pairs: dict[str, tuple[Path, Path]] = {}
    for name, question_file in config["splits"].items():
        questions, fmt = load_questions(question_file, config["benchmark"], prompt)
        question_path = Path(question_file)
        if run.limit:
            questions = questions[: run.limit]
            question_path = out / "questions" / f"{Path(question_file).stem}.jsonl"
            question_path.parent.mkdir(exist_ok=True)
            atomic_write_jsonl(question_path, questions)
        answers = out / "answers" / f"{Path(question_file).stem}.jsonl"
        answered = {str(a.get("question_id")) for a in read_answers(answers)}
        if run.overwrite or any(str(q["question_id"]) not in answered for q in questions):
            loaded = loaded or load_model()
            log(f"{name}: {len(questions)} questions -> {answers}")
            _generate(loaded, questions, answers, fmt, config, run, question_file, prompt)
        pairs[name] = (question_path, answers)
    metrics = _score(config, run, pairs, out, log)
    summary = {
        "benchmark": config["benchmark"],
        "config": str(run.config_path),
        "model": str(run.model),
        "adapter": run.adapter,
        "prompt": prompt,
        "prompt_suffix": suffix,
        "decoding": asdict(run.decoding),
        "limit": run.limit,
        "answers": {name: str(answers) for name, (_, answers) in pairs.items()},
        "metrics": metrics,
    }
    atomic_write_json(out / "summary.json", summary, indent=1)
    return summary


def _quiet(line: str) -> None:
    """The default `log`: nothing."""


def _generate(
    loaded: tuple[Any, Any, Any],
    questions: list[dict],
    answers: Path,
    fmt: str,
    config: dict,
    run: ProtocolRun,
    identity: str | os.PathLike,
    prompt: str | None,
) -> None:
    """Answer `questions` into `answers` (resumed unless `run.overwrite`) with the protocol's batch size and suffix."""
    from vdtrain.evaluation.generate import generate_answers, run_settings

    model, processor, adapter = loaded
    generate_answers(
        model,
        processor,
        questions,
        answers,
        image_folder=run.image_folder,
        fmt=fmt,
        options=run.decoding,
        adapter=adapter,
        prompt_suffix=config.get("prompt_suffix") or "",
        batch_size=run.batch_size or config.get("batch_size") or 8,
        settings=run_settings(run.model, run.adapter, identity, prompt, run.dtype),
        overwrite=run.overwrite,
        progress=run.progress,
    )


def _score(
    config: dict, run: ProtocolRun, pairs: dict[str, tuple[Path, Path]], out: Path, log: Callable[[str], None]
) -> dict:
    """Score (questions, answers) pairs with the benchmark's report (written beside the answers); its metrics."""
    from vdtrain.evaluation.reports import chair_report, default_cache_dir, pope_report

    if config["benchmark"] == "chair":
        from vdtrain.evaluation.chair_truth import coco_annotation_files

        chair = config.get("chair") or {}
        instances, references = coco_annotation_files(run.coco_dir)
        report = chair_report(
            pairs["chair"][1],
            instances,
            references,
            lemmatizer=chair.get("lemmatizer", "nltk"),
            cache_dir=run.cache_dir or default_cache_dir(),
            num_workers=min(8, os.cpu_count() or 1),
            nltk_data=run.nltk_data,
            unknown_ids="skip" if chair.get("skip_unknown_ids") else "error",
            progress=run.progress,
        )
        atomic_write_json(out / "chair.json", report, indent=1)
        skipped = report["overall_metrics"].get("skipped_unknown_ids") or []
        if skipped:
            log(f"warning: left out the captions of {len(skipped)} image id(s) not in the annotations")
        return report["overall_metrics"]
    parser = (config.get("pope") or {}).get("parser", "pope")
    report = pope_report(list(pairs.values()), parser)
    atomic_write_json(out / "pope.json", report, indent=1)
    for name, split in report["splits"].items():
        if split["empty_answers"]:
            log(
                f"warning: {name}: {len(split['empty_answers'])} empty answer(s), scored by the {parser} parser's rule"
            )
    names = {str(Path(q).stem): name for name, (q, _) in pairs.items()}
    metrics = {names.get(key, key): split["metrics"] for key, split in report["splits"].items()}
    return {**metrics, "average": report["average"]}


def _run_mme(config: dict, run: ProtocolRun, load_model: ModelLoader, log: Callable[[str], None]) -> dict:
    """`benchmark: mme` over the release folder `run.image_folder`: answer the questions (resumably), merge each answer
    with its question's fields into `answers/mme.jsonl`, score it into `mme.json` as the official calculation.py
    does; returns the summary (also written to `summary.json`)."""
    from vdtrain.evaluation.mme import load_mme_questions, score_mme

    out = Path(run.output_dir)
    questions = load_mme_questions(run.image_folder, config.get("categories"))
    if run.limit:  # whole images: the scorer needs both questions of each
        images = {(q["category"], q["image"]) for q in questions[: run.limit]}
        questions = [q for q in questions if (q["category"], q["image"]) in images]
    suffix = config.get("prompt_suffix") or ""
    generated = out / "answers" / "mme.generated.jsonl"
    done = {str(a.get("question_id")) for a in read_answers(generated)}
    if run.overwrite or any(q["question_id"] not in done for q in questions):
        loaded = load_model()
        log(f"mme: {len(questions)} questions -> {generated}")
        _generate(loaded, questions, generated, "mme", config, run, run.image_folder, None)
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
        "config": str(run.config_path),
        "model": str(run.model),
        "adapter": run.adapter,
        "prompt_suffix": suffix,
        "decoding": asdict(run.decoding),
        "limit": run.limit,
        "answers": {"mme": str(merged)},
        "metrics": {group: metrics[group]["total"] for group in ("perception", "cognition")},
        "categories": {group: list(metrics[group]["categories"]) for group in ("perception", "cognition")},
    }
    atomic_write_json(out / "summary.json", summary, indent=1)
    return summary
