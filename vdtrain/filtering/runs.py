"""The output directory of a scoring run (run.json, per-process JSONL files, merging) and the process group."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from vdtrain.errors import RunMismatchError as RunMismatchError  # re-exported: it lives in vdtrain.errors
from vdtrain.io import atomic_write_jsonl, read_jsonl, recorded_run_changes
from vdtrain.io import file_sha256 as file_sha256  # re-exported: the scoring run's data fingerprint

SCORES_FILE = "scores.jsonl"
ERRORS_FILE = "errors.jsonl"
RUN_FILE = "run.json"
# run.json fields that must match for a rerun to append to an output directory.
# (Not image_folder: the same data moved to another machine resumes; the data file itself is checked by hash.)
CHECKED_FIELDS = ("model", "adapter", "data_sha256", "noise_step", "seed", "max_length", "dtype")


# ---------------------------------------------------------------------------------------------- processes and files
def distributed() -> tuple[int, int]:
    """`(rank, world_size)`, starting torch.distributed through accelerate when launched with several processes."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()  # init_process_group with the launcher's backend and device
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def end_distributed() -> None:
    """Tear down the process group `distributed()` started, once every process is here: left to interpreter exit,
    gloo's threads can abort the process ("terminate called without an active exception")."""
    from vdtrain.training.teardown import end_process_group

    end_process_group()


def barrier(world_size: int) -> None:
    """Wait for every process of a multi-process run (nothing to wait for alone)."""
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def scored_indices(output_dir: Path) -> set[int]:
    """Indices already scored in `output_dir` (merged file and per-rank files; a truncated last line is ignored, and
    so is a score that is not finite: that sample is scored again)."""
    paths = [output_dir / SCORES_FILE, *sorted(output_dir.glob("scores.rank*.jsonl"))]
    rows = (row for path in paths for row in read_jsonl(path, missing_ok=True, skip_bad_lines=True))
    return {int(row["index"]) for row in rows if has_score(row)}


def has_score(row: dict[str, Any]) -> bool:
    """Whether a `scores.jsonl` row holds a finite score (earlier versions also wrote NaN and infinite ones)."""
    score = row.get("score")
    return isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)


def drop_nonfinite_scores(output_dir: Path) -> int:
    """Remove the rows without a finite score from `scores.jsonl` and the per-rank files, so that a resumed run
    scores those samples again and the merge cannot keep the old row; returns how many were removed."""
    removed = 0
    for path in [output_dir / SCORES_FILE, *sorted(output_dir.glob("scores.rank*.jsonl"))]:
        rows = read_jsonl(path, missing_ok=True, skip_bad_lines=True)
        kept = [row for row in rows if has_score(row)]
        if len(kept) < len(rows):
            atomic_write_jsonl(path, kept)
            removed += len(rows) - len(kept)
    return removed


def merge_rank_files(output_dir: Path, stem: str) -> list[dict[str, Any]]:
    """Merge `{stem}.jsonl` and `{stem}.rank*.jsonl` into `{stem}.jsonl` ordered by index, then drop the rank files."""
    rank_paths = sorted(output_dir.glob(f"{stem}.rank*.jsonl"))
    rows: dict[int, dict[str, Any]] = {}
    for path in [output_dir / f"{stem}.jsonl", *rank_paths]:
        for row in read_jsonl(path, missing_ok=True, skip_bad_lines=True):
            rows.setdefault(int(row["index"]), row)
    merged = [rows[index] for index in sorted(rows)]
    atomic_write_jsonl(output_dir / f"{stem}.jsonl", merged)
    for path in rank_paths:
        path.unlink()
    return merged


def check_run(output_dir: Path, info: dict[str, Any], is_main: bool) -> None:
    """Refuse an output directory scored by another run; the main process records this run in `run.json`."""
    path = output_dir / RUN_FILE
    changed = recorded_run_changes(path, info, CHECKED_FIELDS, is_main)
    if changed:
        raise RunMismatchError(
            f"{path} records a different scoring run ({'; '.join(changed)}). Its scores cannot be mixed with "
            "this run's: pass another --output-dir, or delete that directory to start over."
        )
