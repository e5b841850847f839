"""Benchmark reports from files: a captions file scored by CHAIR, answers files scored by POPE.

The one place `vdtrain eval chair`, `vdtrain eval pope` and `vdtrain eval run` get their reports from, so the
standalone commands and a protocol run write the same JSON.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vdtrain.io import read_objects

from .chair import evaluate_chair, load_synonyms
from .chair_truth import build_ground_truth
from .pope import average_metrics, evaluate_pope
from .questions import load_captions


def default_cache_dir() -> Path:
    """Where CHAIR's ground truth is cached unless told otherwise: `$XDG_CACHE_HOME/vdtrain/chair`."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vdtrain" / "chair"


def chair_report(
    captions_path: str | os.PathLike,
    instances: Sequence[str | os.PathLike],
    references: Sequence[str | os.PathLike],
    *,
    lemmatizer: str = "nltk",
    synonyms_path: str | os.PathLike | None = None,
    image_id_key: str = "image_id",
    caption_key: str = "caption",
    questions: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 1,
    nltk_data: str | os.PathLike | None = None,
    unknown_ids: str = "error",
    progress: bool = False,
) -> dict:
    """The CHAIR report (`overall_metrics`, `sentences`) of a captions file against COCO-format annotation files.

    Args:
        captions_path (`PathLike`): generated captions, `.jsonl` or a `.json` list (see `load_captions`).
        instances, references (`Sequence[PathLike]`): COCO-format instances and captions files (the ground truth).
        cache_dir (`PathLike`, *optional*): ground-truth cache (None: built without reading or writing a cache).
        unknown_ids (`str`, defaults to `"error"`): as in `evaluate_chair`.
    """
    for path in [*instances, *references, captions_path]:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} not found")
    synonyms = load_synonyms(synonyms_path)
    captions = load_captions(captions_path, image_id_key, caption_key, questions)
    ground_truth = build_ground_truth(
        instances,
        references,
        synonyms,
        lemmatizer,
        cache_dir=cache_dir,
        num_workers=num_workers,
        nltk_data=nltk_data,
        progress=progress,
    )
    try:
        return evaluate_chair(captions, ground_truth, synonyms, lemmatizer, unknown_ids=unknown_ids)
    except ValueError as error:
        raise type(error)(f"{captions_path}: {error}") from error


def pope_report(
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]], parser: str = "pope", answer_key: str = "answer"
) -> dict:
    """The POPE report of (question file, answers file) pairs: per split (named by the question file's stem), the
    average over splits and the empty answers counted; one split's metrics and predictions also at the top."""
    splits: dict[str, dict] = {}
    for questions, answers in pairs:
        questions, answers = Path(questions), Path(answers)
        name = questions.stem if questions.stem not in splits else str(questions)
        result = evaluate_pope(
            read_objects(questions), read_objects(answers), parser, answer_key, str(questions), str(answers)
        )
        result["num_empty_answers"] = len(result["empty_answers"])
        splits[name] = {"questions": str(questions), "answers": str(answers), **result}
    report: dict = {"parser": parser}
    if len(splits) == 1:
        only = next(iter(splits.values()))
        report |= {"metrics": only["metrics"], "predictions": only["predictions"]}
    report["splits"] = splits
    report["average"] = average_metrics(splits)
    report["num_empty_answers"] = sum(split["num_empty_answers"] for split in splits.values())
    return report
