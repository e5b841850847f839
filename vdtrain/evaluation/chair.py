"""CHAIR (Rohrbach et al., 2018): object hallucination in captions, computed exactly as OPERA's `chair.py` does.

A caption's objects are the COCO synonyms it mentions after lemmatizing and merging double words; an object is
hallucinated when its category is absent from the image's ground truth (instance annotations plus the objects of the
reference captions). The reference implementation's quirks are kept on purpose (see EVALUATORS.md, project docs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .lemmatize import LEMMATIZERS, caption_lemmas
from .nltk_check import MissingNLTKDataError, add_nltk_data_path, require_nltk_data

DEFAULT_SYNONYMS = Path(__file__).with_name("data") / "coco_synonyms.txt"
_CACHE_FORMAT = 1  # bump when ground-truth extraction changes
_CHUNK = 2000  # reference captions per worker job


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


# ---------------------------------------------------------------------------------------------------- input files


def read_records(path: str | os.PathLike) -> list[dict]:
    """Read a `.jsonl` file or a `.json` list of objects (POPE's `.json` files are jsonl)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON line ({err.msg})") from None
    if not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected JSON objects, one per line or in a list")
    return records


_IMAGE_FILE_ID = re.compile(r"(\d+)\.[A-Za-z]+$")


def _image_id(value: object, where: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().isdigit():
            return int(value)
        match = _IMAGE_FILE_ID.search(value)
        if match:
            return int(match.group(1))
    raise ValueError(f"{where}: cannot read a COCO image id from {value!r}")


def load_captions(
    path: str | os.PathLike,
    image_id_key: str = "image_id",
    caption_key: str = "caption",
    questions: str | os.PathLike | None = None,
) -> list[dict]:
    """Load generated captions as `{"image_id": int, "caption": str}` records, in file order.

    Args:
        path (`str` or `os.PathLike`): `.jsonl` or `.json` list.
        image_id_key (`str`, defaults to `"image_id"`): key of the image id; records without it may instead give an
            `image` file name (`COCO_val2014_000000012345.jpg`, `000000012345.jpg`).
        caption_key (`str`, defaults to `"caption"`): key of the caption; `text` is used when it is absent.
        questions (`str` or `os.PathLike`, *optional*): a question file mapping `question_id` to `image`, for answer
            files (LLaVA's `model_vqa`) that carry neither an image id nor an image name.
    """
    image_of = {str(q["question_id"]): q.get("image") for q in read_records(questions)} if questions else {}
    captions = []
    for number, record in enumerate(read_records(path), 1):
        where = f"{path}: record {number}" + (
            f" (question_id {record['question_id']})" if "question_id" in record else ""
        )
        if image_id_key in record:
            raw = record[image_id_key]
        elif "image" in record:
            raw = record["image"]
        elif str(record.get("question_id")) in image_of:
            raw = image_of[str(record["question_id"])]
        else:
            raise ValueError(f"{where} has no {image_id_key!r} or 'image' key: pass --image-id-key or --questions")
        caption = record[caption_key] if caption_key in record else record.get("text")
        if not isinstance(caption, str):
            raise ValueError(f"{where} has no caption text under {caption_key!r} (or 'text'): pass --caption-key")
        entry = {"image_id": _image_id(raw, where), "caption": caption}
        if "question_id" in record:
            entry["question_id"] = record["question_id"]
        captions.append(entry)
    return captions


def coco_annotation_files(coco_dir: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """The COCO 2014 instances and captions files in `coco_dir`: the val2014 pair, plus the train2014 pair if there."""
    coco_dir = Path(coco_dir)
    instances, captions = [], []
    for split in ("val2014", "train2014"):
        pair = coco_dir / f"instances_{split}.json", coco_dir / f"captions_{split}.json"
        if split == "val2014" or any(p.exists() for p in pair):
            for p in pair:
                if not p.exists():
                    raise FileNotFoundError(f"{p} not found: see eval/README.md for the COCO files CHAIR needs")
            instances.append(pair[0])
            captions.append(pair[1])
    return instances, captions


def _load_coco(path: Path, kind: str) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    needed = ("annotations", "categories") if kind == "instances" else ("annotations",)
    if not isinstance(data, dict) or any(k not in data for k in needed):
        raise ValueError(f"{path} is not a COCO {kind} file (needs the keys {', '.join(needed)})")
    return data


# ---------------------------------------------------------------------------------------------------- ground truth


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def ground_truth_key(
    instances_files: Sequence[str | os.PathLike],
    captions_files: Sequence[str | os.PathLike],
    synonyms: Synonyms,
    lemmatizer: str,
) -> str:
    """Hash of everything the ground truth depends on: file contents, vocabulary, lemmatizer (and nltk's version)."""
    import nltk

    parts = {
        "format": _CACHE_FORMAT,
        "lemmatizer": lemmatizer,
        "nltk": nltk.__version__,
        "synonyms": hashlib.sha256(synonyms.text.encode()).hexdigest(),
        "instances": sorted(_digest(Path(p)) for p in instances_files),
        "captions": sorted(_digest(Path(p)) for p in captions_files),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _categories_of(job: tuple[list[str], Synonyms, str, str | None]) -> list[list[str]]:
    captions, synonyms, lemmatizer, nltk_data = job
    add_nltk_data_path(nltk_data)  # for worker processes that do not inherit the parent's search path
    return [extract_objects(c, synonyms, lemmatizer).categories for c in captions]


def build_ground_truth(
    instances_files: Sequence[str | os.PathLike],
    captions_files: Sequence[str | os.PathLike],
    synonyms: Synonyms | None = None,
    lemmatizer: str = "nltk",
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 1,
    nltk_data: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[int, set[str]]:
    """Ground-truth categories per image: instance annotations plus the objects of the reference captions.

    Lemmatizing COCO's ~600k reference captions takes minutes, so the result is cached in `cache_dir` under a hash of
    the files' content, the vocabulary and the lemmatizer: a changed file can never hit a stale cache.

    Args:
        instances_files (`Sequence[PathLike]`): COCO-format instances files (`images`, `annotations`, `categories`).
        captions_files (`Sequence[PathLike]`): COCO-format captions files.
        synonyms (`Synonyms`, *optional*): the vocabulary; defaults to COCO's. Category names must be in it.
        lemmatizer (`str`, defaults to `"nltk"`): as in `extract_objects`.
        cache_dir (`PathLike`, *optional*): where to keep the cache; no caching when `None`.
        num_workers (`int`, defaults to 1): processes lemmatizing the reference captions.
        nltk_data (`PathLike`, *optional*): an NLTK data directory to search first.
        progress (`bool`, defaults to `False`): show a progress bar while building.
    """
    synonyms = synonyms or load_synonyms()
    require_nltk_data(nltk_data)
    cache = None
    if cache_dir is not None:
        key = ground_truth_key(instances_files, captions_files, synonyms, lemmatizer)
        cache = Path(cache_dir) / f"chair-gt-{lemmatizer}-{key[:24]}.json"
        if cache.exists():
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:
                return {int(k): set(v) for k, v in cached["ground_truth"].items()}

    ground_truth: dict[int, set[str]] = {}
    for path in map(Path, instances_files):
        data = _load_coco(path, "instances")
        names = {c["id"]: c["name"] for c in data["categories"]}
        for image in data.get("images", []):
            ground_truth.setdefault(image["id"], set())
        for ann in data["annotations"]:
            name = names[ann["category_id"]]
            if name not in synonyms.to_category:
                raise ValueError(f"{path}: category {name!r} is not in the synonyms file: pass --synonyms")
            ground_truth.setdefault(ann["image_id"], set()).add(synonyms.to_category[name])
    image_ids, texts = [], []
    for path in map(Path, captions_files):
        data = _load_coco(path, "captions")
        for image in data.get("images", []):
            ground_truth.setdefault(image["id"], set())
        image_ids += [ann["image_id"] for ann in data["annotations"]]
        texts += [ann["caption"] for ann in data["annotations"]]

    from tqdm.auto import tqdm

    chunk = 2000
    jobs = [
        (texts[i : i + chunk], synonyms, lemmatizer, nltk_data and str(nltk_data)) for i in range(0, len(texts), chunk)
    ]
    bar = tqdm(total=len(texts), desc="CHAIR ground truth (cached afterwards)", unit="caption", disable=not progress)
    results = []
    if num_workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(num_workers) as pool:
            for job, result in zip(jobs, pool.map(_categories_of, jobs)):
                results.append(result)
                bar.update(len(job[0]))
    else:
        for job in jobs:
            results.append(_categories_of(job))
            bar.update(len(job[0]))
    bar.close()
    for image_id, categories in zip(image_ids, (c for result in results for c in result)):
        ground_truth.setdefault(image_id, set()).update(categories)

    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        payload = {"key": key, "ground_truth": {str(k): sorted(v) for k, v in ground_truth.items()}}
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, cache)
    return ground_truth


# ---------------------------------------------------------------------------------------------------- metric


def evaluate_chair(
    captions: Iterable[Mapping],
    ground_truth: Mapping[int, set[str]],
    synonyms: Synonyms | None = None,
    lemmatizer: str = "nltk",
) -> dict:
    """CHAIR_s, CHAIR_i and Recall (fractions) of generated captions, with OPERA-style per-caption details.

    Args:
        captions (`Iterable[Mapping]`): records with an integer `image_id` and a `caption` (see `load_captions`).
        ground_truth (`Mapping[int, set[str]]`): categories per image, from `build_ground_truth`. An image missing
            from it has no ground truth: all its mentions are hallucinations.
        synonyms (`Synonyms`, *optional*): the vocabulary the ground truth was built with; defaults to COCO's.
        lemmatizer (`str`, defaults to `"nltk"`): the lemmatizer the ground truth was built with.

    Returns:
        `dict` with `overall_metrics` (`CHAIRs`, `CHAIRi`, `Recall`, `mean_length`, `num_captions`, ...) and
        `sentences`, one entry per caption in input order.
    """
    synonyms = synonyms or load_synonyms()
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
        raise ValueError("CHAIR needs at least one caption; none were given")
    if mentions == 0:
        raise ValueError(f"CHAIR_i is undefined: none of the {n} captions mentions an object of the vocabulary")
    if gt_total == 0:
        raise ValueError(
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
    return {"overall_metrics": overall, "sentences": sentences}


def format_summary(overall: Mapping) -> str:
    """One line in the papers' units: percentages with one decimal."""
    return (
        f"CHAIRs {100 * overall['CHAIRs']:.1f}  CHAIRi {100 * overall['CHAIRi']:.1f}  "
        f"Recall {100 * overall['Recall']:.1f}  Len {overall['mean_length']:.1f}  ({overall['num_captions']} captions)"
    )


# ---------------------------------------------------------------------------------------------------- CLI


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vdtrain" / "chair"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vdtrain eval chair",
        description="CHAIR object hallucination of generated captions against COCO-format annotations "
        "(OPERA's computation; metrics printed in percent).",
    )
    p.add_argument("--captions", required=True, help="generated captions, .jsonl or .json list")
    p.add_argument("--output", required=True, help="where to write the JSON result")
    p.add_argument("--coco-dir", help="directory with instances_val2014.json + captions_val2014.json (+ train2014)")
    p.add_argument("--instances", action="append", default=[], help="a COCO-format instances file (repeatable)")
    p.add_argument("--coco-captions", action="append", default=[], help="a COCO-format captions file (repeatable)")
    p.add_argument("--image-id-key", default="image_id", help="key of the image id (else `image` file names)")
    p.add_argument("--caption-key", default="caption", help="key of the caption text (else `text`)")
    p.add_argument("--questions", help="question file mapping question_id to image, for answers without image ids")
    p.add_argument("--lemmatizer", choices=LEMMATIZERS, default="nltk", help="nltk (OPERA, default) or pattern (2018)")
    p.add_argument("--nltk-data", help="NLTK data directory to search first")
    p.add_argument("--synonyms", help="synonyms file (default: the 80 COCO categories)")
    p.add_argument("--cache-dir", default=str(_default_cache_dir()), help="ground-truth cache (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="build the ground truth without reading or writing a cache")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="processes for the ground truth")
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval chair`: evaluate a captions file and write the per-caption report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.coco_dir:
            instances, references = coco_annotation_files(args.coco_dir)
        else:
            instances, references = [], []
        instances += [Path(p) for p in args.instances]
        references += [Path(p) for p in args.coco_captions]
        if not instances and not references:
            parser.error("give --coco-dir, or --instances / --coco-captions files")
        for path in [*instances, *references, Path(args.captions)]:
            if not path.exists():
                raise FileNotFoundError(f"{path} not found")
        synonyms = load_synonyms(args.synonyms)
        captions = load_captions(args.captions, args.image_id_key, args.caption_key, args.questions)
        ground_truth = build_ground_truth(
            instances,
            references,
            synonyms,
            args.lemmatizer,
            cache_dir=None if args.no_cache else args.cache_dir,
            num_workers=args.workers,
            nltk_data=args.nltk_data,
            progress=sys.stderr.isatty(),
        )
        result = evaluate_chair(captions, ground_truth, synonyms, args.lemmatizer)
    except (MissingNLTKDataError, ValueError, FileNotFoundError) as err:
        print(f"vdtrain eval chair: error: {err}", file=sys.stderr)
        return 1
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, output)
    unknown = result["overall_metrics"]["num_unknown_images"]
    if unknown:
        print(f"warning: {unknown} image ids are not in the annotations (all their mentions count as hallucinated)")
    print(f"{format_summary(result['overall_metrics'])} -> {output}")
    return 0
