"""A demo output folder across invocations: what its settings were, which jobs are done, what `--overwrite` clears.

A rerun with the same settings goes on where the last one stopped (each finished job, per seed and variant, is kept
with its result in `runs/seed<N>/<name>/job.json`); a rerun with other settings, or over a folder of an older demo,
is refused unless `--overwrite` is given, and `--overwrite` removes only what the demo itself writes there.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from vdtrain.demo.data import DemoPaths
from vdtrain.demo.settings import DemoSettings
from vdtrain.errors import InputError
from vdtrain.io import atomic_write_json, read_json

STATE = "demo_run.json"
JOB = "job.json"
# everything a demo run writes into its output folder (nothing else there is ever touched)
WRITTEN = ("runs", "data", "processor", "cache", "figures", "results.json", "report.md", STATE)
# settings that change how fast a run goes, not what it computes
_SPEED_ONLY = ("workers",)


def comparable(settings: DemoSettings) -> dict[str, Any]:
    """The settings that decide a run's results, as JSON (the worker count is left out: it changes only speed)."""
    return {k: v for k, v in asdict(settings).items() if k not in _SPEED_ONLY}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """`name: old -> new` for every setting (nested ones dotted) that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def clear(root: Path) -> None:
    """Remove what an earlier demo run wrote into `root` (and nothing else)."""
    for name in WRITTEN:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def open_run(root: Path, settings: DemoSettings, overwrite: bool) -> dict[str, Any]:
    """The folder's run state for `settings`: resumed when it holds a run with the same settings, new when it holds
    none (or `overwrite`); a different earlier run is refused, naming what differs."""
    wanted = {"settings": json_round_trip(comparable(settings)), "paths": None}
    state_file = root / STATE
    earlier = [name for name in WRITTEN if (root / name).exists()]
    if earlier and not overwrite:
        if not state_file.is_file():
            raise InputError(
                f"{root} holds an earlier demo run ({', '.join(earlier)}) this version cannot resume: pass "
                "--overwrite to replace it, or choose another --output-dir"
            )
        state = read_json(state_file)
        changed = _differences(state.get("settings") or {}, wanted["settings"])
        if changed:
            raise InputError(
                f"{root} holds a demo run with other settings ({'; '.join(changed)}): rerun with its settings to "
                "go on, pass --overwrite to replace it, or choose another --output-dir"
            )
        return state
    if overwrite:
        clear(root)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state_file, wanted, indent=1)
    return wanted


def json_round_trip(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), so saved and fresh settings compare equal."""
    import json

    return json.loads(json.dumps(value, default=str))


def save_paths(root: Path, state: dict[str, Any], paths: DemoPaths) -> None:
    """Record that the data and processor are in place (relative to `root`, so the folder can move)."""

    def rel(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rel(v) for k, v in value.items()}
        return Path(value).relative_to(root).as_posix()

    state["paths"] = {f.name: rel(getattr(paths, f.name)) for f in fields(DemoPaths) if f.name != "root"}
    atomic_write_json(root / STATE, state, indent=1)


def load_paths(root: Path, state: dict[str, Any]) -> DemoPaths | None:
    """The data's `DemoPaths` from an earlier invocation, or None when it never finished preparing them."""
    saved = state.get("paths")
    if not saved:
        return None

    def absolute(value: Any) -> Any:
        return {k: absolute(v) for k, v in value.items()} if isinstance(value, dict) else root / value

    paths = DemoPaths(root=root, **{k: absolute(v) for k, v in saved.items()})
    return paths if paths.meta.is_file() and paths.train_json.is_file() else None


def finished(folder: Path) -> Any | None:
    """The result a finished job left in `folder`, or None."""
    marker = folder / JOB
    return read_json(marker)["result"] if marker.is_file() else None


def mark_finished(folder: Path, result: Any) -> None:
    """Keep a job's result in its folder, written last, so a rerun skips it."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / JOB, {"result": result}, indent=1, default=str)


def start_afresh(folder: Path) -> None:
    """Remove what an unfinished job left in `folder`, so it runs again from its start."""
    if folder.is_dir() and not (folder / JOB).exists():
        shutil.rmtree(folder)
