"""SIGTERM during training: what SLURM and Kubernetes send before the kill. The current optimizer step finishes, a
checkpoint is saved and marked complete, and training stops; `vdtrain train` then exits 143 with one line naming
the checkpoint to resume from. A second SIGTERM stops at once (the newest complete checkpoint is named)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import torch
from transformers import TrainerCallback

from vdtrain.errors import Terminated

logger = logging.getLogger(__name__)


class SaveOnSigterm(TrainerCallback):
    """Turns the first SIGTERM into "save a checkpoint at the end of this step, then stop" (all processes agree on
    the step), the second into `Terminated` at once. Install with `with SaveOnSigterm() as stop:`."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def __enter__(self) -> SaveOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:
            raise Terminated("SIGTERM")
        self.received = True
        logger.warning("vdtrain: SIGTERM: saving a checkpoint at the end of this step, then stopping (again: now)")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        stop = self.received
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            backend = torch.distributed.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            flag = torch.tensor([float(stop)], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)  # every process stops together
            stop = bool(flag.item())
        if stop:
            self.received = True
            control.should_save = True
            control.should_training_stop = True
        return control
