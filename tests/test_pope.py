"""POPE: answer parsers, metrics on a hand-made split, the CLI, question-set building and the released files."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from vdtrain.cli import main as cli_main
from vdtrain.evaluation import pope_build
from vdtrain.evaluation.pope import evaluate_pope, parse_answer, pope_metrics
from vdtrain.evaluation.pope_build import build_pope, question_text
from vdtrain.io import read_objects

RELEASED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "pope"


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("", "yes"),
        ("NO", "yes"),
        ("No!", "yes"),  # exact word match fails
        ("I cannot tell", "yes"),
        ("Nope", "yes"),
        ("No, there is not.", "no"),
        ("No", "no"),
        ("no.", "no"),
        ("Yes. But there is no dog.", "yes"),  # only the text before the first "."
        ("I am not sure", "no"),
        ("Yes, there is a dog,no", "yes"),  # "dog,no" -> "dogno"
        ("Yes  no", "no"),  # split on single spaces: the empty word in between does not hide "no"
    ],
)
def test_pope_parser(answer, expected):
    assert parse_answer(answer) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [("NO", "no"), ("There isn't one.", "no"), ("No!", "yes"), ("Yes. But no.", "no"), ("", "yes"), ("no,", "no")],
)
def test_opera_parser(answer, expected):
    assert parse_answer(answer, "opera") == expected


@pytest.mark.parametrize(
    "answer, label, expected",
    [
        ("Yes", "yes", "yes"),
        ("yes, no", "yes", "yes"),
        ("Sure", "yes", "no"),
        ("I do not know", "no", "no"),
        ("YES", "no", "yes"),
        ("nothing there", "no", "no"),  # substring test
    ],
)
def test_vcd_parser(answer, label, expected):
    assert parse_answer(answer, "vcd", label) == expected


def pope_main(argv: list[str]) -> int:
    return cli_main(["eval", "pope", *argv])


def pope_build_main(argv: list[str]) -> int:
    return cli_main(["eval", "pope-build", *argv])


def test_vcd_parser_needs_label():
    with pytest.raises(ValueError, match="needs the question's label"):
        parse_answer("yes", "vcd")


LABELS = ["yes", "yes", "yes", "no", "no", "no", "yes", "no"]
ANSWERS = [
    "Yes, there is a dog.",
    "No.",
    "",
    "No, there is not.",
    "NO",
    "There is no cat in the image.",
    "I cannot tell.",
    "No!",
]
# TP: 1, 3, 7; FN: 2; TN: 4, 6; FP: 5, 8
EXPECTED = {
    "accuracy": 5 / 8,
    "precision": 3 / 5,
    "recall": 3 / 4,
    "f1": 2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4),
    "yes_ratio": 5 / 8,
    "TP": 3,
    "FP": 2,
    "TN": 2,
    "FN": 1,
}


def split(labels=LABELS, answers=ANSWERS, offset=0, key="answer"):
    questions = [
        {"question_id": offset + i, "image": f"{i}.jpg", "text": "Is there a dog in the image?", "label": label}
        for i, label in enumerate(labels)
    ]
    answers = [{"question_id": offset + i, key: a} for i, a in enumerate(answers)]
    return questions, answers


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_metrics_hand_computed():
    questions, answers = split()
    result = evaluate_pope(questions, answers[::-1])  # matched by id, not position
    assert result["metrics"] == pytest.approx(EXPECTED)
    assert result["predictions"] == ["yes", "no", "yes", "no", "yes", "no", "yes", "yes"]


def test_text_key_fallback_and_zero_division():
    questions, answers = split(["yes", "no"], ["No", "no"], key="text")
    metrics = evaluate_pope(questions, answers)["metrics"]
    assert metrics["precision"] == 0.0 and metrics["f1"] == 0.0 and metrics["accuracy"] == 0.5
    with pytest.raises(ValueError):
        pope_metrics([], [])


def test_mismatched_ids_refused():
    questions, answers = split()
    with pytest.raises(ValueError, match=r"no answer in a\.jsonl for question_id 7"):
        evaluate_pope(questions, answers[:-1], answers_name="a.jsonl")
    extra = [*answers, {"question_id": 99, "answer": "yes"}, {"question_id": 100, "answer": "yes"}]
    with pytest.raises(ValueError, match=r"a\.jsonl answers question_id 100, 99, which q\.jsonl does not ask"):
        evaluate_pope(questions, extra, questions_name="q.jsonl", answers_name="a.jsonl")
    with pytest.raises(ValueError, match="answered twice"):
        evaluate_pope(questions, [*answers, answers[0]])


def test_cli_single_and_multi_split(tmp_path, capsys):
    q1, a1 = split()
    q2, a2 = split(["yes", "no", "yes", "no"], ["yes", "yes", "no", "no"])  # TP 1, FP 1, FN 1, TN 1
    qdir, adir = tmp_path / "questions", tmp_path / "answers"
    qdir.mkdir(), adir.mkdir()
    files = [
        write_jsonl(qdir / "coco_pope_random.json", q1),
        write_jsonl(adir / "llava_random.jsonl", a1),
        write_jsonl(qdir / "coco_pope_popular.json", q2),
        write_jsonl(adir / "coco_pope_popular.jsonl", a2),
    ]
    out = tmp_path / "pope.json"
    assert pope_main(["--questions", str(files[0]), "--answers", str(files[1]), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"] == pytest.approx(EXPECTED)
    assert len(report["predictions"]) == 8

    argv = ["--questions", str(files[0]), "--answers", str(files[1]), "--questions", str(files[2])]
    assert pope_main([*argv, "--answers", str(files[3]), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["splits"]) == {"coco_pope_random", "coco_pope_popular"}
    assert report["splits"]["coco_pope_popular"]["metrics"]["accuracy"] == 0.5
    assert report["average"]["accuracy"] == pytest.approx((5 / 8 + 1 / 2) / 2)
    assert report["average"]["f1"] == pytest.approx((EXPECTED["f1"] + 1 / 2) / 2)
    table = capsys.readouterr().out
    assert "average" in table and f"{100 * (5 / 8 + 1 / 2) / 2:.1f}" in table

    assert pope_main(["--questions-dir", str(qdir), "--answers-dir", str(adir), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["average"]["accuracy"] == pytest.approx((5 / 8 + 1 / 2) / 2)


def test_cli_refuses_mismatched_files(tmp_path, capsys):
    questions, answers = split()
    q = write_jsonl(tmp_path / "q.jsonl", questions)
    a = write_jsonl(tmp_path / "a.jsonl", answers[:3])
    assert pope_main(["--questions", str(q), "--answers", str(a), "--output", str(tmp_path / "o.json")]) == 1
    err = capsys.readouterr().err
    assert str(a) in err and "question_id 3, 4, 5, 6, 7" in err


# ------------------------------------------------------------------------------------------------ pope-build

CATEGORIES = "person dog cat chair car bus truck couch tv bottle".split()
ANNOTATIONS = {  # image -> category names in annotation order (repeats are further instances)
    1: ["person", "person", "dog", "person", "cat", "chair"],
    2: ["person", "car", "bus"],
    3: ["person", "car", "truck"],
    4: ["dog", "cat", "couch", "tv"],
    5: ["person", "car", "bottle"],
    6: ["dog", "chair", "couch"],
    7: ["person", "dog"],  # 2 categories: never sampled
    8: ["cat", "cat", "tv"],  # 3 instances, 2 categories: never sampled
}
DISTINCT = {i: list(dict.fromkeys(names)) for i, names in ANNOTATIONS.items()}
ELIGIBLE = [i for i, names in DISTINCT.items() if len(names) >= 3]


def instances() -> dict:
    ids = {name: n + 1 for n, name in enumerate(CATEGORIES)}
    return {
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in ANNOTATIONS],
        "categories": [{"id": ids[c], "name": c} for c in CATEGORIES],
        "annotations": [
            {"id": 100 * i + n, "image_id": i, "category_id": ids[c]}
            for i, names in ANNOTATIONS.items()
            for n, c in enumerate(names)
        ],
    }


def per_image(questions):
    images = defaultdict(list)
    for q in questions:
        name = re.fullmatch(r"Is there an? (.+) in the image\?", q["text"]).group(1)
        images[int(q["image"][-16:-4])].append((name, q["label"]))
    return images


def test_build_invariants():
    splits = build_pope(instances(), num_images=6, seed=0)
    frequency = Counter(name for i in ELIGIBLE for name in DISTINCT[i])
    co = defaultdict(Counter)
    for i in ELIGIBLE:
        for a in DISTINCT[i]:
            co[a].update(b for b in DISTINCT[i] if b != a)
    seen = set(frequency)
    for strategy, questions in splits.items():
        assert [q["question_id"] for q in questions] == list(range(1, 37))
        assert [q["label"] for q in questions] == ["yes", "no"] * 18
        asked = per_image(questions)
        assert set(asked) == set(ELIGIBLE)
        for image, pairs in asked.items():
            positives = [name for name, label in pairs if label == "yes"]
            negatives = [name for name, label in pairs if label == "no"]
            assert positives == DISTINCT[image][:3]
            assert len(set(negatives)) == 3 and not set(negatives) & set(DISTINCT[image]) and set(negatives) <= seen
            for k, (positive, negative) in enumerate(zip(positives, negatives)):
                candidates = seen - set(DISTINCT[image]) - set(negatives[:k])
                if strategy == "popular":
                    assert frequency[negative] == max(frequency[c] for c in candidates)
                if strategy == "adversarial" and max(co[positive][c] for c in candidates) > 0:
                    assert co[positive][negative] == max(co[positive][c] for c in candidates)
    # hand-worked image 4 (dog, cat, couch, tv): most frequent absent objects person (4), car (3), chair (2);
    # most co-occurring: with dog chair (2), with cat person (1), with couch nothing left -> random
    assert per_image(splits["popular"])[4] == [
        ("dog", "yes"),
        ("person", "no"),
        ("cat", "yes"),
        ("car", "no"),
        ("couch", "yes"),
        ("chair", "no"),
    ]
    adversarial = per_image(splits["adversarial"])[4]
    assert adversarial[:4] == [("dog", "yes"), ("chair", "no"), ("cat", "yes"), ("person", "no")]
    assert adversarial[5][0] in {"car", "bus", "truck", "bottle"}


def test_question_text():
    assert question_text("dog") == "Is there a dog in the image?"
    assert question_text("umbrella") == "Is there an umbrella in the image?"


def test_build_seeds_and_cli(tmp_path, capsys):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(instances()))
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        argv = [
            "--instances",
            str(path),
            "--num-images",
            "3",
            "--seed",
            str(seed),
            "--output-dir",
            str(tmp_path / name),
        ]
        assert pope_build_main(argv) == 0
        runs[name] = {s: (tmp_path / name / f"coco_pope_{s}.json").read_bytes() for s in pope_build.STRATEGIES}
    assert runs["a"] == runs["b"]
    assert runs["a"]["random"] != runs["c"]["random"]
    assert len(read_objects(tmp_path / "a" / "coco_pope_random.json")) == 18
    assert (
        pope_build_main(["--instances", str(path), "--num-images", "7", "--seed", "0", "--output-dir", str(tmp_path)])
        == 1
    )
    assert "only 6 have 3+ categories" in capsys.readouterr().err


def test_build_categories_from(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(instances()))
    allowed = tmp_path / "categories.txt"
    allowed.write_text("person, man\ncar\nbus\ntruck\nbottle\ntv\n")  # synonyms format: first item per line
    argv = ["--instances", str(path), "--num-images", "3", "--seed", "0", "--output-dir", str(tmp_path)]
    assert pope_build_main([*argv, "--categories-from", str(allowed)]) == 0
    images = per_image(read_objects(tmp_path / "coco_pope_random.json"))
    assert set(images) == {2, 3, 5}
    # image 3 lacks only bus and bottle among the sampled objects: its third negative comes from the category list
    assert {name for name, label in images[3] if label == "no"} == {"bus", "bottle", "tv"}


# ------------------------------------------------------------------------------------------------ released files


def test_released_random_split(tmp_path):
    path = RELEASED / "coco_pope_random.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    questions = read_objects(path)
    assert len(questions) == 3000 and len({q["image"] for q in questions}) == 500
    assert [q["label"] for q in questions] == ["yes", "no"] * 1500
    assert all(re.fullmatch(r"Is there an? [a-z ]+ in the image\?", q["text"]) for q in questions)
    answers = write_jsonl(
        tmp_path / "answers.jsonl", [{"question_id": q["question_id"], "text": "Yes"} for q in questions]
    )
    out = tmp_path / "out.json"
    assert pope_main(["--questions", str(path), "--answers", str(answers), "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics == pytest.approx(
        {
            "accuracy": 0.5,
            "precision": 0.5,
            "recall": 1.0,
            "f1": 2 / 3,
            "yes_ratio": 1.0,
            "TP": 1500,
            "FP": 1500,
            "TN": 0,
            "FN": 0,
        }
    )


def test_empty_answers_counted_listed_and_warned(tmp_path, capsys):
    questions = [
        {"question_id": i, "image": "a.jpg", "text": "Is there a dog?", "label": lab}
        for i, lab in enumerate(["yes", "no", "no", "yes"])
    ]
    answers = [
        {"question_id": 0, "text": "Yes."},
        {"question_id": 1, "text": ""},
        {"question_id": 2, "text": "  "},
        {"question_id": 3, "text": "No."},
    ]
    q, a = write_jsonl(tmp_path / "q.jsonl", questions), write_jsonl(tmp_path / "a.jsonl", answers)
    result = evaluate_pope(questions, answers)
    assert result["empty_answers"] == [1, 2] and result["predictions"] == ["yes", "yes", "yes", "no"]  # POPE's rule
    out = tmp_path / "pope.json"
    assert pope_main(["--questions", str(q), "--answers", str(a), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: q: 2 empty answer(s), scored by the pope parser's rule (question_id 1, 2)" in err
    report = json.loads(out.read_text())
    assert report["num_empty_answers"] == 2 and report["splits"]["q"]["empty_answers"] == [1, 2]
    assert report["metrics"]["accuracy"] == 1 / 4  # 0 right; 1, 2 wrong ("yes" for "no"); 3 wrong
