"""A checkpoint's marker vouches only for the files beside it and names the run and settings that saved them: a run
killed while rewriting another run's checkpoint leaves it refused, `last` never takes another run's checkpoint,
changed settings are refused by name unless deliberate, and another process count or accumulation resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from runs import run_overrides, write_run_data
from safetensors.torch import load_file

from vdtrain.cli import main as cli_main
from vdtrain.commands.train import load_config
from vdtrain.errors import CheckpointError
from vdtrain.training.checkpoints import MANIFEST_NAME, checkpoint_problems, write_manifest
from vdtrain.training.identity import RUN_FILE, current_run, recorded_run
from vdtrain.training.run import build_trainer, run_training
from vdtrain.training.trainer import VDTrainer


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, what was written stays."""


class KilledWhileSavingStep4(VDTrainer):
    """Dies inside the save of checkpoint-4 after the weights, optimizer and scheduler, before the RNG state and the
    trainer state: the point where an older marker would describe a mix of two runs."""

    def _save_rng_state(self, output_dir):
        if self.state.global_step == 4:
            raise Killed
        return super()._save_rng_state(output_dir)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_run_data(tmp_path_factory.mktemp("identity-data"))


@pytest.fixture(scope="module")
def finished(tiny_llava_dir: Path, data_dir: Path) -> Path:
    """Run A: 6 steps, checkpoints at 2, 4, 6, then its final adapter."""
    output_dir = data_dir / "run-a"
    run_training(*load_config(None, run_overrides(tiny_llava_dir, data_dir, output_dir)))
    return output_dir


def _recipe(path: Path, overrides: dict) -> str:
    path.write_text(yaml.safe_dump(overrides))
    return str(path)


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_a_run_killed_rewriting_another_runs_checkpoint_leaves_it_refused(
    finished: Path, tiny_llava_dir: Path, data_dir: Path, tmp_path: Path, caplog
):
    output_dir = shutil.copytree(finished, tmp_path / "out")
    run_a = recorded_run(output_dir / "checkpoint-6" / MANIFEST_NAME)["id"]
    overrides = run_overrides(tiny_llava_dir, data_dir, output_dir, seed=8)  # run B: other weights, same sizes
    trainer = build_trainer(*load_config(None, overrides))
    trainer.__class__ = KilledWhileSavingStep4
    with pytest.raises(Killed):
        trainer.train()
    del trainer
    run_b = current_run(output_dir)["id"]
    assert run_b != run_a
    # checkpoint-4 holds B's weights and optimizer, nothing of A's, and no marker: refused by name
    assert checkpoint_problems(output_dir / "checkpoint-4") == [
        "trainer_state.json (missing)",
        "rng_state.pth or rng_state_0.pth (missing)",
    ]
    # `last` takes B's own checkpoint-2, not A's complete checkpoint-6 nor the half-written checkpoint-4
    assert cli_main(["train", _recipe(tmp_path / "b.yaml", overrides), "--resume_from_checkpoint", "last"]) == 0
    assert f"skipping checkpoint-6 (saved by another run, {run_a}; this folder's run is {run_b})" in caplog.text
    assert "skipping checkpoint-4 (incomplete: trainer_state.json (missing)" in caplog.text
    assert f"resuming from {output_dir / 'checkpoint-2'}, the newest complete checkpoint" in caplog.text
    for step in (4, 6):
        assert recorded_run(output_dir / f"checkpoint-{step}" / MANIFEST_NAME)["id"] == run_b
        assert checkpoint_problems(output_dir / f"checkpoint-{step}") == []
    assert recorded_run(output_dir / MANIFEST_NAME)["id"] == run_b  # the final adapter too


