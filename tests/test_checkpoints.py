"""Checkpoints you can trust: each saved one is marked complete, damaged ones are refused by name, and
`--resume_from_checkpoint last` takes the newest complete one and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from runs import MAX_STEPS, StopAt, run_overrides, write_run_data
from safetensors.torch import load_file

from vdtrain.cli import main as cli_main
from vdtrain.commands.train import load_config
from vdtrain.errors import CheckpointError
from vdtrain.training.checkpoints import (
    MANIFEST_NAME,
    adapter_problems,
    checkpoint_problems,
    complete_checkpoints,
    resolve_resume,
)
from vdtrain.training.run import build_trainer, run_training

TRAINER_FILES = ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_run_data(tmp_path_factory.mktemp("checkpoint-data"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_llava_dir: Path, data_dir: Path) -> Path:
    output_dir = data_dir / "full"
    run_training(*load_config(None, run_overrides(tiny_llava_dir, data_dir, output_dir)))
    return output_dir


def test_every_saved_checkpoint_is_marked_complete(uninterrupted: Path):
    assert [p.name for p in complete_checkpoints(uninterrupted)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for folder in complete_checkpoints(uninterrupted):
        recorded = json.loads((folder / MANIFEST_NAME).read_text())["files"]
        assert set(TRAINER_FILES) <= set(recorded)
        assert all(recorded[name] == (folder / name).stat().st_size for name in recorded)
        assert checkpoint_problems(folder) == []


def test_missing_and_damaged_files_are_named(uninterrupted: Path, tmp_path: Path):
    def damaged(change) -> list[str]:
        folder = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        shutil.copytree(uninterrupted / "checkpoint-2", folder)
        change(folder)
        return checkpoint_problems(folder)

    def cut(path: Path, keep: float = 0.5) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    assert damaged(lambda f: (f / "optimizer.pt").unlink()) == ["optimizer.pt (missing)"]
    assert damaged(lambda f: [(f / n).unlink() for n in ("scheduler.pt", "rng_state.pth")]) == [
        "scheduler.pt (missing)",
        "rng_state.pth (missing)",
    ]
    (weights,) = damaged(lambda f: cut(f / "adapter_model.safetensors"))
    assert weights.startswith("adapter_model.safetensors (truncated: ") and "its header needs" in weights
    assert damaged(lambda f: cut(f / "trainer_state.json")) == ["trainer_state.json (unreadable: JSONDecodeError)"]
    assert damaged(lambda f: cut(f / "optimizer.pt", 0.9))[0] == "optimizer.pt (unreadable: BadZipFile)"
    # bytes added to a zip still open; the sizes recorded when it was saved do not match
    grown = damaged(lambda f: (f / "rng_state.pth").write_bytes((f / "rng_state.pth").read_bytes() + b"\0" * 10))
    size = (uninterrupted / "checkpoint-2" / "rng_state.pth").stat().st_size
    assert grown == [f"rng_state.pth ({size + 10} bytes, {size} when saved)"]
    # a checkpoint saved by a plain Trainer (no manifest) is checked file by file
    assert damaged(lambda f: (f / MANIFEST_NAME).unlink()) == []
    assert damaged(lambda f: (f / "rng_state.pth").rename(f / "rng_state_0.pth")) == ["rng_state.pth (missing)"]
    no_manifest = tmp_path / "c6"  # the copy whose manifest was removed above: every file there, one RNG state
    assert not (no_manifest / MANIFEST_NAME).exists()
    assert checkpoint_problems(no_manifest, world_size=2) == []  # another process count resumes (issue 23)
    assert damaged(lambda f: [(f / n).unlink() for n in (MANIFEST_NAME, "rng_state.pth")]) == [
        "rng_state.pth or rng_state_0.pth (missing)"
    ]


def test_final_adapter_is_marked_complete_and_checked_before_use(uninterrupted: Path, tmp_path: Path, capsys):
    """The adapter `vdtrain train` leaves in `output_dir` gets its own manifest, written last; a command that loads
    a cut or half-saved adapter refuses it naming the file, with one error line and exit code 1."""
    recorded = json.loads((uninterrupted / MANIFEST_NAME).read_text())["files"]
    assert {"adapter_model.safetensors", "adapter_config.json", "vdtrain_base_model.txt"} <= set(recorded)
    assert not any(name.startswith("checkpoint-") for name in recorded)  # the final save only
    assert adapter_problems(uninterrupted) == [] and adapter_problems(uninterrupted / "checkpoint-6") == []

    def merge_error(change) -> str:
        folder = tmp_path / f"a{len(list(tmp_path.iterdir()))}"
        shutil.copytree(uninterrupted, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
        change(folder)
        assert cli_main(["merge", "--adapter", str(folder), "--output", str(tmp_path / "merged")]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err.strip()

    weights = uninterrupted / "adapter_model.safetensors"
    half = weights.stat().st_size // 2
    err = merge_error(lambda f: (f / weights.name).write_bytes(weights.read_bytes()[:half]))
    assert err.startswith("vdtrain merge: error: --adapter ") and "the adapter is incomplete or damaged" in err
    assert f"adapter_model.safetensors (truncated: {half} bytes" in err
    # killed before the marker was written (a vdtrain output: its base-model file is there)
    err = merge_error(lambda f: (f / MANIFEST_NAME).unlink())
    assert f"{MANIFEST_NAME} (missing: the final save did not finish)" in err
    # a file another save overwrote after the marker was written (its header alone would pass)
    config = uninterrupted / "adapter_config.json"
    err = merge_error(lambda f: (f / config.name).write_text(config.read_text() + "\n"))
    assert f"adapter_config.json ({config.stat().st_size + 1} bytes, {config.stat().st_size} when saved)" in err
    assert not (tmp_path / "merged").exists()


def test_adapter_check_ignores_files_loading_an_adapter_does_not_read(uninterrupted: Path, tmp_path: Path):
    """A checkpoint whose optimizer and RNG states were deleted to save space, or an adapter whose model card was
    edited, still merges: only the adapter's own files are checked (resuming still refuses the checkpoint)."""
    checkpoint = shutil.copytree(uninterrupted / "checkpoint-6", tmp_path / "checkpoint-6")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (checkpoint / name).unlink()
    (checkpoint / "README.md").write_text("notes\n")
    assert adapter_problems(checkpoint) == []
    assert "optimizer.pt (missing)" in checkpoint_problems(checkpoint)
    final = shutil.copytree(uninterrupted, tmp_path / "final", ignore=shutil.ignore_patterns("checkpoint-*"))
    (final / "README.md").write_text("my model card\n")
    assert adapter_problems(final) == []
    assert cli_main(["merge", "--adapter", str(checkpoint), "--output", str(tmp_path / "merged")]) == 0


