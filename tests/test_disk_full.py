"""A full or read-only disk is one line naming the path and what was kept, never a traceback from torch, safetensors
or tokenizers; resuming after space is freed goes on from the newest complete checkpoint.

ROOT ONLY: the disks are real small tmpfs mounts (`mount -t tmpfs -o size=...`), which need root; elsewhere these
tests skip. Under CI=true, as root, a mount that fails is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runs import run_overrides, write_run_data
from tiny import write_conversations, write_images
from transformers import TrainerCallback

from vdtrain.cli import main as cli_main
from vdtrain.commands.train import load_config
from vdtrain.errors import StorageError
from vdtrain.training.checkpoints import complete_checkpoints
from vdtrain.training.run import build_trainer


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs mounted for the test (root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs as root: {mounted.stderr.decode().strip()}"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(message)
        pytest.skip(message)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Fill the disk up with one file; returns it (delete it to free the space)."""
    filler = disk / "filler"
    block = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as handle:
        for size in (len(block), 512, 1):
            try:
                while True:
                    handle.write(block[:size])
            except OSError:
                continue
    return filler


class FillAfterFirstSave(TrainerCallback):
    """Fills the disk once checkpoint-2 is saved, so checkpoint-4's save runs out of space midway."""

    def __init__(self, disk: Path) -> None:
        self.disk, self.filler = disk, None

    def on_save(self, args, state, control, **kwargs):
        if self.filler is None:
            self.filler = fill(self.disk)
        return control


def test_full_disk_during_a_checkpoint_save_names_it(small_disk: Path, tiny_llava_dir: Path, tmp_path: Path, caplog):
    data = write_run_data(tmp_path / "data")
    output_dir = small_disk / "out"
    trainer = build_trainer(*load_config(None, run_overrides(tiny_llava_dir, data, output_dir)))
    filling = FillAfterFirstSave(small_disk)
    trainer.add_callback(filling)
    with pytest.raises(StorageError) as error:  # was: RuntimeError [enforce fail at inline_container.cc] ...
        trainer.train()
    assert str(error.value).startswith(f"cannot write {output_dir / 'checkpoint-4'}: no space left on the device")
    assert [p.name for p in complete_checkpoints(output_dir)] == ["checkpoint-2"]  # the half-saved one is not
    del trainer

    filling.filler.unlink()  # space freed: the same run goes on from checkpoint-2 to its end
    trainer = build_trainer(*load_config(None, run_overrides(tiny_llava_dir, data, output_dir)))
    trainer.train(resume_from_checkpoint="last")
    assert trainer.state.global_step == 6
    assert [p.name for p in complete_checkpoints(output_dir)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_full_disk_in_train_filter_score_and_eval_generate_is_one_line(
    small_disk: Path, tiny_llava_dir: Path, tmp_path: Path, capsys
):
    names = write_images(tmp_path / "images", 2)
    write_conversations(tmp_path / "data.json", names)
    fill(small_disk)

    def last_line(argv: list[str]) -> str:
        assert cli_main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err.strip().splitlines()[-1]

    out = small_disk / "train"
    argv = ["train", "--model", str(tiny_llava_dir), "--data", str(tmp_path / "data.json"), "--image_folder"]
    line = last_line([*argv, str(tmp_path / "images"), "--output_dir", str(out), "--device", "cpu"])
    assert line.startswith(f"vdtrain train: error: cannot write {out}/") and "no space left on the device" in line
    assert line.endswith(f"no complete checkpoint in {out} yet; rerun the command to start over")

    out = small_disk / "scores"
    argv = ["filter", "score", "--model", str(tiny_llava_dir), "--data", str(tmp_path / "data.json")]
    line = last_line([*argv, "--image-folder", str(tmp_path / "images"), "--output-dir", str(out), "--no-progress"])
    assert line.startswith(f"vdtrain filter score: error: cannot write {out}/") and "no space left" in line
    assert line.endswith(f"the scores written so far are kept in {out}; rerun the same command to resume")

    questions = tmp_path / "q.jsonl"
    rows = [{"question_id": i, "image": name, "text": "Is there a cat?"} for i, name in enumerate(names)]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    answers = small_disk / "answers.jsonl"
    argv = ["eval", "generate", "--model", str(tiny_llava_dir), "--questions", str(questions), "--image-folder"]
    line = last_line([*argv, str(tmp_path / "images"), "--output", str(answers), "--no-progress"])
    assert line.startswith(f"vdtrain eval generate: error: cannot write {small_disk}/") and "no space left" in line
    assert line.endswith(f"the answers written so far are kept in {answers}; rerun the same command to resume")


def test_read_only_output_is_one_line(small_disk: Path, tiny_llava_dir: Path, tmp_path: Path, capsys):
    names = write_images(tmp_path / "images", 2)
    write_conversations(tmp_path / "data.json", names)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    out = small_disk / "scores"
    argv = ["filter", "score", "--model", str(tiny_llava_dir), "--data", str(tmp_path / "data.json")]
    assert cli_main([*argv, "--image-folder", str(tmp_path / "images"), "--output-dir", str(out)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"vdtrain filter score: error: cannot write {out}: read-only file system")
