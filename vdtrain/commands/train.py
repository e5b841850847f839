"""`vdtrain train CONFIG.yaml [--field value ...]`: fine-tune with the visual-dependence loss from a recipe."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from vdtrain.compat import spell_training_fields
from vdtrain.errors import InputError, UsageError
from vdtrain.io import atomic_write_text

USAGE = """vdtrain train [CONFIG.yaml] [--field value ...]

Fine-tune a vision-language model with LoRA and the visual-dependence loss. CONFIG.yaml holds any of the fields
below; `--field value` on the command line overrides it (dashes or underscores: --output-dir = --output_dir).
Shared spellings: --model (model_name_or_path), --data (data_path), --batch-size (per_device_train_batch_size),
--device cpu (use_cpu), --dtype, --seed, --output-dir. --resume_from_checkpoint true|last takes the newest
complete checkpoint in output_dir; a checkpoint with missing or damaged files is refused. --debug (bare) shows
tracebacks. Runs under `accelerate launch -m vdtrain train ...` too.
"""
# the shared option names of `vdtrain.commands.options`, as the dataclass fields they stand for
ALIASES = {"model": "model_name_or_path", "data": "data_path", "batch_size": "per_device_train_batch_size"}
_state: dict[str, Any] = {}


def parser() -> Any:
    """The `HfArgumentParser` over the model, data and training dataclasses; argparse errors become `InputError`."""
    from transformers import HfArgumentParser

    from vdtrain.training.config import DataArguments, ModelArguments, VDTrainingArguments

    class Parser(HfArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise InputError(message)

    result = Parser((ModelArguments, DataArguments, VDTrainingArguments), usage=USAGE)
    for action in result._actions:  # help texts that say what these fields do here (HF's are for its own scripts)
        name = action.option_strings[0][2:] if action.option_strings else ""
        action.help = HELP_OVERRIDES.get(name, action.help)
    return result


HELP_OVERRIDES = {
    "resume_from_checkpoint": "Go on from a checkpoint: a checkpoint-N folder, the run's output_dir, or true/last "
    "for the newest complete checkpoint in output_dir (an incomplete or damaged one is refused by name).",
    "no_lora": "A full fine-tune: train the language model itself instead of LoRA adapters on it (the projector "
    "trains either way; the vision tower stays frozen unless freeze_vision_tower is false).",
}


HELP_SNAPSHOT = Path(__file__).with_name("train_help.txt")  # `scripts/write_train_help.py` writes it
HELP_WIDTH = 80


def help_key() -> str:
    """What the rendered help depends on besides the terminal width: vdtrain's fields and transformers' release."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    sources = ("training/config.py", "models/arguments.py", "data/arguments.py", "commands/train.py")
    for path in (package / name for name in sources):
        digest.update(path.read_bytes())
    return f"transformers {version('transformers')} config {digest.hexdigest()[:20]}"


def render_help(width: int | None = None) -> str:
    """The help as `HfArgumentParser` renders it (imports transformers and torch: seconds), `width` columns wide."""
    if width is None:
        return parser().format_help()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse wraps at shutil.get_terminal_size(), which reads it first
    try:
        return parser().format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def help_text(snapshot: Path = HELP_SNAPSHOT) -> str:
    """`vdtrain train --help`, without importing transformers when it can: a copy rendered for this terminal width
    (cached under ~/.cache/vdtrain), else the package's 80-column copy (with a note when it was rendered for another
    transformers release than this machine's: its TrainingArguments fields may differ a little), else (the vdtrain
    fields changed since the copy: a development tree) rendered now and cached."""
    key = help_key()
    width = shutil.get_terminal_size().columns
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vdtrain" / "help"
    path = cache / f"train-{hashlib.sha256(f'{key} {width}'.encode()).hexdigest()[:20]}.txt"
    if path.is_file():
        return path.read_text()
    if snapshot.is_file():
        header, _, body = snapshot.read_text().partition("\n")
        if header == f"# {key}":
            return body
        packaged, _, fields = header[2:].partition(" config ")
        release, _, ours = key.partition(" config ")
        if fields == ours:  # the same vdtrain fields, listed with another transformers release's TrainingArguments
            return body.rstrip("\n") + (
                f"\n\nListed with {packaged}'s TrainingArguments; this machine has {release}: any field its "
                "TrainingArguments has is accepted, listed here or not.\n"
            )
    text = render_help()
    try:
        atomic_write_text(path, text)
    except OSError:  # a read-only home: print it all the same
        pass
    return text


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """`--field value`, `--field=value` and bare `--flag` (true) as `{field: value}`; dashes become underscores."""
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--"):
            raise UsageError(f"expected --field value, got {token!r} (the recipe, if any, goes first)")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if index + 1 < len(argv) and not argv[index + 1].startswith("--"):
                value, index = argv[index + 1], index + 1
            else:
                value = "true"  # a bare flag
        key = key.replace("-", "_")
        if key == "device":
            key, value = "use_cpu", _use_cpu(value)
        overrides[ALIASES.get(key, key)] = value
        index += 1
    return overrides


