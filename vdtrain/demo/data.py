"""Synthetic co-occurrence-biased image/caption data for `vdtrain demo`, written in LLaVA, COCO and POPE formats.

Object A of each partner pair `(A, B)` comes with B in `p_pair` of the images, and a share `p_noisy` of training
captions of images with A but without B still name B, as real caption datasets do. A language prior learned from
this data says "B" whenever it sees A; the `counterfactual` split (every image has an A without its B) measures it.

Files under `output_dir`: `images/{split}_{image_id:012d}.png`; `train.json` (LLaVA conversations: a caption turn, or
two one-word yes/no turns); `annotations/{instances,captions}_{train,test,counterfactual}.json` (COCO; reference
captions are clean); `synonyms.txt` (coco_synonyms.txt format); `pope/{split}_pope_{random,popular,adversarial}.jsonl`
for `test` and `counterfactual` (POPE's algorithm over every image, up to 3 positives each, except that adversarial
co-occurrence is counted on the train images, the prior the model learned); `questions/{split}_captions.jsonl`
(`question_id`, `image`, `image_id`, `text`); `meta.json` (config, per-image objects, statistics).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vdtrain.demo.shapes import (
    CLASS_BY_NAME,
    CLASSES,
    article,
    make_caption,
    mentioned_categories,
    pluralize,
    read_synonyms,
    render_scene,
)
from vdtrain.io import atomic_path, atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json, read_records

PAIRS: tuple[tuple[str, str], ...] = (("cup", "cake"), ("boat", "flag"), ("tree", "leaf"), ("clock", "book"))
SPLITS = ("train", "test", "counterfactual")
EVAL_SPLITS = ("test", "counterfactual")
POPE_VARIANTS = ("random", "popular", "adversarial")
CAPTION_PROMPT = "Describe this image."
TRAIN_CAPTION_PROMPTS = (CAPTION_PROMPT, CAPTION_PROMPT, "What is in this picture?", "Describe the image briefly.")


@dataclass
class DemoConfig:
    """Size and bias knobs of the synthetic dataset; the same config and seed give byte-identical files."""

    seed: int = 0
    image_size: int = 32
    n_train: int = 2000
    n_test: int = 300
    n_counterfactual: int = 300
    p_pair: float = 0.8  # P(B in image | A in image) in train and test
    p_noisy: float = 0.25  # share of train captions of A-without-B images that still name B
    frac_qa: float = 0.3  # share of train conversations that are yes/no questions instead of captions
    max_objects: int = 4
    p_multi: float = 0.2  # chance a category gets a second instance (while under max_objects)
    p_small: float = 0.15
    p_synonym: float = 0.2
    p_adjective: float = 0.35
    supersample: int = 4
    pairs: tuple[tuple[str, str], ...] = PAIRS
    a_weight: float = 3.0  # how much likelier an A class is drawn than another class (more A-only images)


@dataclass
class DemoPaths:
    """Every file `build_demo_dataset` writes; per-split dicts are keyed by split (and POPE variant)."""

    root: Path
    image_folder: Path
    train_json: Path
    synonyms: Path
    meta: Path
    instances: dict[str, Path] = field(default_factory=dict)
    captions: dict[str, Path] = field(default_factory=dict)
    pope: dict[str, dict[str, Path]] = field(default_factory=dict)
    caption_questions: dict[str, Path] = field(default_factory=dict)


def _sample_categories(
    rng: np.random.Generator, n_target: int, cfg: DemoConfig, chosen: list[str], excluded: set[str]
) -> list[str]:
    """Draw distinct categories so that P(B | A) is exactly p_pair: only A's coin ever adds or bans its B."""
    partner = dict(cfg.pairs)
    owner = {b: a for a, b in cfg.pairs}
    names = [c.name for c in CLASSES]
    weight = np.array([cfg.a_weight if n in partner else 1.0 for n in names])
    for name in rng.choice(names, size=len(names), replace=False, p=weight / weight.sum()):
        if len(chosen) >= n_target:
            break
        if name in chosen or name in excluded:
            continue
        if name in owner:  # a B drawn on its own: its A may not join later, or B would not be A's coin alone
            chosen.append(name)
            excluded.add(owner[name])
        elif name in partner:
            if n_target - len(chosen) < 2:  # an A needs room for its partner whatever the coin says
                continue
            if rng.random() < cfg.p_pair:
                chosen += [name, partner[name]]
            else:
                chosen.append(name)
                excluded.add(partner[name])
        else:
            chosen.append(name)
    return chosen


