"""Selection: remove the lowest, highest or a random fraction of the scored samples (thesis 5.4.5, Table 5.3)."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

from vdtrain.errors import InputError
from vdtrain.filtering.coverage import COVERAGE_STRATEGIES, SELECTED_FILE, CoverageContext, write_selected
from vdtrain.filtering.runs import ERRORS_FILE, RUN_FILE, file_sha256
from vdtrain.io import read_json, read_jsonl, read_records, records_format, write_records

STRATEGIES = ("lowest", "highest", "random", "balanced", *COVERAGE_STRATEGIES)
# balanced: the scores are BMMAL dominance ρ (`vdtrain select active --dominance`, thesis eq. 3.5); the most
# modality-dominated samples go first


def removal_count(num_scored: int, fraction: float) -> int:
    """How many of `num_scored` samples a `fraction` removes (rounded half up)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return min(num_scored, math.floor(fraction * num_scored + 0.5))


def select_removed(scores: list[dict[str, Any]], strategy: str, fraction: float, seed: int = 0) -> list[int]:
    """Indices of the samples to remove, sorted: the `fraction` with the lowest or highest `score`, a random one,
    or (`balanced`) the highest dominance `rho`.

    Ties in score are broken by index (the lower index goes first); `random` is seeded by `seed`.
    """
    count = removal_count(len(scores), fraction)
    if strategy == "lowest":
        order = sorted(scores, key=lambda row: (row["score"], row["index"]))
    elif strategy == "highest":
        order = sorted(scores, key=lambda row: (-row["score"], row["index"]))
    elif strategy == "balanced":
        if scores and "rho" not in scores[0]:
            raise ValueError(
                "--strategy balanced reads dominance scores (rows with 'rho'): pass the dominance.jsonl that "
                "`vdtrain select active --dominance DATA` writes, not visual-dependence scores"
            )
        order = sorted(scores, key=lambda row: (-row["rho"], row["index"]))
    elif strategy == "random":
        order = random.Random(seed).sample(sorted(scores, key=lambda row: row["index"]), len(scores))
    else:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    return sorted(int(row["index"]) for row in order[:count])


def check_fingerprint(scores_path: Path, data: Path, force: bool = False) -> None:
    """Refuse scores whose `run.json` is missing or records another data file's SHA-256, unless `force`: ids can
    match across datasets (`0`, `1`, ...), fingerprints do not."""
    run_file = scores_path.parent / RUN_FILE
    recorded = None
    if run_file.is_file():
        try:
            recorded = read_json(run_file).get("data_sha256")
        except (ValueError, AttributeError) as error:
            raise InputError(f"{run_file}: unreadable ({error}); pass --force to select without it") from None
    if force:
        return
    if recorded is None:
        raise InputError(
            f"{scores_path}: no {RUN_FILE} with the scored data file's fingerprint beside it, so nothing shows these "
            f"scores belong to {data}. Keep scores.jsonl in its `vdtrain filter score` output directory, or pass "
            "--force if you know they do."
        )
    actual = file_sha256(data)
    if recorded != actual:
        raise InputError(
            f"{scores_path} scores another data file than {data} ({run_file} records sha256 {recorded[:12]}..., "
            f"{data} has {actual[:12]}...); pass the file that was scored (or --force)"
        )


def _check_scores_match(
    scores: list[dict[str, Any]], errors: list[dict[str, Any]], records: list[Any], scores_path: Path, data: Path
) -> None:
    for row in scores:
        index = int(row["index"])
        record = records[index] if index < len(records) else None
        expected = str(record.get("id", index)) if isinstance(record, dict) else str(index)
        if record is None or str(row["id"]) != expected:
            found = "no such index" if record is None else f"id there is {expected!r}"
            raise ValueError(
                f"{scores_path}: sample {row['id']!r} at index {index} does not match {data} ({found}); "
                "pass the file that was scored"
            )
    missing = set(range(len(records))) - {int(r["index"]) for r in scores} - {int(r["index"]) for r in errors}
    if missing:
        raise ValueError(
            f"{scores_path} covers {len(records) - len(missing)} of the {len(records)} samples of {data}: scoring "
            "is unfinished. Rerun `vdtrain filter score` with the same --output-dir to finish it."
        )