def _use_cpu(device: str) -> str:
    """`--device cpu|cuda|auto` as the `use_cpu` field; `cuda` where there is none, or one device, is refused
    (training runs where it is launched: pick GPUs with CUDA_VISIBLE_DEVICES or `accelerate launch`)."""
    if device not in ("cpu", "cuda", "auto"):
        raise UsageError(
            f"--device {device}: train takes cpu, cuda or auto (GPUs are chosen with CUDA_VISIBLE_DEVICES or "
            "`accelerate launch`)"
        )
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
    return str(device == "cpu").lower()


def load_config(
    config_path: str | os.PathLike | None, overrides: dict[str, Any] | None = None
) -> tuple[Any, Any, Any]:
    """Parse a YAML recipe plus overrides into `(ModelArguments, DataArguments, VDTrainingArguments)`; unknown
    fields and bad values stop with the recipe's name."""
    import yaml

    values: dict[str, Any] = {}
    source = "command line"
    if config_path is not None:
        source = str(config_path)
        if not Path(config_path).is_file():
            raise InputError(f"recipe {config_path} does not exist")
        try:
            values = yaml.safe_load(Path(config_path).read_text()) or {}
        except yaml.YAMLError as error:
            raise InputError(f"{config_path}: not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise InputError(f"{config_path}: a recipe is a mapping of field: value, got {type(values).__name__}")
        not_text = [key for key in values if not isinstance(key, str)]
        if not_text:
            raise InputError(f"{config_path}: field names are text, got {', '.join(map(repr, not_text))}")
        values = {ALIASES.get(key, key): value for key, value in values.items()}
        if overrides:
            source += " (with command-line overrides)"
    values.update(overrides or {})
    hf_parser = parser()
    known = {action.dest for action in hf_parser._actions}
    values = spell_training_fields(values, known)
    unknown = sorted(set(values) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=2)
            hints.append(f"{key} (did you mean {', '.join(close)}?)" if close else key)
        raise UsageError(f"{source}: unknown field(s): {'; '.join(hints)}. `vdtrain train --help` lists them.")
    values = _check_lists(values, {action.dest: action for action in hf_parser._actions}, source)
    try:
        return hf_parser.parse_args_into_dataclasses(args=_to_argv(values), look_for_args_file=False)
    except ValueError as error:  # argparse's type checks and the fields' own (`vd_start: 2`): name the recipe
        raise InputError(f"{source}: {error}") from error


def _check_lists(values: dict[str, Any], actions: dict[str, Any], source: str) -> dict[str, Any]:
    """YAML lists as the fields take them: several values only where the field takes several; a one-item list for a
    one-value field is that value (`report_to: [wandb]`); `report_to: []` is "none", as in `TrainingArguments`."""
    values = dict(values)
    for key, value in values.items():
        if not isinstance(value, (list, tuple)) or actions[key].nargs in ("+", "*"):
            continue
        if key == "report_to" and not value:
            values[key] = "none"
        elif len(value) == 1:
            values[key] = value[0]
        else:
            raise InputError(f"{source}: {key} takes one value, got the list {list(value)}")
    return values


def _to_argv(values: dict[str, Any]) -> list[str]:
    """Fields as command-line tokens, so argparse applies each field's type (YAML reads `2e-4` as a string);
    `--field=value`, so a value starting with `-` (`-1e-4`) is not read as an option."""
    argv: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}={json.dumps(value)}"]
        elif isinstance(value, bool):
            argv += [f"--{key}={str(value).lower()}"]
        else:
            argv += [f"--{key}={value}"]
    return argv


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain train`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(help_text())
        return 0
    config_path = argv.pop(0) if argv and not argv[0].startswith("--") else None
    model_args, data_args, training_args = load_config(config_path, parse_overrides(argv))
    from vdtrain.commands.options import check_model_path, resolve_dtype

    check_model_path(model_args.model_name_or_path, "model_name_or_path")
    if Path(training_args.output_dir).exists() and not Path(training_args.output_dir).is_dir():
        raise InputError(f"output_dir {training_args.output_dir} is a file; name a directory for the checkpoints")
    model_args.dtype = resolve_dtype(model_args.dtype, "cpu" if training_args.use_cpu else "auto")
    _state["output_dir"] = training_args.output_dir
    from vdtrain.locks import main_process, output_lock
    from vdtrain.training.run import run_training

    with output_lock(training_args.output_dir, "vdtrain train", enabled=main_process()):
        run_training(model_args, data_args, training_args)
    return 0


def on_interrupt(argv: list[str]) -> str:
    """What Ctrl-C leaves: the complete checkpoints in output_dir, and how to go on from the newest."""
    output_dir = _state.get("output_dir")
    if output_dir is None:
        return "nothing was trained yet"
    from vdtrain.training.checkpoints import complete_checkpoints

    kept = complete_checkpoints(output_dir)
    if not kept:
        return f"no complete checkpoint in {output_dir} yet; rerun the command to start over"
    return (
        f"{len(kept)} complete checkpoint(s) kept in {output_dir} (newest: {kept[-1].name}); "
        "rerun the same command with --resume_from_checkpoint last to go on from it"
    )
