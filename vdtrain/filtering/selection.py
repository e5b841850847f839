"""Selection: remove the lowest, highest or a random fraction of the scored samples (thesis 5.4.5, Table 5.3)."""

from __future__ import annotations

import json
import math
import os
import random
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vdtrain.errors import InputError
from vdtrain.filtering.coverage import COVERAGE_STRATEGIES, SELECTED_FILE, CoverageContext, write_selected
from vdtrain.filtering.runs import ERRORS_FILE, RUN_FILE, file_sha256
from vdtrain.io import RecordWriter, iter_jsonl, iter_records, read_json, read_jsonl, records_format

STRATEGIES = ("lowest", "highest", "random", "balanced", *COVERAGE_STRATEGIES)
# balanced: the scores are BMMAL dominance ρ (`vdtrain select active --dominance`, thesis eq. 3.5); the most
# modality-dominated samples go first


BALANCED_NEEDS_RHO = (
    "--strategy balanced reads dominance scores (rows with 'rho'): pass the dominance.jsonl that "
    "`vdtrain select active --dominance DATA` writes, not visual-dependence scores"
)


class _Rows(Sequence):
    """Score columns seen as rows `{"index", "score", "id"}` made on access (what `CoverageContext` reads)."""

    def __init__(self, columns: dict[str, np.ndarray], ids: list[str]) -> None:
        self.columns, self.ids = columns, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return {
            "index": int(self.columns["index"][position]),
            "score": float(self.columns["score"][position]),
            "id": self.ids[position],
        }


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
    if strategy == "balanced" and scores and "rho" not in scores[0]:
        raise ValueError(BALANCED_NEEDS_RHO)
    indices = np.array([int(row["index"]) for row in scores], dtype=np.int64)
    key = "rho" if strategy == "balanced" else "score"
    values = np.array([float(row[key]) for row in scores], dtype=np.float64)
    return removed_indices(indices, values, strategy, fraction, seed)


def removed_indices(
    indices: np.ndarray, scores: np.ndarray, strategy: str, fraction: float, seed: int = 0
) -> list[int]:
    """`select_removed` on score columns (a million rows as two arrays, not a million dicts)."""
    count = removal_count(len(indices), fraction)
    if strategy == "lowest":
        order = np.lexsort((indices, scores))
    elif strategy == "highest":
        order = np.lexsort((indices, -scores))
    elif strategy == "balanced":  # `scores` are the dominance rho: the most modality-dominated go first
        order = np.lexsort((indices, -scores))
    elif strategy == "random":  # the sample depends on the count alone, so the same rows as sampling the rows
        by_index = np.argsort(indices, kind="stable").tolist()
        order = random.Random(seed).sample(by_index, len(by_index))
    else:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    return sorted(indices[np.asarray(order[:count], dtype=np.int64)].tolist())


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


