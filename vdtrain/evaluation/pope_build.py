"""Build POPE question sets (random / popular / adversarial) from COCO-format instance annotations.

Follows the POPE algorithm: sample images with at least 3 object categories, ask about each image's first 3 objects
(annotation order) with "yes" and, after each, about one object the image lacks with "no". The splits differ only in
how that negative is chosen. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from vdtrain.errors import DataError, InputError

STRATEGIES = ("random", "popular", "adversarial")
NUM_POSITIVES = 3


def image_objects(instances: dict, categories: Sequence[str] | None = None) -> dict[int, list[str]]:
    """Distinct category names per image, in order of first appearance among the annotations."""
    names = {c["id"]: c["name"] for c in instances["categories"]}
    allowed = set(categories) if categories is not None else None
    objects: dict[int, list[str]] = {}
    for ann in instances["annotations"]:
        name = names[ann["category_id"]]
        if allowed is not None and name not in allowed:
            continue
        found = objects.setdefault(ann["image_id"], [])
        if name not in found:
            found.append(name)
    return objects


def question_text(name: str) -> str:
    """POPE's template, with "an" before a vowel."""
    return f"Is there {'an' if name[:1].lower() in 'aeiou' else 'a'} {name} in the image?"


def build_pope(
    instances: dict, num_images: int, seed: int, categories: Sequence[str] | None = None
) -> dict[str, list[dict]]:
    """Question sets for the three POPE strategies over the same sampled images.

    Args:
        instances (`dict`): a loaded COCO-format instances file (`images`, `annotations`, `categories`).
        num_images (`int`): images to sample among those with at least 3 object categories.
        seed (`int`): seeds the image sample and the random negatives.
        categories (`Sequence[str]`, *optional*): restrict objects to these category names.

    Returns:
        `{"random": [...], "popular": [...], "adversarial": [...]}`, each a list of
        `{"question_id", "image", "text", "label"}` records alternating "yes" and "no", question ids from 1.
        Negatives are drawn among the objects of the sampled images; "popular" takes the one in most sampled images,
        "adversarial" the one co-occurring most often (in sampled images) with the current positive; ties go to the
        object seen first, and both fall back to a random draw when nothing qualifies.
    """
    file_names = {image["id"]: image["file_name"] for image in instances.get("images", [])}
    objects = image_objects(instances, categories)
    eligible = sorted(i for i, objs in objects.items() if len(objs) >= NUM_POSITIVES)
    if num_images > len(eligible):
        raise InputError(f"asked for {num_images} images but only {len(eligible)} have {NUM_POSITIVES}+ categories")
    sampled = random.Random(seed).sample(eligible, num_images)
    missing = [i for i in sampled if i not in file_names]
    if missing:
        raise DataError(f"image ids {missing[:5]} have annotations but no entry in `images` (no file name)")

    seen: list[str] = []  # objects of the sampled images, in order of first appearance
    frequency: Counter[str] = Counter()  # number of sampled images with the object
    co_occurrence: dict[str, Counter[str]] = defaultdict(Counter)
    for image in sampled:
        present = objects[image]
        seen += [o for o in present if o not in frequency]
        frequency.update(present)
        for a in present:
            co_occurrence[a].update(b for b in present if b != a)
    fallback_pool = seen + sorted({c["name"] for c in instances["categories"]} - set(seen))
    if categories is not None:
        fallback_pool = [c for c in fallback_pool if c in set(categories)]

    splits = {}
    for strategy in STRATEGIES:
        rng = random.Random(f"{seed}:{strategy}")
        questions = []
        for image in sampled:
            present, asked = set(objects[image]), set(objects[image][:NUM_POSITIVES])
            for positive in objects[image][:NUM_POSITIVES]:
                candidates = [o for o in seen if o not in present and o not in asked]
                negative = None
                if strategy == "popular" and candidates:
                    negative = max(candidates, key=frequency.__getitem__)
                elif strategy == "adversarial":
                    related = [o for o in candidates if co_occurrence[positive][o] > 0]
                    negative = max(related, key=co_occurrence[positive].__getitem__) if related else None
                if negative is None:
                    pool = candidates or [o for o in fallback_pool if o not in present and o not in asked]
                    if not pool:
                        raise DataError(f"image {image}: no object left to ask a 'no' question about")
                    negative = rng.choice(pool)
                asked.add(negative)
                for name, label in ((positive, "yes"), (negative, "no")):
                    questions.append(
                        {
                            "question_id": len(questions) + 1,
                            "image": file_names[image],
                            "text": question_text(name),
                            "label": label,
                        }
                    )
        splits[strategy] = questions
    return splits


def load_instances(path: str | os.PathLike) -> dict:
    """A COCO-format instances file, checked to hold images, annotations and categories."""
    with open(path, encoding="utf-8") as f:
        try:
            instances = json.load(f)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} is not a COCO instances file: not JSON ({error})") from None
    if not isinstance(instances, dict) or not {"annotations", "categories", "images"} <= instances.keys():
        raise DataError(f"{path} is not a COCO instances file (needs images, annotations, categories)")
    return instances


def read_categories(path: str | os.PathLike) -> list[str]:
    """Category names from a list file: one per line, or a synonyms file (the first item of each line)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip().split(", ")[0] for line in lines if line.strip()]