def test_resume_true_without_checkpoints_says_so(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no checkpoint-N folder to resume from"):
        resolve_resume("true", tmp_path)
    assert resolve_resume("false", tmp_path) is None and resolve_resume(None, tmp_path) is None


def test_resume_from_the_output_dir_points_at_its_checkpoints(uninterrupted: Path):
    """Naming the run's output_dir instead of a checkpoint-N: the hint names its newest complete checkpoint (it said
    "no other checkpoint beside it is complete: start anew")."""
    with pytest.raises(CheckpointError) as error:
        resolve_resume(str(uninterrupted), uninterrupted)
    assert f"{uninterrupted / 'checkpoint-6'} is complete: resume from it, or pass --resume_from_checkpoint last" in (
        str(error.value)
    )


def test_incomplete_checkpoint_refused_and_last_takes_the_previous(
    uninterrupted: Path, tiny_llava_dir: Path, data_dir: Path, tmp_path: Path, capsys, caplog
):
    output_dir = tmp_path / "killed"
    overrides = run_overrides(tiny_llava_dir, data_dir, output_dir)
    trainer = build_trainer(*load_config(None, overrides))
    trainer.add_callback(StopAt(4))
    trainer.train()
    del trainer
    # a kill while checkpoint-4 was written: the Trainer writes trainer_state.json last, vdtrain its manifest after
    for name in ("trainer_state.json", MANIFEST_NAME):
        (output_dir / "checkpoint-4" / name).unlink()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(overrides))

    assert cli_main(["train", str(recipe), "--resume_from_checkpoint", str(output_dir / "checkpoint-4")]) == 1
    err = capsys.readouterr().err
    assert (
        f"vdtrain train: error: {output_dir / 'checkpoint-4'} cannot be resumed from: trainer_state.json (missing). "
        f"{output_dir / 'checkpoint-2'} is complete: resume from it, or pass --resume_from_checkpoint last"
    ) in err
    assert "Traceback" not in err and not (output_dir / "checkpoint-6").exists()

    assert cli_main(["train", str(recipe), "--resume_from_checkpoint", "last"]) == 0
    assert "skipping checkpoint-4 (incomplete: trainer_state.json (missing))" in caplog.text
    assert f"resuming from {output_dir / 'checkpoint-2'}, the newest complete checkpoint" in caplog.text
    state = json.loads((output_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    expected = json.loads((uninterrupted / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    assert [e for e in state["log_history"] if "loss" in e] == [e for e in expected["log_history"] if "loss" in e]
    final, resumed = (
        load_file(p / f"checkpoint-{MAX_STEPS}" / "adapter_model.safetensors") for p in (uninterrupted, output_dir)
    )
    assert final.keys() == resumed.keys()
    for name, tensor in final.items():
        assert torch.equal(tensor, resumed[name]), name
    assert [p.name for p in complete_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_ctrl_c_says_what_was_kept(tiny_llava_dir: Path, data_dir: Path, tmp_path: Path):
    output_dir = tmp_path / "interrupted"
    overrides = {**run_overrides(tiny_llava_dir, data_dir, output_dir), "max_steps": 10_000}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(overrides))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "vdtrain", "train", str(recipe)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # a launcher without job control (`cmd &` in a script) starts children with SIGINT ignored, and Python
        # then installs no KeyboardInterrupt: give the child Ctrl-C's default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300
        while not (output_dir / "checkpoint-2" / MANIFEST_NAME).is_file() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # never leave a training run behind a failed test
            process.kill()
            process.wait()
    assert process.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("vdtrain train: interrupted: ") and f"complete checkpoint(s) kept in {output_dir}" in last
    assert "rerun the same command with --resume_from_checkpoint last" in last and "Traceback" not in err


def test_sigterm_saves_a_checkpoint_and_says_so(tiny_llava_dir: Path, data_dir: Path, tmp_path: Path):
    """What SLURM and Kubernetes send before the kill: the step in flight finishes, a checkpoint of it is saved and
    marked complete, and the exit is 143 with one line naming it (was: exit -15, silent)."""
    output_dir = tmp_path / "terminated"
    overrides = {**run_overrides(tiny_llava_dir, data_dir, output_dir), "max_steps": 10_000, "save_steps": 1000}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(overrides))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "vdtrain", "train", str(recipe)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in process.stdout:  # the first logged step: training is under way
        if "'loss'" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err[-2000:]
    kept = complete_checkpoints(output_dir)
    assert len(kept) == 1 and int(kept[0].name.split("-")[1]) >= 1  # saved on SIGTERM (save_steps is 1000)
    last = err.strip().splitlines()[-1]
    assert last == (
        f"vdtrain train: terminated (SIGTERM): 1 complete checkpoint(s) kept in {output_dir} (newest: "
        f"{kept[0].name}); rerun the same command with --resume_from_checkpoint last to go on from it"
    )
    assert "Traceback" not in err