def select_dataset(
    scores: str | os.PathLike,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    strategy: str,
    fraction: float,
    seed: int = 0,
    removed: str | os.PathLike | None = None,
    force: bool = False,
    embeddings: str | os.PathLike | None = None,
    clusters: int | None = None,
    coverage_method: str = "kcenter",
    dedup_threshold: float = 0.95,
) -> dict[str, Any]:
    """Write `data` without the removed samples to `output` (original order and format) and the removed ones.

    Samples that failed scoring (listed in `errors.jsonl` beside `scores`) are left out of both files; they would
    fail training too. Updates `summary.json` and `score_hist.png` beside `scores` with the cut.

    Args:
        scores (`str`): `scores.jsonl` of a finished `score_dataset` run (`dominance.jsonl` for `balanced`).
        data (`str`): the data file that was scored (JSON list or JSONL).
        output (`str`): the filtered data file, written in the input's format.
        strategy (`str`): `"lowest"`, `"highest"`, `"random"`, `"balanced"` (dominance scores) or a coverage strategy
            (`"stratified-lowest"`, `"stratified-highest"`, `"coverage"`, `"dedup"`).
        fraction (`float`): share of the scored samples to remove, e.g. 0.1.
        seed (`int`, defaults to 0): seed of the `random` strategy.
        removed (`str`, *optional*): where the removed records go (JSON list); defaults to `removed.json` beside
            `output`.
        force (`bool`, defaults to `False`): select even without a matching data fingerprint in `run.json`.
        embeddings (`str`, *optional*): `(N, D)` .npy in record order for the coverage strategies and metrics;
            defaults to `embeddings.npy` beside `scores` when there is one (`vdtrain filter score --save-embeddings`).
        clusters (`int`, *optional*): k-means clusters of the embeddings (default `round(sqrt(N / 2))`).
        coverage_method (`str`, defaults to `"kcenter"`): `coverage` keeps by `"kcenter"` or score-weighted
            `"kmeans++"`.
        dedup_threshold (`float`, defaults to 0.95): cosine similarity at which `dedup` calls two samples duplicates.

    Also writes `selected_indices.json` beside `output` (kept and removed indices, seed, embedding fingerprint) and,
    with embeddings, coverage metrics under `summary["selection"]["coverage"]`.

    Returns:
        The summary dict.
    """
    from vdtrain.filtering.report import write_report

    scores_path, data, output = Path(scores), Path(data), Path(output)
    removed_path = Path(removed) if removed else output.with_name("removed.json")
    if not scores_path.is_file():
        raise FileNotFoundError(f"scores file {scores_path} does not exist; run `vdtrain filter score` first")
    if output.resolve() == data.resolve() or removed_path.resolve() in (data.resolve(), output.resolve()):
        raise ValueError(f"--output {output} / removed {removed_path} would overwrite {data}; choose other paths")
    check_fingerprint(scores_path, data, force)
    rows = read_jsonl(scores_path, skip_bad_lines=True)
    errors = read_jsonl(scores_path.parent / ERRORS_FILE, missing_ok=True, skip_bad_lines=True)
    records, fmt = read_records(data), records_format(data)
    _check_scores_match(rows, errors, records, scores_path, data)
    context = CoverageContext(scores_path, rows, embeddings=embeddings, clusters=clusters, seed=seed)
    if strategy in COVERAGE_STRATEGIES:
        count = removal_count(len(rows), fraction)
        removed_indices = context.removed(strategy, count, method=coverage_method, threshold=dedup_threshold)
    else:
        removed_indices = select_removed(rows, strategy, fraction, seed)
    removed_set = set(removed_indices)
    kept_indices = sorted(int(row["index"]) for row in rows if int(row["index"]) not in removed_set)
    write_records(output, [records[index] for index in kept_indices], fmt)
    write_records(removed_path, [records[index] for index in removed_indices], "json")
    selection = {
        "strategy": strategy,
        "fraction": fraction,
        "seed": seed if strategy == "random" or context.available else None,
        "output": str(output),
        "removed_file": str(removed_path),
    }
    if strategy in COVERAGE_STRATEGIES:
        selection.update(clusters=int(context.labels().max()) + 1, coverage_method=coverage_method)
    coverage = context.report(removed_set)
    write_selected(output.with_name(SELECTED_FILE), kept_indices, removed_indices, selection, context.fingerprint)
    if coverage is not None:
        selection["coverage"] = coverage
    return write_report(scores_path.parent, rows, errors, records=records, removed=removed_set, selection=selection)
