"""CHAIR (Rohrbach et al., 2018): object hallucination in captions, computed exactly as OPERA's `chair.py` does.

A caption's objects are the COCO synonyms it mentions after lemmatizing and merging double words; an object is
hallucinated when its category is absent from the image's ground truth (instance annotations plus the objects of the
reference captions). The reference implementation's quirks are kept on purpose (see docs/evaluators.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vdtrain.errors import DataError, InputError

from .lemmatize import caption_lemmas

DEFAULT_SYNONYMS = Path(__file__).with_name("data") / "coco_synonyms.txt"


def _double_words() -> dict[str, str]:
    merged = (
        "motor bike, motor cycle, air plane, traffic light, street light, traffic signal, stop light, fire hydrant, "
        "stop sign, parking meter, suit case, sports ball, baseball bat, baseball glove, tennis racket, wine glass, "
        "hot dog, cell phone, mobile phone, teddy bear, hair drier, potted plant, bow tie, laptop computer, "
        "stove top oven, home plate, train track"
    ).split(", ")
    table = {pair: pair for pair in merged}
    for animal in "bird cat dog horse sheep cow elephant bear zebra giraffe animal cub".split():
        table[f"baby {animal}"] = table[f"adult {animal}"] = animal
    table.update({"passenger jet": "jet", "passenger train": "train"})
    table.update({"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"})
    return table


DOUBLE_WORDS = _double_words()


@dataclass(frozen=True, eq=False)
class Synonyms:
    """The object vocabulary: each synonym item maps to its category, the first item of its line."""

    to_category: dict[str, str]
    categories: tuple[str, ...]
    text: str  # the file's content, part of the ground-truth cache key

    @classmethod
    def from_text(cls, text: str) -> Synonyms:
        to_category: dict[str, str] = {}
        categories = []
        for line in text.splitlines():
            # Parsed like the reference: " motor bike" keeps its space and "iPhone" its capital, so neither matches.
            items = line.strip().split(", ")
            if items == [""]:
                continue
            categories.append(items[0])
            for item in items:
                to_category[item] = items[0]
        return cls(to_category, tuple(categories), text)


def load_synonyms(path: str | os.PathLike | None = None) -> Synonyms:
    """Read a synonyms file (one category per line, then its synonyms, separated by ", "); default: COCO's 80."""
    return Synonyms.from_text(Path(path or DEFAULT_SYNONYMS).read_text(encoding="utf-8"))


@dataclass
class CaptionObjects:
    """What CHAIR sees in one caption."""

    words: list[str]  # the synonym items mentioned, in order, repeats kept
    categories: list[str]  # their categories ("node words")
    tokens: list[str]  # all lemmas after the double-word merge


def extract_objects(caption: str, synonyms: Synonyms, lemmatizer: str = "nltk") -> CaptionObjects:
    """Find the objects a caption mentions: lemmatize, merge double words left to right, map synonyms to categories.

    Args:
        caption (`str`): the caption text.
        synonyms (`Synonyms`): the vocabulary, from `load_synonyms`.
        lemmatizer (`str`, defaults to `"nltk"`): `"nltk"` (OPERA) or `"pattern"` (the 2018 original).
    """
    lemmas = caption_lemmas(caption, lemmatizer)
    tokens = []
    i = 0
    while i < len(lemmas):
        pair = " ".join(lemmas[i : i + 2])
        if pair in DOUBLE_WORDS:
            tokens.append(DOUBLE_WORDS[pair])
            i += 2
        else:
            tokens.append(lemmas[i])
            i += 1
    candidates = tokens
    if "toilet" in tokens and "seat" in tokens:  # "the seat of the toilet" is not a chair
        candidates = [t for t in tokens if t != "seat"]
    words = [t for t in candidates if t in synonyms.to_category]
    return CaptionObjects(words, [synonyms.to_category[w] for w in words], tokens)


# ---------------------------------------------------------------------------------------------------- metric


