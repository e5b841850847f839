"""Tests of the demo's synthetic dataset: bias statistics, file formats, and the partner-hallucination metric."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdtrain.demo import CLASSES, PAIRS, DemoConfig, build_demo_dataset, partner_hallucination_rate, read_synonyms
from vdtrain.demo.data import _sample_categories, _train_conversation, mentioned_categories
from vdtrain.demo.shapes import render_scene

NLTK_DATA = Path(__file__).resolve().parents[2] / "shared" / "nltk_data"
WORDS = {w: c.name for c in CLASSES for w in (c.name, c.plural, *c.synonyms)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg = DemoConfig(seed=3, n_train=1000, n_test=120, n_counterfactual=120)
    paths = build_demo_dataset(tmp_path_factory.mktemp("demo"), cfg)
    return cfg, paths, json.loads(paths.meta.read_text())


def _objects(meta: dict, split: str) -> dict[int, list[str]]:
    return {r["image_id"]: [o["name"] for o in r["objects"]] for r in meta["images"][split]}


def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = DemoConfig(seed=7, n_train=30, n_test=10, n_counterfactual=10)
    a, b = build_demo_dataset(tmp_path / "a", cfg), build_demo_dataset(tmp_path / "b", cfg)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert len(files) == 50 + 1 + 6 + 6 + 2 + 2  # images, train.json, COCO, POPE, caption questions, synonyms+meta
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files)
    c = build_demo_dataset(tmp_path / "c", DemoConfig(seed=8, n_train=30, n_test=10, n_counterfactual=10))
    assert c.train_json.read_bytes() != a.train_json.read_bytes()


@pytest.mark.parametrize("p_pair", [0.8, 0.3])
def test_sampler_keeps_partner_given_a_at_p_pair(p_pair):
    cfg = DemoConfig(p_pair=p_pair)
    rng = np.random.default_rng(0)
    with_a = Counter()
    for _ in range(12000):
        cats = _sample_categories(rng, int(rng.integers(1, 5)), cfg, [], set())
        assert len(cats) == len(set(cats)) <= 4
        for a, b in PAIRS:
            if a in cats:
                with_a[a, b in cats] += 1
    for a, _ in PAIRS:  # ~1,200 images with each A: one standard error is about 0.012
        assert with_a[a, True] / (with_a[a, True] + with_a[a, False]) == pytest.approx(p_pair, abs=0.04)
    pooled = sum(with_a[a, True] for a, _ in PAIRS) / sum(with_a.values())
    assert pooled == pytest.approx(p_pair, abs=0.02)


def test_train_cooccurrence_close_to_p_pair(demo):
    cfg, _, meta = demo
    objects = _objects(meta, "train").values()
    hits = [b in names for names in objects for a, b in PAIRS if a in names]
    assert len(hits) > 400
    assert np.mean(hits) == pytest.approx(cfg.p_pair, abs=0.04)
    assert meta["stats"]["train"]["p_partner_given_a"]["cup->cake"] == pytest.approx(cfg.p_pair, abs=0.1)


def test_noisy_captions_name_absent_partner_at_p_noisy():
    cfg = DemoConfig(p_noisy=0.25, frac_qa=0.3)
    rng = np.random.default_rng(1)
    kinds = Counter()
    for _ in range(4000):
        record = {"references": ["A photo with a cup and a box."]}
        conv = _train_conversation(record, {"cup": 1, "box": 2}, rng, cfg)
        names_cake = "cake" in mentioned_categories(conv["conversations"][1]["value"], WORDS)
        kinds[conv["kind"], conv["noisy"], names_cake] += 1
    assert set(kinds) == {("qa", False, False), ("caption", True, True), ("caption", False, False)}
    n_caption = kinds["caption", True, True] + kinds["caption", False, False]
    assert n_caption / 4000 == pytest.approx(1 - cfg.frac_qa, abs=0.02)
    assert kinds["caption", True, True] / n_caption == pytest.approx(cfg.p_noisy, abs=0.025)


def test_train_conversations_match_objects(demo):
    cfg, paths, meta = demo
    convs = json.loads(paths.train_json.read_text())
    objects = {r["file_name"]: {o["name"] for o in r["objects"]} for r in meta["images"]["train"]}
    eligible = noisy = 0
    for conv in convs:
        turns, present = conv["conversations"], objects[conv["image"]]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n") and all("<image>" not in t["value"] for t in turns[1:])
        absent_b = {b for a, b in PAIRS if a in present and b not in present}
        if len(turns) == 4:  # yes/no questions, answered correctly in one word
            for q, ans in zip(turns[::2], turns[1::2]):
                name = q["value"].removeprefix("<image>\n").split()[3]
                assert ans["value"] == ("Yes" if name in present else "No")
            continue
        caption = turns[1]["value"]
        assert 6 <= len(caption.split()) <= 22 and caption.endswith(".")
        named = mentioned_categories(caption, WORDS)
        eligible += bool(absent_b)
        noisy += bool(named & absent_b)
        assert named - absent_b == present and len(named & absent_b) <= 1
    assert eligible > 50  # the rate is checked precisely on 4,000 draws above; here within 3.5 binomial sd
    assert abs(noisy - cfg.p_noisy * eligible) <= 3.5 * (eligible * cfg.p_noisy * (1 - cfg.p_noisy)) ** 0.5
    assert noisy == meta["stats"]["train"]["noisy_captions"]


def test_counterfactual_never_shows_partner_of_its_a(demo):
    _, _, meta = demo
    built = Counter()
    for r in meta["images"]["counterfactual"]:
        a, b = r["built_around"]
        names = {o["name"] for o in r["objects"]}
        assert a in names and b not in names
        built[a, b] += 1
    assert set(built) == set(PAIRS) and max(built.values()) - min(built.values()) <= 1


def test_coco_files_load_and_match_drawn_objects(demo):
    from pycocotools.coco import COCO

    cfg, paths, meta = demo
    for split in ("train", "test", "counterfactual"):
        coco = COCO(str(paths.instances[split]))
        assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(c.name for c in CLASSES)
        objects = _objects(meta, split)
        assert sorted(coco.getImgIds()) == sorted(objects)
        for image_id, names in objects.items():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert [coco.cats[a["category_id"]]["name"] for a in anns] == names
            for a in anns:
                x, y, w, h = a["bbox"]
                assert 0 <= x and 0 <= y and x + w <= cfg.image_size and y + h <= cfg.image_size
                assert 0 < a["area"] <= w * h + 0.01 and a["iscrowd"] == 0  # visible pixels; both rounded to 0.01
        captions = COCO(str(paths.captions[split]))
        for image_id, names in objects.items():
            refs = captions.loadAnns(captions.getAnnIds(imgIds=image_id))
            assert len(refs) == 2 and all(mentioned_categories(r["caption"], WORDS) == set(names) for r in refs)


def test_single_box_bbox_covers_its_blue_pixels():
    rng = np.random.default_rng(0)
    image, (obj,) = render_scene(["box"], rng, image_size=32, p_small=0)
    px = np.asarray(image, np.int16)
    blue = (px[..., 2] - px[..., :2].max(-1)) > 60
    ys, xs = np.nonzero(blue)
    x, y, w, h = obj.bbox
    assert x <= xs.min() and xs.max() < x + w and y <= ys.min() and ys.max() < y + h
    assert obj.area == pytest.approx(w * h, rel=0.02) and blue.sum() > 0.6 * w * h


def test_synonyms_file_parses_as_chair_does(demo):
    _, paths, _ = demo
    synonyms = read_synonyms(paths.synonyms)
    assert synonyms == {c.name: [c.name, *c.synonyms] for c in CLASSES}
    items = [w for line in paths.synonyms.read_text().splitlines() for w in line.strip().split(", ")]
    assert len(items) == len(set(items)) and all(w.isalpha() and w.islower() for w in items)


def test_reference_captions_extract_exactly_the_objects_with_nltk(demo, monkeypatch):
    """The CHAIR pipeline (nltk tokenise, POS-tag, WordNet-lemmatise) finds exactly the drawn categories."""
    nltk = pytest.importorskip("nltk")
    if not NLTK_DATA.is_dir():
        pytest.skip(f"no nltk data at {NLTK_DATA}")
    monkeypatch.setenv("NLTK_DATA", str(NLTK_DATA))
    nltk.data.path.insert(0, str(NLTK_DATA))
    from nltk.stem import WordNetLemmatizer

    _, paths, meta = demo
    lemma = WordNetLemmatizer()
    node = {w: cat for cat, words in read_synonyms(paths.synonyms).items() for w in words}
    pos = {"J": "a", "V": "v", "N": "n", "R": "r"}
    objects = _objects(meta, "test")
    for ann in json.loads(paths.captions["test"].read_text())["annotations"]:
        tagged = nltk.pos_tag(nltk.word_tokenize(ann["caption"].lower()))
        words = [lemma.lemmatize(w, pos.get(t[0], "n")) for w, t in tagged]
        assert {node[w] for w in words if w in node} == set(objects[ann["image_id"]]), ann["caption"]


def test_pope_files_alternate_with_correct_labels(demo):
    _, paths, meta = demo
    for split in ("test", "counterfactual"):
        by_file = {r["file_name"]: {o["name"] for o in r["objects"]} for r in meta["images"][split]}
        for variant, path in paths.pope[split].items():
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert [r["label"] for r in rows] == ["yes", "no"] * (len(rows) // 2)
            assert [r["question_id"] for r in rows] == list(range(1, len(rows) + 1))
            for r in rows:
                name = r["text"].split(" ", 3)[3].split(" in the image?")[0]
                assert r["text"] == f"Is there {'an' if name[0] in 'aeiou' else 'a'} {name} in the image?"
                assert (name in by_file[r["image"]]) == (r["label"] == "yes")
            if split == "counterfactual" and variant == "adversarial":  # the partner is the adversarial negative
                cf = {r["file_name"]: r["built_around"] for r in meta["images"][split]}
                asked = [
                    (q["image"], q["text"].split()[3], n["text"].split()[3]) for q, n in zip(rows[::2], rows[1::2])
                ]
                checked = 0
                for k, (file_name, pos, neg) in enumerate(asked):
                    a, b = cf[file_name]
                    if pos == a and all(f != file_name or n != b for f, _, n in asked[:k]):  # b not asked before
                        assert neg == b
                        checked += 1
                assert checked > 0.75 * len(cf)  # A is among the first 3 objects asked about
    questions = [json.loads(x) for x in paths.caption_questions["counterfactual"].read_text().splitlines()]
    assert [(q["image_id"], q["image"]) for q in questions] == [
        (r["image_id"], r["file_name"]) for r in meta["images"]["counterfactual"]
    ]


def test_images_have_configured_size_and_mode(tmp_path, demo):
    _, paths, _ = demo
    for file in sorted(paths.image_folder.glob("counterfactual_*.png"))[:5]:
        with Image.open(file) as im:
            assert (im.size, im.mode) == ((32, 32), "RGB")
    big = build_demo_dataset(tmp_path, DemoConfig(image_size=48, n_train=3, n_test=2, n_counterfactual=2))
    with Image.open(next(big.image_folder.glob("test_*.png"))) as im:
        assert (im.size, im.mode) == ((48, 48), "RGB")


def test_partner_hallucination_rate_hand_computed(tmp_path):
    objects = {1: ["cup", "apple"], 2: ["boat"], 3: ["tree", "leaf"], 4: ["clock", "cup"], 5: ["boat"]}
    records = [
        {"image_id": 1, "caption": "A mug and two cupcakes."},  # cup->cake: named (synonym, plural)
        {"image_id": 2, "caption": "A boat flying banners."},  # boat->flag: named
        {"image_id": 3, "caption": "A tree with its leaves."},  # leaf present: not counted
        {"image_id": 4, "text": "A clock next to a cup."},  # clock->book and cup->cake: nothing named
        {"image_id": 5, "caption": "Two boats and a notebook."},  # book is not boat's partner
    ]
    result = partner_hallucination_rate(records, objects)
    assert (result["rate"], result["n_hallucinated"], result["n_eligible"], result["n_captions"]) == (0.5, 2, 4, 5)
    assert result["per_pair"]["cup->cake"] == {"eligible": 2, "hallucinated": 1, "rate": 0.5}
    assert result["per_pair"]["boat->flag"] == {"eligible": 2, "hallucinated": 1, "rate": 0.5}
    assert result["per_pair"]["clock->book"] == {"eligible": 1, "hallucinated": 0, "rate": 0.0}
    assert result["per_pair"]["tree->leaf"]["rate"] is None
    # the same through files: COCO instances, a .jsonl of records, the synonyms file
    categories = [{"id": k + 1, "name": c.name, "supercategory": "object"} for k, c in enumerate(CLASSES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    anns = [
        {"id": i, "image_id": k, "category_id": cat_id[n]}
        for i, (k, n) in enumerate((k, n) for k, names in objects.items() for n in names)
    ]
    instances = {"images": [{"id": k} for k in objects], "annotations": anns, "categories": categories}
    (tmp_path / "inst.json").write_text(json.dumps(instances))
    (tmp_path / "caps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "syn.txt").write_text("".join(", ".join((c.name, *c.synonyms)) + "\n" for c in CLASSES))
    assert (
        partner_hallucination_rate(tmp_path / "caps.jsonl", tmp_path / "inst.json", PAIRS, tmp_path / "syn.txt")
        == result
    )
    with pytest.raises(ValueError, match="no image_id"):
        partner_hallucination_rate([{"image_id": 9, "caption": "x"}], objects)
    with pytest.raises(ValueError, match="none of the 1 captions"):
        partner_hallucination_rate(records[2:3], objects)