def _absent_partners(present: Iterable[str], pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    present = set(present)
    return [(a, b) for a, b in pairs if a in present and b not in present]


def _make_image(cfg: DemoConfig, split: str, index: int, image_folder: Path) -> dict[str, Any]:
    """Sample, draw and save one image; return its record (objects, reference captions, train conversation)."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index])
    image_id = (SPLITS.index(split) + 1) * 1_000_000 + index + 1
    n_target = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
    n_target = min(n_target, cfg.max_objects)
    built_around = None
    if split == "counterfactual":
        built_around = cfg.pairs[index % len(cfg.pairs)]
        cats = _sample_categories(rng, n_target, cfg, [built_around[0]], {built_around[1]})
    else:
        cats = _sample_categories(rng, n_target, cfg, [], set())
    counts = dict.fromkeys(cats, 1)
    for name in cats:
        if sum(counts.values()) < cfg.max_objects and rng.random() < cfg.p_multi:
            counts[name] = 2
    instances = [n for n in cats for _ in range(counts[n])]
    rng.shuffle(instances)
    image, drawn = render_scene(instances, rng, cfg.image_size, cfg.supersample, cfg.p_small)
    file_name = f"{split}_{image_id:012d}.png"
    with atomic_path(image_folder / file_name) as tmp:
        image.save(tmp)
    record: dict[str, Any] = {
        "image_id": image_id,
        "file_name": file_name,
        "objects": [{"name": o.name, "bbox": list(o.bbox), "area": o.area, "visible": o.visible} for o in drawn],
        "built_around": list(built_around) if built_around else None,
        "references": [make_caption(counts, rng, cfg.p_synonym, cfg.p_adjective) for _ in range(2)],
    }
    if split == "train":
        record.update(_train_conversation(record, counts, rng, cfg))
    return record


def _train_conversation(record: dict[str, Any], counts: dict[str, int], rng: np.random.Generator, cfg: DemoConfig):
    """A caption turn (noisy with p_noisy when a partner is absent) or two yes/no turns, in LLaVA format."""
    absent = _absent_partners(counts, cfg.pairs)
    if rng.random() < cfg.frac_qa:
        pos = str(rng.choice(sorted(counts)))
        if absent and rng.random() < 0.5:
            neg = absent[int(rng.integers(len(absent)))][1]
        else:
            neg = str(rng.choice([c.name for c in CLASSES if c.name not in counts]))
        qa = [(pos, "Yes"), (neg, "No")] if rng.random() < 0.5 else [(neg, "No"), (pos, "Yes")]
        turns = []
        for k, (obj, answer) in enumerate(qa):
            question = f"Is there {article(obj)} {obj} in the image?"
            turns += [
                {"from": "human", "value": ("<image>\n" if k == 0 else "") + question},
                {"from": "gpt", "value": answer},
            ]
        return {"kind": "qa", "noisy": False, "conversations": turns}
    noisy = bool(absent) and rng.random() < cfg.p_noisy
    caption = record["references"][0]
    if noisy:
        caption = make_caption(
            {**counts, absent[int(rng.integers(len(absent)))][1]: 1}, rng, cfg.p_synonym, cfg.p_adjective
        )
    prompt = str(rng.choice(TRAIN_CAPTION_PROMPTS))
    turns = [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": caption}]
    return {"kind": "caption", "noisy": noisy, "conversations": turns}


def _coco(records: list[dict[str, Any]], cfg: DemoConfig) -> tuple[dict, dict]:
    """COCO `instances` and `captions` dicts for one split (reference captions are clean: no noisy mentions)."""
    cat_id = {c.name: k + 1 for k, c in enumerate(CLASSES)}
    images = [
        {"id": r["image_id"], "file_name": r["file_name"], "width": cfg.image_size, "height": cfg.image_size}
        for r in records
    ]
    anns, caps = [], []
    for r in records:
        for o in r["objects"]:
            ann = {"id": len(anns) + 1, "image_id": r["image_id"], "category_id": cat_id[o["name"]]}
            anns.append({**ann, "bbox": o["bbox"], "area": o["area"], "iscrowd": 0})
        for text in r["references"]:
            caps.append({"image_id": r["image_id"], "id": len(caps) + 1, "caption": text})
    cats = [{"id": cat_id[c.name], "name": c.name, "supercategory": c.supercategory} for c in CLASSES]
    return {"images": images, "annotations": anns, "categories": cats}, {"images": images, "annotations": caps}


def _pope(records: list[dict[str, Any]], variant: str, cooccur: Counter, rng: np.random.Generator) -> list[dict]:
    """POPE questions: up to 3 present objects per image, each followed by an absent one chosen by `variant`."""
    seen = [c.name for c in CLASSES if any(o["name"] == c.name for r in records for o in r["objects"])]
    popularity = Counter(n for r in records for n in {o["name"] for o in r["objects"]})
    questions: list[dict] = []
    for r in records:
        present = list(dict.fromkeys(o["name"] for o in r["objects"]))
        asked = set(present)
        for obj in present[:3]:
            pool = [n for n in seen if n not in asked]
            if not pool:
                break
            if variant == "popular":
                key = {n: popularity[n] for n in pool}
            elif variant == "adversarial":
                key = {n: cooccur[obj, n] for n in pool}
            else:
                key = {}
            best = max(pool, key=lambda n: key.get(n, 0)) if any(key.values()) else str(rng.choice(pool))
            asked.add(best)
            for name, label in ((obj, "yes"), (best, "no")):
                text = f"Is there {article(name)} {name} in the image?"
                questions.append(
                    {"question_id": len(questions) + 1, "image": r["file_name"], "text": text, "label": label}
                )
    return questions


def build_demo_dataset(output_dir: str | Path, config: DemoConfig | None = None) -> DemoPaths:
    """Draw the train / test / counterfactual images and write every file the demo trains and evaluates on.

    Args:
        output_dir (`str` or `Path`): folder to write into (created; files there are overwritten).
        config (`DemoConfig`, *optional*): sizes, seed and bias strengths; defaults to `DemoConfig()`.
    """
    cfg = config or DemoConfig()
    unknown = [n for pair in cfg.pairs for n in pair if n not in CLASS_BY_NAME]
    if unknown or not all(0 <= p <= 1 for p in (cfg.p_pair, cfg.p_noisy, cfg.frac_qa)) or cfg.max_objects < 1:
        raise ValueError(f"bad DemoConfig: unknown pair classes {unknown} or a probability outside [0, 1]: {cfg}")
    root = Path(output_dir)
    paths = DemoPaths(root, root / "images", root / "train.json", root / "synonyms.txt", root / "meta.json")
    for sub in (paths.image_folder, root / "annotations", root / "pope", root / "questions"):
        sub.mkdir(parents=True, exist_ok=True)
    sizes = {"train": cfg.n_train, "test": cfg.n_test, "counterfactual": cfg.n_counterfactual}
    records = {s: [_make_image(cfg, s, i, paths.image_folder) for i in range(n)] for s, n in sizes.items()}
    convs = [
        {"id": f"train-{i:06d}", "image": r["file_name"], "conversations": r["conversations"]}
        for i, r in enumerate(records["train"])
    ]
    atomic_write_json(paths.train_json, convs, indent=1)
    cooccur: Counter = Counter()  # (a, b) -> number of train images holding both: the prior POPE-adversarial probes
    for r in records["train"]:
        names = {o["name"] for o in r["objects"]}
        cooccur.update((a, b) for a in names for b in names if a != b)
    for split in SPLITS:
        instances, captions = _coco(records[split], cfg)
        paths.instances[split] = root / "annotations" / f"instances_{split}.json"
        paths.captions[split] = root / "annotations" / f"captions_{split}.json"
        atomic_write_json(paths.instances[split], instances, indent=1)
        atomic_write_json(paths.captions[split], captions, indent=1)
    for k, split in enumerate(EVAL_SPLITS):
        paths.pope[split] = {}
        for variant in POPE_VARIANTS:
            rng = np.random.default_rng([cfg.seed, 100 + k, POPE_VARIANTS.index(variant)])
            paths.pope[split][variant] = root / "pope" / f"{split}_pope_{variant}.jsonl"
            atomic_write_jsonl(paths.pope[split][variant], _pope(records[split], variant, cooccur, rng))
        paths.caption_questions[split] = root / "questions" / f"{split}_captions.jsonl"
        rows = (
            {"question_id": i + 1, "image": r["file_name"], "image_id": r["image_id"], "text": CAPTION_PROMPT}
            for i, r in enumerate(records[split])
        )
        atomic_write_jsonl(paths.caption_questions[split], rows)
    atomic_write_text(paths.synonyms, "".join(", ".join((c.name, *c.synonyms)) + "\n" for c in CLASSES))
    meta = {
        "config": asdict(cfg),
        "pairs": [list(p) for p in cfg.pairs],
        "stats": dataset_stats(records, cfg.pairs),
        "images": {
            s: [{k: r[k] for k in r if k not in ("conversations", "references")} for r in rs]
            for s, rs in records.items()
        },
    }
    atomic_write_json(paths.meta, meta, indent=1)
    return paths


def dataset_stats(records: Mapping[str, list[dict[str, Any]]], pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Co-occurrence, noise and caption-length statistics, to check the bias the demo relies on is there."""
    stats: dict[str, Any] = {}
    for split, rs in records.items():
        present = [{o["name"] for o in r["objects"]} for r in rs]
        with_a = {f"{a}->{b}": [b in p for p in present if a in p] for a, b in pairs}
        stats[split] = {
            "images": len(rs),
            "objects_per_image": round(float(np.mean([len(r["objects"]) for r in rs])), 3) if rs else 0.0,
            "p_partner_given_a": {k: round(float(np.mean(v)), 3) if v else None for k, v in with_a.items()},
            "images_with_absent_partner": sum(bool(_absent_partners(p, pairs)) for p in present),
        }
    train = records.get("train", [])
    eligible = [
        r for r in train if r.get("kind") == "caption" and _absent_partners((o["name"] for o in r["objects"]), pairs)
    ]
    captions = [r["conversations"][1]["value"] for r in train if r.get("kind") == "caption"]
    stats["train"].update(
        qa_conversations=sum(r.get("kind") == "qa" for r in train),
        caption_conversations=len(captions),
        noisy_captions=sum(r["noisy"] for r in eligible),
        noisy_fraction_of_eligible=round(sum(r["noisy"] for r in eligible) / max(len(eligible), 1), 3),
        caption_words_min_mean_max=[int(min(lens)), round(float(np.mean(lens)), 2), int(max(lens))]
        if (lens := [len(c.split()) for c in captions])
        else None,
    )
    return stats


def _load_records(records: str | Path | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(records, (str, Path)):
        return read_records(records)
    return list(records)


def _load_objects(objects: str | Path | Mapping[str, Any] | Mapping[int, Iterable[str]]) -> dict[int, set[str]]:
    if isinstance(objects, (str, Path)):
        objects = read_json(objects)
    if "annotations" in objects and "categories" in objects:  # COCO instances
        names = {c["id"]: c["name"] for c in objects["categories"]}
        out: dict[int, set[str]] = {int(im["id"]): set() for im in objects.get("images", [])}
        for ann in objects["annotations"]:
            out.setdefault(int(ann["image_id"]), set()).add(names[ann["category_id"]])
        return out
    return {int(k): set(v) for k, v in objects.items()}


def partner_hallucination_rate(
    records: str | Path | Iterable[Mapping[str, Any]],
    objects: str | Path | Mapping[str, Any] | Mapping[int, Iterable[str]],
    pairs: Sequence[tuple[str, str]] = PAIRS,
    synonyms: str | Path | Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Share of captions that name the absent partner B of a present A: the co-occurrence prior the demo targets.

    Only captions whose image holds some A without its B count (all of the counterfactual split); a caption is a
    hallucination if it names any such absent B.

    Args:
        records (path or iterable of dicts): generated captions, `.json` list or `.jsonl`, keys `image_id` and
            `caption` (or `text`).
        objects (path, COCO instances dict, or `{image_id: names}`): the objects in each image.
        pairs (sequence of `(A, B)`, defaults to `PAIRS`): the partner pairs.
        synonyms (path or `{category: words}`, *optional*): words naming each category; defaults to the demo classes.
    """
    if synonyms is None:
        synonyms = {c.name: [c.name, *c.synonyms] for c in CLASSES}
    elif isinstance(synonyms, (str, Path)):
        synonyms = read_synonyms(synonyms)
    word_map = {}
    for cat, words in synonyms.items():
        for w in (cat, *words):
            plural = CLASS_BY_NAME[w].plural if w in CLASS_BY_NAME else pluralize(w)
            word_map[w] = word_map[plural] = cat
    present = _load_objects(objects)
    per_pair = {f"{a}->{b}": {"eligible": 0, "hallucinated": 0} for a, b in pairs}
    n_captions = n_eligible = n_hallucinated = 0
    for rec in _load_records(records):
        n_captions += 1
        if rec.get("image_id") not in present and int(rec.get("image_id", -1)) not in present:
            raise ValueError(
                f"caption record {dict(rec)} has no image_id found in the objects ({len(present)} images)"
            )
        absent = _absent_partners(present[int(rec["image_id"])], pairs)
        if not absent:
            continue
        mentioned = mentioned_categories(str(rec.get("caption", rec.get("text", ""))), word_map)
        n_eligible += 1
        n_hallucinated += any(b in mentioned for _, b in absent)
        for a, b in absent:
            per_pair[f"{a}->{b}"]["eligible"] += 1
            per_pair[f"{a}->{b}"]["hallucinated"] += b in mentioned
    if not n_eligible:
        raise ValueError(f"none of the {n_captions} captions shows an A without its partner B (pairs {list(pairs)})")
    for counts in per_pair.values():
        counts["rate"] = counts["hallucinated"] / counts["eligible"] if counts["eligible"] else None
    return {
        "rate": n_hallucinated / n_eligible,
        "n_hallucinated": n_hallucinated,
        "n_eligible": n_eligible,
        "n_captions": n_captions,
        "per_pair": per_pair,
    }