def evaluate_chair(
    captions: Iterable[Mapping],
    ground_truth: Mapping[int, set[str]],
    synonyms: Synonyms | None = None,
    lemmatizer: str = "nltk",
    unknown_ids: str = "error",
) -> dict:
    """CHAIR_s, CHAIR_i and Recall (fractions) of generated captions, with OPERA-style per-caption details.

    Args:
        captions (`Iterable[Mapping]`): records with an integer `image_id` and a `caption` (see `load_captions`).
        ground_truth (`Mapping[int, set[str]]`): categories per image, from `build_ground_truth`.
        synonyms (`Synonyms`, *optional*): the vocabulary the ground truth was built with; defaults to COCO's.
        lemmatizer (`str`, defaults to `"nltk"`): the lemmatizer the ground truth was built with.
        unknown_ids (`str`, defaults to `"error"`): captions of images that are not in `ground_truth` (wrong ids, or
            another split): `"error"` refuses them, listing the ids (as the original CHAIR code fails on them);
            `"skip"` leaves them out and lists them in `overall_metrics["skipped_unknown_ids"]`; `"count"` scores
            them against an empty ground truth (every mention a hallucination).

    Returns:
        `dict` with `overall_metrics` (`CHAIRs`, `CHAIRi`, `Recall`, `mean_length`, `num_captions`, ...) and
        `sentences`, one entry per caption in input order.
    """
    synonyms = synonyms or load_synonyms()
    captions = list(captions)
    if unknown_ids not in ("error", "skip", "count"):
        raise ValueError(f"unknown_ids must be 'error', 'skip' or 'count', got {unknown_ids!r}")
    unknown = sorted({record["image_id"] for record in captions if record["image_id"] not in ground_truth}, key=str)
    if unknown and unknown_ids == "error":
        shown = ", ".join(map(str, unknown[:10])) + (f", ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
        raise InputError(
            f"{len(unknown)} image id(s) of the captions are not in the annotations: {shown}. Are these the ids of "
            "the annotated split? Pass --skip-unknown-ids to leave those captions out (recorded in the output)."
        )
    if unknown_ids == "skip":
        skipped = set(unknown)
        captions = [record for record in captions if record["image_id"] not in skipped]
        if not captions and skipped:
            raise InputError(
                f"none of the captions' {len(skipped)} image id(s) is in the annotations, so every caption was "
                "skipped: are these the ids of the annotated split?"
            )
    sentences = []
    hallucinated_captions = mentions = hallucinations = recalled = gt_total = words = 0
    unknown_images = set()
    for record in captions:
        image_id, caption = record["image_id"], record["caption"]
        objects = extract_objects(caption, synonyms, lemmatizer)
        gt = ground_truth.get(image_id)
        if gt is None:
            unknown_images.add(image_id)
            gt = set()
        pairs = list(zip(objects.words, objects.categories))
        hallucinated = [[w, c] for w, c in pairs if c not in gt]
        found = set(objects.categories) & gt
        hallucinated_captions += bool(hallucinated)
        mentions += len(pairs)
        hallucinations += len(hallucinated)
        recalled += len(found)
        gt_total += len(gt)
        words += len(caption.split())
        entry = {"image_id": image_id, "caption": caption}
        if "question_id" in record:
            entry["question_id"] = record["question_id"]
        entry |= {
            "mscoco_generated_words": objects.categories,
            "mscoco_hallucinated_words": hallucinated,
            "mscoco_non_hallucinated_words": [[w, c] for w, c in pairs if c in gt],
            "mscoco_gt_words": sorted(gt),
            "words": objects.tokens,
            "metrics": {
                "CHAIRs": int(bool(hallucinated)),
                "CHAIRi": len(hallucinated) / len(pairs) if pairs else 0.0,
                "Recall": len(found) / len(gt) if gt else 0.0,
            },
        }
        sentences.append(entry)
    n = len(sentences)
    if n == 0:
        raise DataError("CHAIR needs at least one caption; none were given")
    if mentions == 0:
        raise DataError(f"CHAIR_i is undefined: none of the {n} captions mentions an object of the vocabulary")
    if gt_total == 0:
        raise DataError(
            f"Recall is undefined: none of the {n} captions' images has ground-truth objects "
            f"(e.g. image id {sentences[0]['image_id']}): do the ids match the annotation files?"
        )
    overall = {
        "CHAIRs": hallucinated_captions / n,
        "CHAIRi": hallucinations / mentions,
        "Recall": recalled / gt_total,
        "mean_length": words / n,
        "num_captions": n,
        "num_mentions": mentions,
        "num_hallucinated_mentions": hallucinations,
        "num_unknown_images": len(unknown_images),
        "lemmatizer": lemmatizer,
    }
    if unknown_ids == "skip":
        overall["skipped_unknown_ids"] = unknown
    return {"overall_metrics": overall, "sentences": sentences}


def format_summary(overall: Mapping) -> str:
    """One line in the papers' units: percentages with one decimal."""
    return (
        f"CHAIRs {100 * overall['CHAIRs']:.1f}  CHAIRi {100 * overall['CHAIRi']:.1f}  "
        f"Recall {100 * overall['Recall']:.1f}  Len {overall['mean_length']:.1f}  ({overall['num_captions']} captions)"
    )
