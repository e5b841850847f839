"""CHAIR's ground truth: the categories of each COCO image, built from the annotation files once and cached."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from vdtrain.errors import DataError
from vdtrain.io import atomic_write_json

from .chair import Synonyms, extract_objects, load_synonyms
from .nltk_check import add_nltk_data_path, require_nltk_data

_CACHE_FORMAT = 1  # bump when ground-truth extraction changes
_CHUNK = 2000  # reference captions per worker job


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
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise DataError(f"{path} is not a COCO {kind} file: not JSON ({error})") from None
    needed = ("annotations", "categories") if kind == "instances" else ("annotations",)
    if not isinstance(data, dict) or any(k not in data for k in needed):
        raise DataError(f"{path} is not a COCO {kind} file (needs the keys {', '.join(needed)})")
    return data


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
    require_nltk_data(nltk_data, lemmatizer)
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
            if ann.get("category_id") not in names:
                raise DataError(
                    f"{path}: annotation {ann.get('id')} has category_id {ann.get('category_id')!r}, "
                    "which is not in its categories"
                )
            name = names[ann["category_id"]]
            if name not in synonyms.to_category:
                raise DataError(f"{path}: category {name!r} is not in the synonyms file: pass --synonyms")
            ground_truth.setdefault(ann["image_id"], set()).add(synonyms.to_category[name])
    image_ids, texts = [], []
    for path in map(Path, captions_files):
        data = _load_coco(path, "captions")
        for image in data.get("images", []):
            ground_truth.setdefault(image["id"], set())
        image_ids += [ann["image_id"] for ann in data["annotations"]]
        texts += [ann["caption"] for ann in data["annotations"]]

    from tqdm.auto import tqdm

    chunk = _CHUNK
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
        payload = {"key": key, "ground_truth": {str(k): sorted(v) for k, v in ground_truth.items()}}
        atomic_write_json(cache, payload, indent=None)
    return ground_truth
