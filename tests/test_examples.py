"""The scripts in examples/ run as their docstrings say (offline, tiny models) and re-weight from `vd_start` on."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _logged_steps(script: str, *flags: str) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return [ast.literal_eval(line) for line in run.stdout.splitlines() if line.startswith("{'step'")]


@pytest.mark.parametrize("script,flags", [("trl_sft_vlm.py", ("--tiny",)), ("custom_trainer.py", ())])
def test_example_trains_and_reweights_from_vd_start(script, flags):
    steps = _logged_steps(script, *flags)
    assert [entry["step"] for entry in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 4
    active = [entry for entry in steps if "vd_mean" in entry]
    assert active and steps[-1] in active and steps[0] not in active  # before vd_start: the host's step alone
    assert all(entry["vd_weight_max"] > 1.0 for entry in active)  # weights moved away from 1
    assert all(entry["loss"] == entry["loss"] for entry in steps)  # finite (not NaN)