def check_finite_scores(scores_path: Path) -> None:
    """Refuse, naming the file and line, a `score` that is not a finite number (JSON allows NaN and Infinity), before
    anything is written: sorting by it would put the sample anywhere."""
    with open(scores_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue  # an interrupted last line: skipped by the reader, as before
            if not isinstance(row, dict):
                continue
            for key in ("score", "rho"):  # a dominance run's rows carry rho; a key left out reads as 0
                value = row.get(key, 0.0)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    continue
                raise InputError(
                    f"{scores_path}, line {number}: sample {row.get('id')!r} has {key} {value!r}, not a finite "
                    "number (a diverged model?); delete the line and rerun `vdtrain filter score` to rescore it, "
                    "with a model that gives finite scores"
                )


def _read_scores(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The score rows as columns, and their ids, read one line at a time (an unreadable last line skipped)."""
    names = ("index", "n_tokens", "score", "frac_pos", "frac_neg", "rho")  # dominance rows: rho, no tokens
    columns: dict[str, array] = {name: array("q" if name in ("index", "n_tokens") else "d") for name in names}
    ids: list[str] = []
    has_rho = None
    for row in iter_jsonl(path, skip_bad_lines=True):
        has_rho = "rho" in row if has_rho is None else has_rho
        for name in names:
            columns[name].append(row.get(name, 0) if name != "index" else row[name])
        ids.append(str(row["id"]))
    if not has_rho:
        del columns["rho"]
    return {name: np.asarray(values) for name, values in columns.items()}, ids


def _scan_data(
    data: Path, columns: dict[str, np.ndarray], ids: list[str], errors: list[dict[str, Any]], scores_path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the data file: every scored id matches the record at its index, every record is scored or
    failed; returns the records' `word_counts`."""
    from vdtrain.filtering.report import words  # imports the data layer (torch): not at the top

    indices = columns["index"]
    position = np.full(int(indices.max()) + 1 if len(indices) else 0, -1, dtype=np.int64)
    position[indices] = np.arange(len(indices))
    both, answers, total = array("q"), array("q"), 0
    for index, record in enumerate(iter_records(data)):
        total += 1
        at = position[index] if index < len(position) else -1
        expected = str(record.get("id", index)) if isinstance(record, dict) else str(index)
        if at >= 0 and ids[at] != expected:
            raise ValueError(
                f"{scores_path}: sample {ids[at]!r} at index {index} does not match {data} (id there is "
                f"{expected!r}); pass the file that was scored"
            )
        both.append(words(record, ("user", "assistant")))
        answers.append(words(record))
    beyond = np.flatnonzero(indices >= total)
    if len(beyond):
        at = int(beyond[0])
        raise ValueError(
            f"{scores_path}: sample {ids[at]!r} at index {int(indices[at])} does not match {data} (no such index); "
            "pass the file that was scored"
        )
    covered = np.zeros(total, dtype=bool)
    covered[indices] = True
    covered[[int(row["index"]) for row in errors if 0 <= int(row["index"]) < total]] = True
    missing = total - int(covered.sum())
    if missing:
        raise ValueError(
            f"{scores_path} covers {total - missing} of the {total} samples of {data}: scoring "
            "is unfinished. Rerun `vdtrain filter score` with the same --output-dir to finish it."
        )
    return np.asarray(both, dtype=np.int64), np.asarray(answers, dtype=np.int64)


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
    check_finite_scores(scores_path)
    columns, ids = _read_scores(scores_path)  # streamed: 1.2M scores and their data file in well under 2 GB
    errors = read_jsonl(scores_path.parent / ERRORS_FILE, missing_ok=True, skip_bad_lines=True)
    if strategy == "balanced" and len(ids) and "rho" not in columns:
        raise ValueError(BALANCED_NEEDS_RHO)
    counts = _scan_data(data, columns, ids, errors, scores_path)
    context = CoverageContext(scores_path, _Rows(columns, ids), embeddings=embeddings, clusters=clusters, seed=seed)
    if strategy in COVERAGE_STRATEGIES:
        count = removal_count(len(ids), fraction)
        removed_list = context.removed(strategy, count, method=coverage_method, threshold=dedup_threshold)
    else:
        values = columns["rho"] if strategy == "balanced" else columns["score"]
        removed_list = removed_indices(columns["index"], values, strategy, fraction, seed)
    is_removed = np.zeros(len(counts[0]), dtype=bool)
    is_removed[removed_list] = True
    is_kept = np.zeros(len(counts[0]), dtype=bool)
    is_kept[columns["index"]] = True
    is_kept &= ~is_removed
    with RecordWriter(output, records_format(data)) as kept_out, RecordWriter(removed_path, "json") as removed_out:
        for index, record in enumerate(iter_records(data)):
            if is_kept[index]:
                kept_out.write(record)
            elif is_removed[index]:
                removed_out.write(record)
    selection = {
        "strategy": strategy,
        "fraction": fraction,
        "seed": seed if strategy == "random" or context.available else None,
        "output": str(output),
        "removed_file": str(removed_path),
    }
    if strategy in COVERAGE_STRATEGIES:
        selection.update(clusters=int(context.labels().max()) + 1, coverage_method=coverage_method)
    removed_set = set(removed_list)
    coverage = context.report(removed_set)
    kept_indices = np.flatnonzero(is_kept).tolist()
    write_selected(output.with_name(SELECTED_FILE), kept_indices, removed_list, selection, context.fingerprint)
    if coverage is not None:
        selection["coverage"] = coverage
    removed_array = np.asarray(removed_list, dtype=np.int64)
    return write_report(scores_path.parent, columns, errors, removed=removed_array, selection=selection, counts=counts)
