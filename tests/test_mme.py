"""MME: the official calculation.py's parsing and scores by hand, the release layouts, `vdtrain eval run|mme`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vdtrain.cli import main as cli_main
from vdtrain.evaluation.mme import load_mme_questions, parse_answer, score_mme

EVAL = Path(__file__).resolve().parents[1] / "eval"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("Yes", "yes"),  # lower-cased, then exact
        ("NO", "no"),
        ("Yes, there is a dog.", "yes"),  # first four characters "yes,"
        ("No.", "no"),
        ("nope", "no"),  # "no" inside the first four
        ("  yes", "other"),  # no stripping: "  ye" holds neither
        ("", "other"),  # an empty answer is an answer, scored "other"
        ("I think yes", "other"),  # "i th"
        ("not sure", "no"),  # "not " holds "no"
        ("maybe", "other"),
        ("eyes", "yes"),  # "eyes" holds "yes"
        ("\nyes", "yes"),  # "\nyes"[:4] holds "yes": only lower-casing, no other normalisation
    ],
)
def test_parse_answer_as_the_official_tool(text, parsed):
    assert parse_answer(text) == parsed


def _answer(category: str, image: str, k: int, truth: str, text: str) -> dict:
    return {
        "question_id": f"{category}/{image}/{k}",
        "category": category,
        "image": f"{category}/{image}",
        "question": "q?",
        "answer": truth,
        "text": text,
    }


# existence (perception): 3 images. a: both right; b: one right ("  yes" is other); c: both right ("Yes,", "nope").
# count (perception): 2 images. a: "" (other) and "No" right -> half; b: both wrong.
# code_reasoning (cognition): 1 image, both right ("Yes", "no").
ANSWERS = [
    _answer("existence", "a.jpg", 0, "Yes", "yes"),
    _answer("existence", "a.jpg", 1, "No", "no"),
    _answer("existence", "b.jpg", 0, "Yes", "  yes"),
    _answer("existence", "b.jpg", 1, "No", "No."),
    _answer("existence", "c.jpg", 0, "Yes", "Yes, there is"),
    _answer("existence", "c.jpg", 1, "No", "nope"),
    _answer("count", "a.png", 0, "Yes", ""),
    _answer("count", "a.png", 1, "No", "No"),
    _answer("count", "b.png", 0, "Yes", "I think yes"),
    _answer("count", "b.png", 1, "No", "yes"),
    _answer("code_reasoning", "x.png", 0, "Yes", "Yes"),
    _answer("code_reasoning", "x.png", 1, "No", "no"),
]


def test_scores_by_hand():
    result = score_mme(ANSWERS)
    existence = result["perception"]["categories"]["existence"]
    # acc: 5 of 6 questions right = 83.33; acc_plus: 2 of 3 images = 66.67
    assert existence["acc"] == pytest.approx(500 / 6) and existence["acc_plus"] == pytest.approx(200 / 3)
    assert existence["score"] == pytest.approx(500 / 6 + 200 / 3)
    assert (existence["questions"], existence["images"]) == (6, 3)
    count = result["perception"]["categories"]["count"]
    # 1 of 4 right = 25; no image fully right (a is half right) = 0
    assert (count["acc"], count["acc_plus"], count["score"]) == (25.0, 0.0, 25.0)
    assert result["perception"]["total"] == pytest.approx(500 / 6 + 200 / 3 + 25.0)
    code = result["cognition"]["categories"]["code_reasoning"]
    assert (code["acc"], code["acc_plus"]) == (100.0, 100.0)
    assert result["cognition"]["total"] == 200.0
    assert set(result) == {"perception", "cognition"}


def test_missing_answers_and_odd_images_are_errors():
    questions = [{k: v for k, v in a.items() if k != "text"} for a in ANSWERS]
    with pytest.raises(ValueError, match=r"2 MME questions have no answer: count/b.png/0, count/b.png/1"):
        score_mme(ANSWERS[:-4] + ANSWERS[-2:], questions)
    with pytest.raises(ValueError, match="exactly two questions"):
        score_mme(ANSWERS[:-1])
    with pytest.raises(ValueError, match="not Yes or No"):
        score_mme([{**ANSWERS[0], "answer": "Maybe"}, ANSWERS[1]])


def _write_release(root: Path) -> None:
    """Two layouts: `existence/` images beside same-named .txt; `artwork/images` + `questions_answers_YN`."""
    (root / "existence").mkdir(parents=True)
    for k in range(2):
        Image.new("RGB", (32, 32), (40 * k, 90, 160)).save(root / "existence" / f"{k:012d}.jpg")
        (root / "existence" / f"{k:012d}.txt").write_text(
            "Is there a dog in this image?\tYes\nIs there a cat in this image?\tNo\n"
        )
    (root / "artwork" / "images").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN").mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "artwork" / "images" / "10002.jpg")
    (root / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork created by Van Gogh? Please answer yes or no.\tNo\n"
        "Is this artwork created by Monet? Please answer yes or no.\tYes\n"
    )


def test_release_layouts_are_read(tmp_path):
    _write_release(tmp_path / "MME")
    questions = load_mme_questions(tmp_path / "MME")
    assert [q["question_id"] for q in questions] == [
        "existence/000000000000.jpg/0",
        "existence/000000000000.jpg/1",
        "existence/000000000001.jpg/0",
        "existence/000000000001.jpg/1",
        "artwork/10002.jpg/0",
        "artwork/10002.jpg/1",
    ]
    assert questions[4]["image"] == "artwork/images/10002.jpg" and questions[4]["answer"] == "No"
    assert questions[0]["question"] == questions[0]["text"] == "Is there a dog in this image?"
    with pytest.raises(FileNotFoundError, match="none of the MME category folders"):
        load_mme_questions(tmp_path)


def test_an_image_without_two_questions_fails_when_read(tmp_path):
    _write_release(tmp_path / "MME")
    (tmp_path / "MME" / "existence" / "000000000001.txt").write_text("Is there a dog in this image?\tYes\n")
    with pytest.raises(ValueError, match=r"000000000001.txt: 1 questions; MME asks two per image"):
        load_mme_questions(tmp_path / "MME")


def test_eval_run_limit_keeps_whole_images(tmp_path, tiny_llava_dir, capsys):
    root = tmp_path / "MME"
    _write_release(root)
    out = tmp_path / "run"
    argv = ["eval", "run", str(EVAL / "mme.yaml"), "--model", str(tiny_llava_dir), "--image-folder", str(root)]
    argv += ["--output-dir", str(out), "--max-new-tokens", "1", "--limit", "3", "--no-progress"]
    assert cli_main(argv) == 0  # 3 questions would split image 000000000001.jpg: both of its questions are asked
    answers = [json.loads(line) for line in (out / "answers" / "mme.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [f"existence/00000000000{k // 2}.jpg/{k % 2}" for k in range(4)]
    assert json.loads((out / "mme.json").read_text())["perception"]["categories"]["existence"]["images"] == 2
    printed = capsys.readouterr().out  # a partial release: the line says what each total sums
    assert "(1 categories)  cognition 0.0 (0 categories)" in printed
    assert json.loads((out / "summary.json").read_text())["categories"] == {
        "perception": ["existence"],
        "cognition": [],
    }


def test_eval_run_and_eval_mme_on_a_tiny_model(tmp_path, tiny_llava_dir):
    root = tmp_path / "MME"
    _write_release(root)
    out = tmp_path / "run"
    argv = [
        "eval",
        "run",
        str(EVAL / "mme.yaml"),
        "--model",
        str(tiny_llava_dir),
        "--image-folder",
        str(root),
        "--output-dir",
        str(out),
        "--max-new-tokens",
        "3",
        "--no-progress",
    ]
    assert cli_main(argv) == 0
    answers = [json.loads(line) for line in (out / "answers" / "mme.jsonl").read_text().splitlines()]
    assert len(answers) == 6
    assert set(answers[0]) >= {"question_id", "category", "image", "question", "answer", "text"}
    assert answers[0]["prompt"] == answers[0]["question"] + "\nAnswer the question using a single word or phrase."
    expected = score_mme(answers)
    assert json.loads((out / "mme.json").read_text()) == json.loads(json.dumps(expected))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == {"perception": expected["perception"]["total"], "cognition": 0.0}
    # the standalone scorer reads the same file and gives the same numbers; with --mme-dir it checks completeness
    assert (
        cli_main(
            [
                "eval",
                "mme",
                "--answers",
                str(out / "answers" / "mme.jsonl"),
                "--output",
                str(tmp_path / "again.json"),
                "--mme-dir",
                str(root),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads((out / "mme.json").read_text())
    (tmp_path / "short.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers[:-1]))
    argv = ["eval", "mme", "--answers", str(tmp_path / "short.jsonl"), "--output", str(tmp_path / "x.json")]
    assert cli_main([*argv, "--mme-dir", str(root)]) == 1
