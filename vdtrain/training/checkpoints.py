"""Resuming a full (non-LoRA) fine-tune: load a checkpoint's `model.safetensors` by the names it was saved under.

transformers 5 saves a model under its legacy checkpoint names (`language_model.model.layers.0...` for LLaVA) but
`Trainer._load_from_checkpoint` loads them non-strictly under the module's current names
(`model.language_model.layers.0...`): nothing matches, nothing loads, and training silently restarts from the base
weights. Here the model's own save-time renaming (`revert_weight_conversion`) is applied to its live parameters,
which maps every saved name to the tensor it came from, and the checkpoint is copied into those tensors in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, logging

from vdtrain.errors import CheckpointError
from vdtrain.io import atomic_write_json, writing
from vdtrain.models.merge import BASE_MODEL_FILE
from vdtrain.training.identity import (
    RUN_FILE,
    check_resume_settings,
    current_run,
    new_run_id,
    recorded_run,
    run_record,
    run_settings,
    start_run,
)
from vdtrain.training.random_state import RandomStateAcrossProcessCounts

logger = logging.get_logger(__name__)


def full_weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files of a full-model checkpoint in `folder` (one file or the shards of an index), or []."""
    folder = Path(folder)
    if (folder / SAFE_WEIGHTS_NAME).is_file():
        return [folder / SAFE_WEIGHTS_NAME]
    if (folder / SAFE_WEIGHTS_INDEX_NAME).is_file():
        weight_map = json.loads((folder / SAFE_WEIGHTS_INDEX_NAME).read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    return []


def saved_name_targets(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each name `model.save_pretrained` would write, mapped to the live tensor it would write (renames only)."""
    state = model.state_dict(keep_vars=True)
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4: names are saved as they are
        return {name: tensor.data for name, tensor in state.items()}
    live = {tensor.data_ptr(): tensor for tensor in state.values()}
    targets = {}
    for name, tensor in revert_weight_conversion(model, dict(state)).items():
        source = live.get(tensor.data_ptr())
        if source is None or source.shape != tensor.shape:
            raise NotImplementedError(
                f"{type(model).__name__} saves {name!r} through a weight conversion other than a rename; "
                "resuming a full fine-tune of it is not supported (LoRA checkpoints are)"
            )
        targets[name] = source.data
    return targets


@torch.no_grad()
def load_full_checkpoint(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Copy the full-model weights saved in `folder` into `model` in place; raise if any saved or model name is
    left unmatched (a tied output embedding may be absent from the file)."""
    files = full_weight_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}")
    targets = saved_name_targets(model)
    loaded: set[int] = set()
    unexpected = []
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as weights:
            for name in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                target = targets.get(name)
                if target is None:
                    unexpected.append(name)
                    continue
                source = weights.get_tensor(name)
                if source.shape != target.shape:
                    raise CheckpointError(
                        f"{path}: {name} is {tuple(source.shape)}, the model has {tuple(target.shape)}"
                    )
                target.copy_(source)
                loaded.add(target.data_ptr())
    missing = sorted(name for name, tensor in targets.items() if tensor.data_ptr() not in loaded)
    if unexpected or missing:
        raise CheckpointError(
            f"{folder} does not match the model: {len(missing)} weights missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); was it saved from another model?"
        )
    logger.info("vdtrain: loaded %d full-model weights from %s", len(targets), folder)


# ------------------------------------------------------------------------------------ complete checkpoints only
MANIFEST_NAME = "vdtrain_checkpoint.json"  # written last by `CheckpointIntegrity`: every file and its size
_STEP = re.compile(r"^checkpoint-(\d+)$")


def _file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as what its name says (None: its header/structure parses)."""
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if path.stat().st_size != 8 + size + end:
                return f"{path.name} (truncated: {path.stat().st_size} bytes, its header needs {8 + size + end})"
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".pt", ".pth", ".bin"):
            with zipfile.ZipFile(path):  # torch.save's zip: a cut file has no central directory at its end
                pass
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as error:
        return f"{path.name} (unreadable: {type(error).__name__})"
    return None


def _required_files(folder: Path, world_size: int, deepspeed: bool, save_only_model: bool) -> list[str]:
    """Files the Trainer loads on resume, as alternatives `a|b` where either will do."""
    if deepspeed:
        required = ["latest"]
    elif (folder / "adapter_config.json").is_file():
        required = ["adapter_model.safetensors|adapter_model.bin"]
    elif (folder / SAFE_WEIGHTS_INDEX_NAME).is_file():
        index = json.loads((folder / SAFE_WEIGHTS_INDEX_NAME).read_text())
        required = sorted(set(index.get("weight_map", {}).values()))
    else:
        required = [f"adapter_model.safetensors|{SAFE_WEIGHTS_NAME}|pytorch_model.bin"]
    required.append("trainer_state.json")
    if not save_only_model:
        required += [] if deepspeed else ["optimizer.pt", "scheduler.pt"]
        if not (folder / MANIFEST_NAME).is_file():  # else the marker names the RNG files that were saved
            required.append("rng_state.pth|rng_state_0.pth")  # one process or several: any process count resumes
    return required


def checkpoint_problems(
    folder: str | os.PathLike, *, world_size: int = 1, deepspeed: bool = False, save_only_model: bool = False
) -> list[str]:
    """Every missing or damaged file of a checkpoint that `Trainer.train(resume_from_checkpoint=...)` would load
    (empty: it can be resumed). Checks headers only (safetensors, JSON, torch zip) and the sizes recorded in
    `vdtrain_checkpoint.json` when there is one, so it reads kilobytes, not the weights."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a directory"]
    problems = []
    try:
        required = _required_files(folder, world_size, deepspeed, save_only_model)
    except (OSError, ValueError) as error:
        return [f"{SAFE_WEIGHTS_INDEX_NAME} (unreadable: {type(error).__name__})"]
    for names in required:
        present = [folder / name for name in names.split("|") if (folder / name).is_file()]
        if not present:
            problems.append(f"{names.replace('|', ' or ')} (missing)")
        elif (problem := _file_problem(present[0])) is not None:
            problems.append(problem)
    if deepspeed and (folder / "latest").is_file():
        tag = (folder / "latest").read_text().strip()
        if not (folder / tag).is_dir() or not any((folder / tag).iterdir()):
            problems.append(f"{tag}/ (the DeepSpeed state named by `latest`: missing or empty)")
    if not problems and (folder.parent / RUN_FILE).is_file() and not (folder / MANIFEST_NAME).is_file():
        problems.append(f"{MANIFEST_NAME} (missing: its save did not finish)")  # vdtrain marks every checkpoint
    return _with_manifest_problems(folder, problems)


