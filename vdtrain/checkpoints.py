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
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, logging

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
                    raise ValueError(f"{path}: {name} is {tuple(source.shape)}, the model has {tuple(target.shape)}")
                target.copy_(source)
                loaded.add(target.data_ptr())
    missing = sorted(name for name, tensor in targets.items() if tensor.data_ptr() not in loaded)
    if unexpected or missing:
        raise ValueError(
            f"{folder} does not match the model: {len(missing)} weights missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); was it saved from another model?"
        )
    logger.info("vdtrain: loaded %d full-model weights from %s", len(targets), folder)


class FullCheckpointLoading:
    """`Trainer` mixin: resume (and `load_best_model_at_end`) of full fine-tunes by saved names; LoRA, DeepSpeed and
    FSDP checkpoints go to the `Trainer`'s own loaders, which handle them."""

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
