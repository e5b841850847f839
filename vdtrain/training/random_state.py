"""Resuming across a change of process count: each process restores the random state saved for it where there is
one, and says so where there is none, instead of the Trainer's silent info line."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


class RandomStateAcrossProcessCounts:
    """`Trainer` mixin: `_load_rng_state` for a checkpoint saved by another number of processes."""

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """The Trainer's own RNG restore, across a change of process count: process i takes `rng_state_i.pth`, a
        single process `rng_state.pth` (or process 0's state of a multi-process save); a process without a saved
        state says so and keeps its seeded one."""
        if checkpoint is None:
            return super()._load_rng_state(checkpoint)
        folder, index, world = Path(checkpoint), self.args.process_index, self.args.world_size
        own = f"rng_state_{index}.pth" if world > 1 else "rng_state.pth"
        saved = sorted(path.name for path in folder.glob("rng_state*.pth"))
        if (folder / own).is_file() and len(saved) == max(world, 1):
            return super()._load_rng_state(checkpoint)
        saved_by = f"{len(saved)} process{'es' if len(saved) != 1 else ''}"
        source = own if (folder / own).is_file() else None
        if source is None and index == 0:
            source = next((name for name in ("rng_state.pth", "rng_state_0.pth") if (folder / name).is_file()), None)
        if source is None:
            logger.warning(
                "vdtrain: %s was saved by %s and holds no random state for process %d of %d: its random draws "
                "(dropout, sampling) start from the seed, so the run will not repeat an uninterrupted one exactly",
                folder.name,
                saved_by,
                index,
                world,
            )
            return None
        logger.warning(
            "vdtrain: %s was saved by %s and is resumed by %d: process %d restores the random state in %s",
            folder.name,
            saved_by,
            world,
            index,
            source,
        )
        if source == own:
            return super()._load_rng_state(checkpoint)
        with tempfile.TemporaryDirectory() as alias:  # the Trainer reads the file under the name it expects
            os.symlink((folder / source).resolve(), Path(alias) / own)
            return super()._load_rng_state(alias)