def _with_manifest_problems(folder: Path, problems: list[str], only: tuple[str, ...] | None = None) -> list[str]:
    """`problems` plus the files `vdtrain_checkpoint.json` records that are now missing or of another size (of
    those named in `only`, when given)."""
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text())["files"]
        except (OSError, ValueError, KeyError) as error:
            return [*problems, f"{MANIFEST_NAME} (unreadable: {type(error).__name__})"]
        for name, size in recorded.items():
            path = folder / name
            if only is not None and name not in only:
                continue
            if any(problem.startswith(f"{name} (") for problem in problems):
                continue  # already named, by what its header says
            if not path.is_file():
                problems.append(f"{name} (missing)")
            elif path.stat().st_size != size:
                problems.append(f"{name} ({path.stat().st_size} bytes, {size} when saved)")
    return sorted(set(problems), key=problems.index)


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", BASE_MODEL_FILE)


def adapter_problems(folder: str | os.PathLike) -> list[str]:
    """Every missing or damaged file of a saved LoRA adapter (a training run's `output_dir` or one of its
    checkpoints): the adapter's config and weights by their headers, and the sizes its manifest recorded for the
    files loading an adapter reads (`ADAPTER_FILES`: an edited README or a checkpoint's removed optimizer state
    does not matter)."""
    folder = Path(folder)
    problems = []
    for names in ("adapter_config.json", "adapter_model.safetensors|adapter_model.bin"):
        present = [folder / name for name in names.split("|") if (folder / name).is_file()]
        if not present:
            problems.append(f"{names.replace('|', ' or ')} (missing)")
        elif (problem := _file_problem(present[0])) is not None:
            problems.append(problem)
    if not (folder / MANIFEST_NAME).is_file() and (folder / BASE_MODEL_FILE).is_file():
        problems.append(f"{MANIFEST_NAME} (missing: the final save did not finish)")
    return _with_manifest_problems(folder, problems, only=ADAPTER_FILES)


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-N` folders of `output_dir`, oldest step first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return [path for _, path in sorted(found)]


def complete_checkpoints(output_dir: str | os.PathLike, **checks: Any) -> list[Path]:
    """The checkpoints of `output_dir` that `checkpoint_problems` finds nothing wrong with, oldest first."""
    return [path for path in checkpoint_folders(output_dir) if not checkpoint_problems(path, **checks)]


def resolve_resume(
    value: str | bool | None, output_dir: str | os.PathLike, run_id: str | None = None, **checks: Any
) -> str | None:
    """The checkpoint to resume from: `True`/`"true"`/`"last"` is the newest complete one in `output_dir` (newer
    incomplete ones, and with `run_id` those another run saved, are skipped with a warning naming them); a path is
    checked and refused if incomplete.

    Raises:
        CheckpointError: no complete checkpoint to take, or the named one has missing or damaged files.
    """
    from vdtrain.errors import CheckpointError

    if value is None or value is False or str(value).strip().lower() in ("", "false", "none", "no"):
        return None
    if value is True or str(value).strip().lower() in ("true", "last", "latest", "yes"):
        folders = checkpoint_folders(output_dir)
        if not folders:
            raise CheckpointError(
                f"{output_dir}: no checkpoint-N folder to resume from; drop --resume_from_checkpoint to start anew"
            )
        skipped, other_runs = [], []
        for folder in reversed(folders):
            problems = checkpoint_problems(folder, **checks)
            recorded = recorded_run(folder / MANIFEST_NAME) if not problems else None
            if recorded is not None and run_id is not None and recorded["id"] != run_id:
                other_runs.append(folder)
                skipped.append((folder.name, f"saved by another run, {recorded['id']}; this folder's run is {run_id}"))
                continue
            if not problems:
                for name, why in skipped:
                    logger.warning("vdtrain: skipping %s (%s)", name, why if " run" in why else f"incomplete: {why}")
                logger.warning("vdtrain: resuming from %s, the newest complete checkpoint", folder)
                return str(folder)
            skipped.append((folder.name, "; ".join(problems)))
        listed = "\n".join(f"  {name}: {why}" for name, why in skipped)
        hint = (
            f"\n{other_runs[0]} is the newest complete checkpoint, of another run: name it in "
            "--resume_from_checkpoint to go on with that run"
            if other_runs
            else ""
        )
        raise CheckpointError(f"{output_dir}: no complete checkpoint to resume from:\n{listed}{hint}")
    folder = Path(value)
    problems = checkpoint_problems(folder, **checks)
    if problems:
        inside = complete_checkpoints(folder, **checks)  # a run's output_dir named instead of one of its checkpoints
        complete = inside or (complete_checkpoints(folder.parent, **checks) if folder.parent.is_dir() else [])
        hint = (
            f"{complete[-1]} is complete: resume from it, or pass --resume_from_checkpoint last"
            if complete
            else "no other checkpoint beside it is complete: start anew without --resume_from_checkpoint"
        )
        raise CheckpointError(f"{folder} cannot be resumed from: {'; '.join(problems)}. {hint}")
    return str(folder)


def write_manifest(folder: str | os.PathLike, recursive: bool = True, run: dict[str, Any] | None = None) -> Path:
    """Record every file of a saved checkpoint with its size, atomically; its presence means saving finished.
    `recursive=False` records only the folder's own files (a final `output_dir` beside its `checkpoint-N`s); `run`
    (`identity.run_record`) says which run and settings saved it."""
    folder = Path(folder)
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*") if recursive else folder.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME and not path.name.startswith(".")
    }
    target = folder / MANIFEST_NAME
    record = {"format": 1, "files": files, **({"run": run} if run is not None else {})}
    atomic_write_json(target, record, indent=1, fsync=True)
    return target


class CheckpointIntegrity(RandomStateAcrossProcessCounts):
    """`Trainer` mixin: resume only from complete checkpoints of this run and its settings (`"last"`/`True`: the
    newest complete one), and save each checkpoint so that `vdtrain_checkpoint.json`, written after every process
    finished saving, only ever describes the files beside it. Resumes across a change of process count."""

    vd_run_extra: dict[str, Any] | None = None  # settings only the caller knows (model, data fingerprint): run.py
    vd_run_id: str | None = None

    def _checkpoint_checks(self) -> dict[str, Any]:
        return {
            "world_size": self.args.world_size,
            "deepspeed": bool(self.is_deepspeed_enabled),
            "save_only_model": bool(self.args.save_only_model),
        }

    def _run_record(self) -> dict[str, Any]:
        return run_record(self.vd_run_id or "unknown", run_settings(self.args, self.vd_run_extra))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        checks, output_dir = self._checkpoint_checks(), self.args.output_dir
        previous = current_run(output_dir)
        resume = resolve_resume(resume_from_checkpoint, output_dir, previous and previous["id"], **checks)
        settings = run_settings(self.args, self.vd_run_extra)
        self.vd_run_id = new_run_id()
        if resume is not None:
            recorded = recorded_run(Path(resume) / MANIFEST_NAME)
            check_resume_settings(resume, recorded, settings, bool(getattr(self.args, "resume_changed_settings", 0)))
            self.vd_run_id = recorded["id"] if recorded else self.vd_run_id
        self._vd_resumed_from = resume
        if self.args.should_save:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            start_run(output_dir, self.vd_run_id, settings)
        return super().train(resume, *args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save and folder.is_dir():  # another run's (or an older) checkpoint-N: its marker must
            resumed = getattr(self, "_vd_resumed_from", None)  # not vouch for files rewritten now, nor its files stay
            if resumed is not None and folder.resolve() == Path(resumed).resolve():
                (folder / MANIFEST_NAME).unlink(missing_ok=True)
            else:
                shutil.rmtree(folder)
        self.accelerator.wait_for_everyone()  # no process writes into the folder before it is cleared
        with writing(folder):  # a full disk: one line naming the checkpoint, not torch's inline_container.cc error
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank's RNG state and shards are on disk
            if self.args.should_save and folder.is_dir():
                write_manifest(folder, run=self._run_record())


class FullCheckpointLoading(CheckpointIntegrity):
    """`Trainer` mixin: complete checkpoints only (`CheckpointIntegrity`), and resume (and `load_best_model_at_end`)
    of full fine-tunes by saved names; LoRA, DeepSpeed and FSDP checkpoints go to the `Trainer`'s own loaders."""

    def _loads_full_weights(self, model: torch.nn.Module, folder: str) -> bool:
        """Whether `folder` is a full-model checkpoint that the Trainer's own loader would load under wrong names."""
        sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
        return not (sharded or hasattr(model, "peft_config")) and bool(full_weight_files(folder))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        target = model if model is not None else self.model
        while hasattr(target, "module"):  # DDP
            target = target.module
        if not self._loads_full_weights(target, resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_full_checkpoint(target, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        if not self._loads_full_weights(self.model, self.state.best_model_checkpoint):
            return super()._load_best_model()
        load_full_checkpoint(self.model, self.state.best_model_checkpoint)
