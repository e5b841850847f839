"""MME (Fu et al. 2023): reading the official release layout, and scoring answers exactly as its `calculation.py`.

Release layout: `MME_Benchmark_release_version/<category>/` holds either `images/` and `questions_answers_YN/*.txt`
or the image files beside same-named `.txt` files; each text line is `question<TAB>Yes|No`, two lines per image.
Scoring (the official tool's, quirks kept): answers are lower-cased and nothing else (`"  yes"` is "other");
"yes"/"no" are taken as they are, else the first four characters decide ("yes" in them: yes, else "no": no, else
"other", always wrong). Per category `acc` is the share of questions right and `acc_plus` the share of images with
both questions right, both x100; `score = acc + acc_plus`; perception and cognition sum their categories' scores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vdtrain.errors import DataError
from vdtrain.evaluation.questions import IMAGE_SUFFIXES

PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
GROUPS = {"perception": PERCEPTION, "cognition": COGNITION}


def parse_answer(text: str) -> str:
    """`yes`, `no` or `other`, as the official `parse_pred_ans` reads a lower-cased answer."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    return "no" if "no" in prefix else "other"


def _image_file(folder: Path, stem: str, where: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{where}: no image named {stem}.* in {folder}")


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        question, sep, answer = line.rpartition("\t")
        if not sep or answer.strip() not in ("Yes", "No"):
            raise DataError(f"{path}:{number}: expected 'question<TAB>Yes|No', got {line!r}")
        pairs.append((question, answer.strip()))
    return pairs


def load_mme_questions(root: str | os.PathLike, categories: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every question of an MME release folder: `{question_id, category, image, question, answer, text}`.

    `image` is relative to `root` (so `root` is the image folder of a run), `answer` is the ground truth
    (`Yes`/`No`) and `text` the question as asked (before the protocol's prompt suffix).

    Args:
        root: `MME_Benchmark_release_version` (its category folders), or a folder of such category folders.
        categories (`Iterable[str]`, *optional*): only these (default: the 14 that are present).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MME folder {root} does not exist (see eval/README.md for the release layout)")
    wanted = list(categories) if categories is not None else [c for c in (*PERCEPTION, *COGNITION)]
    present = [c for c in wanted if (root / c).is_dir()]
    if categories is not None and len(present) != len(wanted):
        missing = sorted(set(wanted) - set(present))
        raise FileNotFoundError(f"{root}: no folder for the MME categories {missing}")
    if not present:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())[:8]
        raise FileNotFoundError(
            f"{root} holds none of the MME category folders ({', '.join(PERCEPTION + COGNITION)}); it has {found}: "
            "pass MME_Benchmark_release_version itself"
        )
    questions: list[dict[str, Any]] = []
    for category in present:
        folder = root / category
        if (folder / "questions_answers_YN").is_dir():
            texts, images = sorted((folder / "questions_answers_YN").glob("*.txt")), folder / "images"
        else:
            texts, images = sorted(folder.glob("*.txt")), folder
        if not texts:
            raise DataError(f"{folder}: no question files (*.txt or questions_answers_YN/*.txt)")
        for text_file in texts:
            image = _image_file(images, text_file.stem, text_file)
            pairs = _read_pairs(text_file)
            if len(pairs) != 2:  # the scorer pairs them: fail here, not after generating every answer
                raise DataError(f"{text_file}: {len(pairs)} questions; MME asks two per image")
            for k, (question, answer) in enumerate(pairs):
                questions.append(
                    {
                        "question_id": f"{category}/{image.name}/{k}",
                        "category": category,
                        "image": image.relative_to(root).as_posix(),
                        "question": question,
                        "answer": answer,
                        "text": question,
                    }
                )
    return questions


def score_mme(answers: Iterable[Mapping[str, Any]], questions: Iterable[Mapping[str, Any]] | None = None) -> dict:
    """MME scores of answer records (`question_id`, `category`, `image`, `answer` = ground truth, `text` = the
    model's answer), exactly as the official `calculation.py`.

    Args:
        questions (`Iterable[Mapping]`, *optional*): the full question set; any of its questions without an answer
            is an error listing their ids (without it, only the answered questions are scored).

    Returns:
        `{"perception": {"total", "categories": {name: {"score", "acc", "acc_plus", "questions", "images"}}},
        "cognition": {...}}`, plus `other_categories` for categories outside the two groups.
    """
    answers = list(answers)
    if questions is not None:
        answered = {str(a.get("question_id")) for a in answers}
        missing = [str(q["question_id"]) for q in questions if str(q["question_id"]) not in answered]
        if missing:
            listed = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise DataError(f"{len(missing)} MME questions have no answer: {listed}")
    by_image: dict[str, dict[str, list[bool]]] = {}
    for number, record in enumerate(answers, 1):
        for key in ("category", "image", "answer", "text"):
            if not isinstance(record.get(key), str):
                where = record.get("question_id", f"record {number}")
                raise DataError(f"MME answer {where!r} has no {key!r} string (answers files carry each question)")
        truth = record["answer"].lower()
        if truth not in ("yes", "no"):
            where = record.get("question_id")
            raise DataError(f"MME answer {where!r}: ground truth {record['answer']!r} is not Yes or No")
        by_image.setdefault(record["category"], {}).setdefault(record["image"], []).append(
            parse_answer(record["text"]) == truth
        )
    categories: dict[str, dict[str, Any]] = {}
    for category, images in by_image.items():
        odd = [image for image, right in images.items() if len(right) != 2]
        if odd:
            raise DataError(f"MME {category}: images need exactly two questions; {odd[:5]} have other counts")
        n_questions = sum(len(right) for right in images.values())
        acc = 100.0 * sum(sum(right) for right in images.values()) / n_questions
        acc_plus = 100.0 * sum(all(right) for right in images.values()) / len(images)
        categories[category] = {
            "score": acc + acc_plus,
            "acc": acc,
            "acc_plus": acc_plus,
            "questions": n_questions,
            "images": len(images),
        }
    result: dict[str, Any] = {}
    for group, names in GROUPS.items():
        scored = {name: categories[name] for name in names if name in categories}
        result[group] = {"total": sum(c["score"] for c in scored.values()), "categories": scored}
    other = {name: c for name, c in categories.items() if name not in PERCEPTION + COGNITION}
    if other:
        result["other_categories"] = other
    return result


def format_mme(result: Mapping[str, Any]) -> str:
    """`perception 1510.7 (10 categories)  cognition 355.7 (4 categories)`."""
    return "  ".join(
        f"{group} {result[group]['total']:.1f} ({len(result[group]['categories'])} categories)" for group in GROUPS
    )
