"""CHAIR on hand-made COCO-format files, with expected values computed by hand from the algorithm."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nltk = pytest.importorskip("nltk")

from vdtrain.cli import main as cli_main  # noqa: E402
from vdtrain.evaluation import chair_truth  # noqa: E402
from vdtrain.evaluation.chair import Synonyms, evaluate_chair, extract_objects, load_synonyms  # noqa: E402
from vdtrain.evaluation.chair_truth import build_ground_truth, coco_annotation_files  # noqa: E402
from vdtrain.evaluation.lemmatize import singularize  # noqa: E402
from vdtrain.evaluation.nltk_check import MissingNLTKDataError, require_nltk_data  # noqa: E402
from vdtrain.evaluation.questions import load_captions  # noqa: E402

NLTK_DATA = Path(__file__).resolve().parents[2] / "shared" / "nltk_data"
if not NLTK_DATA.is_dir():
    NLTK_DATA = Path(os.environ.get("NLTK_DATA", NLTK_DATA))


@pytest.fixture(autouse=True)
def nltk_data(monkeypatch):
    if not (NLTK_DATA / "corpora").is_dir():
        pytest.skip(f"no NLTK data at {NLTK_DATA} (set NLTK_DATA)")
    monkeypatch.setattr(nltk.data, "path", [str(NLTK_DATA), *nltk.data.path])
    return NLTK_DATA


CATEGORIES = {1: "person", 2: "bicycle", 17: "cat", 18: "dog", 22: "elephant", 32: "tie", 63: "couch", 70: "toilet"}
OBJECTS = {1: [1, 18, 1], 2: [70], 3: [22, 1], 4: []}  # image -> category ids of its instances
REFERENCES = {
    1: ["A man walking his puppy.", "Two people near a bicycle."],  # + person, dog, bicycle
    2: ["A toilet seat in a bathroom."],  # + toilet
    3: ["A baby elephant with its trainer."],  # + elephant
    4: ["An empty room."],
}
GROUND_TRUTH = {1: {"person", "dog", "bicycle"}, 2: {"toilet"}, 3: {"elephant", "person"}, 4: set()}

# (image_id, caption, mentioned categories, hallucinated pairs, recalled, |ground truth|)
CASES = [
    (
        1,
        "A woman rides bikes with two dogs and a cat, and the dog chases the cat.",
        ["person", "bicycle", "dog", "cat", "dog", "cat"],
        [["cat", "cat"], ["cat", "cat"]],
        3,
        3,
    ),
    (2, "The toilet seat is up and there is no chair.", ["toilet", "chair"], [["chair", "chair"]], 1, 1),
    (2, "A seat next to the toilet.", ["toilet"], [], 1, 1),  # toilet + seat: the seat is no chair
    (
        3,
        "A baby elephant and a baby dog near a dining table with cell phones.",
        ["elephant", "dog", "dining table", "cell phone"],
        [["dog", "dog"], ["table", "dining table"], ["cell phone", "cell phone"]],
        1,
        2,
    ),
    (1, "", [], [], 0, 3),  # empty caption: counts for CHAIR_s and recall denominators
    (999, "There is no dog.", ["dog"], [["dog", "dog"]], 0, 0),  # negation ignored; unknown image
    (
        4,
        "A man wearing a bow tie sits on a couch next to a motor bike.",  # " motor bike" never matches
        ["person", "tie", "couch"],
        [["man", "person"], ["tie", "tie"], ["couch", "couch"]],
        0,
        0,
    ),
]
# CHAIR_s = 5 hallucinating captions / 7; CHAIR_i = (2+1+0+3+0+1+3) / (6+2+1+4+0+1+3); Recall = (3+1+1+1) / (3+1+1+2+3)
EXPECTED = {"CHAIRs": 5 / 7, "CHAIRi": 10 / 17, "Recall": 6 / 10}


def write_coco(directory: Path, references=REFERENCES, split="val2014") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    images = [{"id": i, "file_name": f"COCO_{split}_{i:012d}.jpg"} for i in OBJECTS]
    instances = {
        "images": images,
        "categories": [{"id": k, "name": v} for k, v in CATEGORIES.items()],
        "annotations": [
            {"id": 10 * i + n, "image_id": i, "category_id": c}
            for i, cats in OBJECTS.items()
            for n, c in enumerate(cats)
        ],
    }
    captions = {
        "images": images,
        "annotations": [
            {"id": 10 * i + n, "image_id": i, "caption": c} for i, cs in references.items() for n, c in enumerate(cs)
        ],
    }
    paths = directory / f"instances_{split}.json", directory / f"captions_{split}.json"
    paths[0].write_text(json.dumps(instances))
    paths[1].write_text(json.dumps(captions))
    return paths


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path / "coco")


@pytest.fixture
def synonyms():
    return load_synonyms()


def test_synonym_quirks(synonyms):
    assert synonyms.to_category["puppy"] == "dog"
    assert synonyms.to_category[" motor bike"] == "motorcycle" and "motor bike" not in synonyms.to_category
    assert "cheesecake" not in synonyms.to_category and "iphone" not in synonyms.to_category
    assert len(synonyms.categories) == 80


@pytest.mark.parametrize(
    "caption, words, categories",
    [
        ("Two dogs and three puppies.", ["dog", "puppy"], ["dog", "dog"]),
        ("A baby cow next to an adult giraffe.", ["cow", "giraffe"], ["cow", "giraffe"]),
        ("A passenger jet over a passenger train.", ["jet", "train"], ["airplane", "train"]),
        ("A batter at home plate near a baby animal.", [], []),  # merged pairs outside the vocabulary vanish
        ("Two wine glasses and a hot dog.", ["wine glass", "hot dog"], ["wine glass", "hot dog"]),
        ("A well-dressed man holds an iPhone and a cheesecake.", ["man"], ["person"]),
        ("A toilet seat and a seat.", ["toilet"], ["toilet"]),
    ],
)
def test_extract_objects(synonyms, caption, words, categories):
    objects = extract_objects(caption, synonyms)
    assert objects.words == words
    assert objects.categories == categories


def test_toilet_seat_keeps_seat_in_tokens(synonyms):
    assert extract_objects("A seat next to the toilet.", synonyms).tokens == [
        "a",
        "seat",
        "next",
        "to",
        "the",
        "toilet",
        ".",
    ]


def chair_main(argv: list[str]) -> int:
    return cli_main(["eval", "chair", *argv])


def test_ground_truth(coco, synonyms):
    assert build_ground_truth([coco[0]], [coco[1]], synonyms) == GROUND_TRUTH


def test_evaluate_chair_hand_computed(coco, synonyms):
    ground_truth = build_ground_truth([coco[0]], [coco[1]], synonyms)
    captions = [{"image_id": i, "caption": c} for i, c, *_ in CASES]
    result = evaluate_chair(captions, ground_truth, synonyms, unknown_ids="count")  # image 999: no annotation
    overall = result["overall_metrics"]
    for key, value in EXPECTED.items():
        assert overall[key] == pytest.approx(value, abs=1e-12)
    assert overall["num_captions"] == 7
    assert overall["num_unknown_images"] == 1
    assert overall["mean_length"] == pytest.approx(sum(len(c.split()) for _, c, *_ in CASES) / 7)
    for sentence, (image_id, caption, mentioned, hallucinated, recalled, n_gt) in zip(result["sentences"], CASES):
        assert sentence["image_id"] == image_id and sentence["caption"] == caption
        assert sentence["mscoco_generated_words"] == mentioned
        assert sentence["mscoco_hallucinated_words"] == hallucinated
        assert sentence["mscoco_gt_words"] == sorted(GROUND_TRUTH.get(image_id, set()))
        assert sentence["metrics"]["CHAIRs"] == int(bool(hallucinated))
        assert sentence["metrics"]["Recall"] == (recalled / n_gt if n_gt else 0.0)


def test_empty_denominators(coco, synonyms):
    ground_truth = build_ground_truth([coco[0]], [coco[1]], synonyms)
    with pytest.raises(ValueError, match="none were given"):
        evaluate_chair([], ground_truth, synonyms)
    with pytest.raises(ValueError, match="CHAIR_i is undefined"):
        evaluate_chair([{"image_id": 1, "caption": "A sunny day."}], ground_truth, synonyms)
    with pytest.raises(ValueError, match="Recall is undefined"):
        evaluate_chair([{"image_id": 4, "caption": "A dog."}], ground_truth, synonyms)


def test_pattern_lemmatizer():
    words = "dogs glass glasses women people knives wolves children geese mice buses skis cookies scissors oxen"
    assert [singularize(w) for w in words.split()] == [
        "dog",
        "glas",
        "glass",
        "woman",
        "person",
        "knife",
        "wolf",
        "child",
        "goose",
        "mouse",
        "bus",
        "ski",
        "cookies",
        "scissors",
        "ox",
    ]
    assert singularize("mothers-in-law") == "mother-in-law"


def test_pattern_option_in_chair(synonyms):
    # "wine glass" singularises to "wine glas", which CHAIR maps back; "geese" becomes a goose (a bird) only here.
    caption = "Geese near a wine glass."
    assert extract_objects(caption, synonyms, "pattern").categories == ["bird", "wine glass"]
    assert extract_objects(caption, synonyms, "nltk").categories == ["wine glass"]


def test_cache_reused_and_invalidated(tmp_path, coco, synonyms):
    cache_dir = tmp_path / "cache"
    assert build_ground_truth([coco[0]], [coco[1]], synonyms, cache_dir=cache_dir) == GROUND_TRUTH
    (cache_file,) = cache_dir.glob("chair-gt-*.json")
    cached = json.loads(cache_file.read_text())
    cached["ground_truth"]["4"] = ["zebra"]  # only a reused cache can produce this
    cache_file.write_text(json.dumps(cached))
    assert build_ground_truth([coco[0]], [coco[1]], synonyms, cache_dir=cache_dir)[4] == {"zebra"}
    # another lemmatizer or synonyms file is another key
    assert build_ground_truth([coco[0]], [coco[1]], synonyms, "pattern", cache_dir=cache_dir)[4] == set()
    # a changed annotation file can never hit the stale cache
    write_coco(coco[0].parent, {**REFERENCES, 4: ["A cat on a couch."]})
    fresh = build_ground_truth([coco[0]], [coco[1]], synonyms, cache_dir=cache_dir)
    assert fresh[4] == {"cat", "couch"}
    assert len(list(cache_dir.glob("chair-gt-*.json"))) == 3


def test_parallel_ground_truth_matches(coco, synonyms, monkeypatch):
    monkeypatch.setattr(chair_truth, "_CHUNK", 1)
    assert build_ground_truth([coco[0]], [coco[1]], synonyms, num_workers=2) == GROUND_TRUTH


def test_unknown_category_refused(tmp_path, coco):
    other = Synonyms.from_text("person, man\ndog, puppy\n")  # the instances also have a toilet
    with pytest.raises(ValueError, match="category 'toilet' is not in the synonyms file: pass --synonyms"):
        build_ground_truth([coco[0]], [coco[1]], other)


def test_files_that_are_not_coco_are_named(tmp_path, coco, synonyms):
    broken = tmp_path / "instances_broken.json"
    broken.write_text("<html>rate limited</html>")
    with pytest.raises(ValueError, match=r"instances_broken\.json is not a COCO instances file: not JSON"):
        build_ground_truth([broken], [coco[1]], synonyms)
    instances = json.loads(coco[0].read_text())
    instances["annotations"][0]["category_id"] = 999
    broken.write_text(json.dumps(instances))
    with pytest.raises(ValueError, match=r"instances_broken\.json: annotation \d+ has category_id 999"):
        build_ground_truth([broken], [coco[1]], synonyms)


def test_missing_nltk_data(monkeypatch, tmp_path, coco, capsys):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    with pytest.raises(MissingNLTKDataError) as err:
        require_nltk_data()
    message = str(err.value)
    assert "punkt_tab, averaged_perceptron_tagger_eng, wordnet" in message
    assert "python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet" in message
    with pytest.raises(MissingNLTKDataError, match=r"missing NLTK data: punkt_tab \(searched"):
        require_nltk_data(lemmatizer="pattern")  # the pattern singulariser only tokenises with NLTK
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"image_id": 1, "caption": "A dog."}) + "\n")
    argv = ["--captions", str(captions), "--coco-dir", str(coco[0].parent), "--output", str(tmp_path / "o.json")]
    for name in ("https_proxy", "http_proxy"):  # the network cut: the first-use fetch fails at once
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NLTK_ALLOW_PROXIED_URLOPEN", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert chair_main([*argv, "--no-cache", "--nltk-data", str(tmp_path / "mine")]) == 1
    err = capsys.readouterr().err
    fetching = "vdtrain: fetching NLTK data punkt_tab, averaged_perceptron_tagger_eng, wordnet (first use, ~40 MB)"
    assert err.startswith(f"{fetching} into {tmp_path / 'mine'}\n")
    assert f"fetching it into {tmp_path / 'mine'} failed: " in err and "python -m nltk.downloader" in err


def test_load_captions_llava_style(tmp_path):
    path = tmp_path / "answers.jsonl"
    records = [
        {"question_id": 0, "image": "COCO_val2014_000000012345.jpg", "text": "A dog."},
        {"question_id": 1, "image": "000000000042.jpg", "text": "A cat."},
        {"image_id": "7", "caption": "A bird."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = load_captions(path)
    assert [(c["image_id"], c["caption"]) for c in loaded] == [(12345, "A dog."), (42, "A cat."), (7, "A bird.")]
    # answers that carry only a question id, resolved through the question file
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question_id": 3, "image": "000000000005.jpg"}) + "\n")
    answers = tmp_path / "bare.json"
    answers.write_text(json.dumps([{"question_id": 3, "text": "A horse."}]))
    assert load_captions(answers, questions=questions)[0]["image_id"] == 5
    with pytest.raises(ValueError, match="record 1 .*question_id 3.* has no 'image_id'"):
        load_captions(answers)


def test_cli(tmp_path, coco, capsys):
    write_coco(coco[0].parent, {1: ["A bicycle."]}, split="train2014")  # the train pair is used when present
    assert [p.name for p in coco_annotation_files(coco[0].parent)[0]] == [
        "instances_val2014.json",
        "instances_train2014.json",
    ]
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"image_id": i, "caption": c}) + "\n" for i, c, *_ in CASES))
    out = tmp_path / "out" / "chair.json"
    argv = ["--captions", str(captions), "--coco-dir", str(coco[0].parent), "--output", str(out)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--workers", "1"]
    # image 999 is not annotated: an error naming it and the way out, no traceback, nothing written
    assert chair_main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("vdtrain eval chair: error: ") and str(captions) in err and "Traceback" not in err
    assert "not in the annotations: 999" in err and "--skip-unknown-ids" in err and not out.exists()

    assert chair_main([*argv, "--skip-unknown-ids"]) == 0
    printed = capsys.readouterr().out
    # without caption 999 (1 mention, hallucinated): 4 of 6 captions, 9 of 16 mentions hallucinate
    assert f"CHAIRs {100 * 4 / 6:.1f}  CHAIRi {100 * 9 / 16:.1f}  Recall {100 * 6 / 10:.1f}" in printed
    assert "left out the captions of 1 image id(s) not in the annotations: 999" in printed
    report = json.loads(out.read_text())
    assert report["overall_metrics"]["CHAIRi"] == pytest.approx(9 / 16)
    assert report["overall_metrics"]["skipped_unknown_ids"] == [999]
    assert len(report["sentences"]) == 6 and 999 not in {s["image_id"] for s in report["sentences"]}
    # explicit annotation files instead of a directory (a synthetic benchmark's own names)
    argv = ["--captions", str(captions), "--instances", str(coco[0]), "--coco-captions", str(coco[1])]
    assert chair_main([*argv, "--output", str(out), "--no-cache", "--skip-unknown-ids"]) == 0
    assert json.loads(out.read_text())["overall_metrics"]["Recall"] == pytest.approx(6 / 10)
    capsys.readouterr()
    # every id unknown: skipping leaves nothing, said as such (not "none were given"); --output a directory
    only_unknown = tmp_path / "unknown.jsonl"
    only_unknown.write_text(json.dumps({"image_id": 999, "caption": "A cat."}) + "\n")
    argv = ["--instances", str(coco[0]), "--coco-captions", str(coco[1]), "--no-cache", "--workers", "1"]
    assert chair_main([*argv, "--captions", str(only_unknown), "--output", str(out), "--skip-unknown-ids"]) == 1
    assert "none of the captions' 1 image id(s) is in the annotations" in capsys.readouterr().err
    assert chair_main([*argv, "--captions", str(captions), "--output", str(tmp_path), "--skip-unknown-ids"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"vdtrain eval chair: error: {tmp_path} is a directory; name the file to write"
    )


def test_cli_help(capsys):
    assert chair_main(["--help"]) == 0
    assert "vdtrain eval chair" in capsys.readouterr().out
