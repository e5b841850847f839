"""The end of a multi-process run: the process group is destroyed and its threads are joined while Python is whole.

`torch.distributed.destroy_process_group()` only drops torch's own references to the groups. Others keep a group
alive until interpreter teardown, and with it gloo's threads (`pt_gloo_runloop`, `gloo_tcp_loop`), which can then
abort a run that finished and saved everything with "terminate called without an active exception" (exit -6):

- the DDP wrapper (its reducer holds the group) that `Trainer` keeps as `model_wrapped` and accelerate in `_models`;
- default arguments evaluated when a module was first imported while the group existed: `group=group.WORLD` in
  `torch.distributed.nn.functional` (imported by DDP) and in DeepSpeed's `TorchBackend.barrier` (accelerate imports
  DeepSpeed lazily, e.g. `extract_model_from_parallel` inside `SFTTrainer.__init__`). Such a default names a group
  that no longer exists once all groups are destroyed; None (the default group) is what it meant.
"""

from __future__ import annotations

import gc
import types
from typing import Any


def end_process_group(trainer: Any | None = None) -> None:
    """Release the trainer's DDP wrapper, destroy every process group and drop the defaults that still name one, so
    gloo's threads end here rather than at interpreter exit. Call it once, after the last save, on every process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if trainer is not None:
        release_wrapped_model(trainer)
    dist.barrier()  # no process is still inside a collective when the others destroy their end of it
    if trainer is not None:
        trainer.accelerator.end_training()  # finishes the trackers, destroys the groups (not when fork-launched)
    else:
        dist.destroy_process_group()
    if not dist.is_initialized():
        forget_group_defaults()
    gc.collect()


def release_wrapped_model(trainer: Any) -> None:
    """Drop the trainer's and accelerate's references to the wrapped model (DDP, DeepSpeed engine): the plain model
    in `trainer.model` stays usable."""
    accelerator = trainer.accelerator
    if getattr(accelerator, "deepspeed_engine_wrapped", None) is None:  # free_memory would destroy the engine
        accelerator._models = []
    trainer.model_wrapped = trainer.model
    gc.collect()  # a DDP wrapper in a reference cycle (an earlier trainer's) goes now, not at exit


def forget_group_defaults() -> int:
    """Replace default arguments that are process groups by None in every loaded function (call it only once all
    groups are destroyed); returns how many were replaced."""
    replaced = 0
    for function in gc.get_objects():
        if type(function) is not types.FunctionType:
            continue
        defaults = function.__defaults__
        if defaults and any(map(_is_group, defaults)):
            function.__defaults__ = tuple(None if _is_group(value) else value for value in defaults)
            replaced += 1
        keywords = function.__kwdefaults__
        if keywords and any(map(_is_group, keywords.values())):
            function.__kwdefaults__ = {key: None if _is_group(value) else value for key, value in keywords.items()}
            replaced += 1
    return replaced


def _is_group(value: Any) -> bool:
    from torch.distributed import ProcessGroup

    return issubclass(type(value), ProcessGroup)  # type(): a lazy proxy's __class__ could import or raise
