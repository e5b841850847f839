"""Write `vdtrain/commands/train_help.txt`: `vdtrain train --help` rendered at 80 columns for the installed
transformers, so the first `--help` after installing needs no transformers import (about 3 s). Rerun it after
changing the argument dataclasses
(`vdtrain/training/config.py`, `models/arguments.py`, `data/arguments.py`) or
`vdtrain/commands/train.py`; `tests/test_cli.py` says when it is stale."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdtrain.commands.train import HELP_SNAPSHOT, HELP_WIDTH, help_key, render_help  # noqa: E402

if __name__ == "__main__":
    HELP_SNAPSHOT.write_text(f"# {help_key()}\n{render_help(HELP_WIDTH)}")
    print(f"{HELP_SNAPSHOT} ({help_key()})")
