"""Which run a checkpoint belongs to: a run id and the settings that define the run, recorded in each checkpoint's
completion marker and in `output_dir/vdtrain_run.json`, so a resume never mixes two runs or two methods.

The settings are the method's `vd_*` fields, the model, the data file's fingerprint and the global batch size (the
process count and `gradient_accumulation_steps` may change on resume as long as the global batch does not).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from vdtrain.errors import CheckpointError
from vdtrain.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)
RUN_FILE = "vdtrain_run.json"  # the run now training into an output_dir (its id and settings)
OVERRIDE_FLAG = "--resume_changed_settings"
_NOT_SETTINGS = ("vd_masked_logits",)  # how the same loss is computed, not which loss


def new_run_id() -> str:
    """A fresh run id (random; printed in logs and markers)."""
    return uuid.uuid4().hex[:12]


def run_settings(args: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint: `vd_*` fields, global batch size, and `extra`
    (`model`, `data_sha256` where the caller knows them)."""
    from vdtrain.training.config import VD_DEFAULTS

    settings: dict[str, Any] = {
        name: getattr(args, name, default) for name, default in VD_DEFAULTS.items() if name not in _NOT_SETTINGS
    }
    if not getattr(args, "auto_find_batch_size", False):  # else the batch finder decides the batch, on resume too
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
        settings["global_batch_size"] = batch
    settings.update(extra or {})
    return json.loads(json.dumps(settings, default=str))  # as the marker stores them


def settings_hash(settings: dict[str, Any]) -> str:
    """A short hash of the settings (what the marker records besides the settings themselves)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_record(run_id: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The `run` entry of a completion marker and of `vdtrain_run.json`."""
    return {"id": run_id, "settings_sha256": settings_hash(settings), "settings": settings}


def recorded_run(marker: str | os.PathLike) -> dict[str, Any] | None:
    """The `run` entry a completion marker (or `vdtrain_run.json`) records; None for older markers without one."""
    try:
        run = read_json(marker).get("run")
    except (OSError, ValueError, AttributeError):
        return None
    return run if isinstance(run, dict) and "id" in run else None


def current_run(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run last started in `output_dir` (None: none recorded)."""
    return recorded_run(Path(output_dir) / RUN_FILE)


def start_run(output_dir: str | os.PathLike, run_id: str, settings: dict[str, Any]) -> None:
    """Record that run `run_id` now trains into `output_dir` (before its first checkpoint is written)."""
    atomic_write_json(Path(output_dir) / RUN_FILE, {"run": run_record(run_id, settings)}, indent=1, fsync=True)


def settings_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`name: saved -> now` for every setting that differs (a setting only one side records is left out)."""
    return [
        f"{name}: {recorded[name]!r} -> {current[name]!r}"
        for name in sorted(set(recorded) & set(current))
        if recorded[name] != current[name]
    ]


def check_resume_settings(
    checkpoint: str | os.PathLike, recorded: dict[str, Any] | None, current: dict[str, Any], allow: bool
) -> None:
    """Refuse to resume `checkpoint` with settings other than those it was saved with, naming each change, unless
    `allow` (the override flag, for deliberate changes: logged)."""
    changes = settings_changes((recorded or {}).get("settings") or {}, current)
    if not changes:
        return
    listed = "; ".join(changes)
    if allow:
        logger.warning(
            "vdtrain: resuming %s with changed settings (%s), as %s asks", checkpoint, listed, OVERRIDE_FLAG
        )
        return
    raise CheckpointError(
        f"{checkpoint} was saved by run {recorded['id']} with other settings ({listed}); resuming would mix two "
        f"runs in one. Resume with the settings it was saved with, or pass {OVERRIDE_FLAG} true if the change is "
        "deliberate"
    )
