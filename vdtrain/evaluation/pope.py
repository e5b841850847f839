"""POPE (Li et al., 2023): yes/no object probing, scored as the POPE authors' `evaluate.py` (and LLaVA's) do.

Answers are matched to questions by `question_id` (the original matches by line position; mismatched files are
refused here instead). Parsers other than the default are named after the code bases that use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from vdtrain.errors import DataError, InputError

PARSERS = ("pope", "vcd", "opera")
RATE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def parse_answer(answer: str, parser: str = "pope", label: str | None = None) -> str:
    """Turn a free-text answer into "yes" or "no".

    Args:
        answer (`str`): the model's answer.
        parser (`str`, defaults to `"pope"`):
            - `"pope"` (POPE, LLaVA): text before the first ".", commas removed, split on single spaces; "no" if a
              word is exactly `No`, `not` or `no`, else "yes" (so "", "NO", "No!" and "I cannot tell" are "yes");
            - `"vcd"`: lowercased; for a "yes" label, "yes" iff the substring `yes` occurs, for a "no" label, "no" iff
              the substring `no` occurs (so it needs `label`);
            - `"opera"`: every "." and "," removed; "no" if a word is `No`, `not`, `no`, `NO` or ends with "n't".
        label (`str`, *optional*): the question's label, needed by the `"vcd"` parser only.
    """
    if parser == "pope":
        words = answer.split(".")[0].replace(",", "").split(" ")
        return "no" if any(w in ("No", "not", "no") for w in words) else "yes"
    if parser == "opera":
        words = answer.replace(".", "").replace(",", "").split(" ")
        return "no" if any(w in ("No", "not", "no", "NO") or w.endswith("n't") for w in words) else "yes"
    if parser == "vcd":
        text = answer.lower().strip()
        if label == "yes":
            return "yes" if "yes" in text else "no"
        if label == "no":
            return "no" if "no" in text else "yes"
        raise DataError(f"the vcd parser needs the question's label ('yes' or 'no'), got {label!r}")
    raise InputError(f"unknown POPE parser {parser!r}: choose one of {', '.join(PARSERS)}")


def pope_metrics(labels: Sequence[str], predictions: Sequence[str]) -> dict:
    """Accuracy, precision, recall, F1 (positive class "yes"), yes-ratio and the confusion counts.

    A rate whose denominator is zero (e.g. precision when nothing is predicted "yes") is reported as 0.0.
    """
    if len(labels) != len(predictions) or not labels:
        raise ValueError(f"need as many predictions as labels, and at least one: {len(labels)} vs {len(predictions)}")
    pairs = list(zip(labels, predictions))
    tp = sum(lab == "yes" and pred == "yes" for lab, pred in pairs)
    fp = sum(lab == "no" and pred == "yes" for lab, pred in pairs)
    tn = sum(lab == "no" and pred == "no" for lab, pred in pairs)
    fn = sum(lab == "yes" and pred == "no" for lab, pred in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / len(pairs),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": (tp + fp) / len(pairs),
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
    }


def _few(ids: Sequence, n: int = 5) -> str:
    shown = ", ".join(map(str, list(ids)[:n]))
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


def evaluate_pope(
    questions: Sequence[Mapping],
    answers: Sequence[Mapping],
    parser: str = "pope",
    answer_key: str = "answer",
    questions_name: str = "questions",
    answers_name: str = "answers",
) -> dict:
    """Score one split: parse each answer, match it to its question by `question_id`, compute `pope_metrics`.

    Args:
        questions (`Sequence[Mapping]`): records with `question_id` and `label` ("yes"/"no").
        answers (`Sequence[Mapping]`): records with `question_id` and the answer text under `answer_key`
            (`text` is used when that key is absent).
        parser (`str`, defaults to `"pope"`): see `parse_answer`.
        answer_key (`str`, defaults to `"answer"`): key of the answer text.
        questions_name, answers_name (`str`): file names for error messages.

    Returns:
        `dict` with `metrics`, `predictions` ("yes"/"no" in question order) and `empty_answers`, the question ids
        whose answer is empty or blank (scored as the parser reads "": "yes" for POPE's own rule; listed so a run
        of empty generations cannot pass unnoticed).
    """
    by_id: dict[str, Mapping] = {}
    for number, answer in enumerate(answers, 1):
        if "question_id" not in answer:
            raise DataError(f"{answers_name}: record {number} has no 'question_id'")
        qid = str(answer["question_id"])
        if qid in by_id:
            raise DataError(f"{answers_name}: question_id {qid} is answered twice")
        by_id[qid] = answer
    question_ids = [str(q["question_id"]) for q in questions]
    missing = [q for q in question_ids if q not in by_id]
    extra = sorted(set(by_id) - set(question_ids))
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"no answer in {answers_name} for question_id {_few(missing)}")
        if extra:
            problems.append(f"{answers_name} answers question_id {_few(extra)}, which {questions_name} does not ask")
        raise DataError("; ".join(problems) + ": are these the answers to these questions?")
    labels, predictions, empty = [], [], []
    for question in questions:
        label = str(question.get("label", "")).strip().lower()
        if label not in ("yes", "no"):
            raise DataError(f"{questions_name}: question_id {question['question_id']} has label {label!r}, not yes/no")
        answer = by_id[str(question["question_id"])]
        text = answer[answer_key] if answer_key in answer else answer.get("text")
        if not isinstance(text, str):
            raise DataError(
                f"{answers_name}: question_id {question['question_id']} has no answer text under "
                f"{answer_key!r} (or 'text'): pass --answer-key"
            )
        if not text.strip():
            empty.append(question["question_id"])
        labels.append(label)
        predictions.append(parse_answer(text, parser, label))
    return {"metrics": pope_metrics(labels, predictions), "predictions": predictions, "empty_answers": empty}


def average_metrics(splits: Mapping[str, Mapping]) -> dict:
    """Mean of each rate metric over splits (the papers' "average" column)."""
    return {k: sum(s["metrics"][k] for s in splits.values()) / len(splits) for k in RATE_METRICS}


def answers_for(questions: Path, answers_dir: Path) -> Path:
    """The answers file in `answers_dir` for a question file (same stem, or the same `*_<split>` suffix)."""
    files = sorted(p for p in answers_dir.iterdir() if p.suffix in (".json", ".jsonl"))
    exact = [p for p in files if p.stem == questions.stem]
    if len(exact) == 1:
        return exact[0]
    short = questions.stem.rsplit("_", 1)[-1]  # coco_pope_random -> random
    named = [p for p in files if p.stem.rsplit("_", 1)[-1] == short]
    if len(named) == 1:
        return named[0]
    raise DataError(
        f"{answers_dir}: no single answers file for {questions.name} (looked for {questions.stem}.jsonl or "
        f"*_{short}.jsonl among {', '.join(p.name for p in files) or 'nothing'})"
    )


def format_table(splits: Mapping[str, Mapping], average: Mapping | None) -> str:
    """Per-split table in percent, the papers' layout."""
    head = f"{'split':<24}{'acc':>7}{'prec':>7}{'rec':>7}{'f1':>7}{'yes%':>7}"
    rows = [head, "-" * len(head)]
    for name, split in [*splits.items(), *([("average", {"metrics": average})] if average else [])]:
        m = split["metrics"]
        rows.append(f"{name:<24}" + "".join(f"{100 * m[k]:>7.1f}" for k in RATE_METRICS))
    return "\n".join(rows)