def test_changed_settings_on_resume_are_refused_by_name(
    finished: Path, tiny_llava_dir: Path, data_dir: Path, tmp_path: Path, capsys, caplog
):
    output_dir = shutil.copytree(finished, tmp_path / "out", ignore=shutil.ignore_patterns("checkpoint-6"))
    run_a = recorded_run(output_dir / "checkpoint-4" / MANIFEST_NAME)["id"]
    changed_data = shutil.copytree(data_dir, tmp_path / "data", ignore=shutil.ignore_patterns("run-*"))
    records = json.loads((changed_data / "data.json").read_text())
    records[0]["conversations"][1]["value"] = "an edited answer."
    (changed_data / "data.json").write_text(json.dumps(records))
    cases = {
        "vd_temperature: 1.0 -> 2.0": {"vd_temperature": 2.0},
        "vd_weighting: 'neg' -> 'pos'": {"vd_weighting": "pos"},
        "vd_start: 0.5 -> 0.25": {"vd_start": 0.25},
        "global_batch_size: 4 -> 2": {"gradient_accumulation_steps": 1},
        "data_sha256: ": {"data_path": str(changed_data / "data.json")},
    }
    for change, fields in cases.items():
        overrides = {**run_overrides(tiny_llava_dir, data_dir, output_dir), **fields}
        assert cli_main(["train", _recipe(tmp_path / "r.yaml", overrides), "--resume_from_checkpoint", "last"]) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(
            f"vdtrain train: error: {output_dir / 'checkpoint-4'} was saved by run {run_a} with other settings ("
            f"{change}"
        ), err
        assert err.endswith("pass --resume_changed_settings true if the change is deliberate")
        assert "start anew" not in err and not (output_dir / "checkpoint-6").exists()

    overrides = {**run_overrides(tiny_llava_dir, data_dir, output_dir), "vd_temperature": 2.0}
    recipe = _recipe(tmp_path / "r.yaml", overrides)
    assert cli_main(["train", recipe, "--resume_from_checkpoint", "last", "--resume_changed_settings", "true"]) == 0
    assert "with changed settings (vd_temperature: 1.0 -> 2.0), as --resume_changed_settings asks" in caplog.text
    run = recorded_run(output_dir / "checkpoint-6" / MANIFEST_NAME)
    assert run["id"] == run_a and run["settings"]["vd_temperature"] == 2.0


def test_resume_across_process_count_and_accumulation(
    finished: Path, tiny_llava_dir: Path, data_dir: Path, tmp_path: Path, caplog
):
    # checkpoint-4 as `torchrun --nproc_per_node 2` leaves it: one RNG state per process, the marker listing both
    two = shutil.copytree(finished / "checkpoint-4", tmp_path / "two" / "checkpoint-4")
    (two / "rng_state.pth").rename(two / "rng_state_0.pth")
    shutil.copy(two / "rng_state_0.pth", two / "rng_state_1.pth")
    write_manifest(two, run=recorded_run(finished / "checkpoint-4" / MANIFEST_NAME))
    assert checkpoint_problems(two, world_size=1) == []  # 2 -> 1
    assert checkpoint_problems(finished / "checkpoint-4", world_size=2) == []  # 1 -> 2

    overrides = run_overrides(tiny_llava_dir, data_dir, tmp_path / "two")
    assert cli_main(["train", _recipe(tmp_path / "r.yaml", overrides), "--resume_from_checkpoint", str(two)]) == 0
    assert "checkpoint-4 was saved by 2 processes and is resumed by 1: process 0 restores the random state in " in (
        caplog.text
    )
    resumed, uninterrupted = _adapter(tmp_path / "two" / "checkpoint-6"), _adapter(finished / "checkpoint-6")
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():  # process 0's RNG state restored: dropout repeats exactly
        assert torch.equal(tensor, resumed[name]), name

    # the same global batch (4) from 4 x 1 instead of 2 x 2: accepted, ends where the run ends
    output_dir = shutil.copytree(finished, tmp_path / "accumulation", ignore=shutil.ignore_patterns("checkpoint-6"))
    overrides = run_overrides(
        tiny_llava_dir, data_dir, output_dir, per_device_train_batch_size=4, gradient_accumulation_steps=1
    )
    trainer = build_trainer(*load_config(None, overrides))
    trainer.train(resume_from_checkpoint="last")
    assert trainer.state.global_step == 6 and checkpoint_problems(output_dir / "checkpoint-6") == []
    assert json.loads((output_dir / RUN_FILE).read_text())["run"]["settings"]["global_batch_size"] == 4
    with pytest.raises(CheckpointError, match="global_batch_size: 4 -> 8"):
        build_trainer(*load_config(None, {**overrides, "per_device_train_batch_size": 8})).train(
            resume_from_checkpoint=str(output_dir / "checkpoint-4")
        )
