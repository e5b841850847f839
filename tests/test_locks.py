"""Output locks: a second `train`, `filter score`, `eval generate` or `eval run` into an output another live process
is writing is refused by name; a lock left by a killed process is taken over; a finished command leaves none."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny import write_conversations, write_images

from vdtrain.cli import main as cli
from vdtrain.locks import LOCK_NAME, OutputLockedError, acquire, lock_path, output_lock

HOLD = "import sys, time; from vdtrain.locks import acquire; acquire(sys.argv[1], sys.argv[2], sys.argv[3] == 'file')"
HOLD += "; print('held', flush=True); time.sleep(600)"


@pytest.fixture
def holder(tmp_path: Path) -> Iterator:
    """Starts a real second process that takes the lock of a folder (or file) and keeps it until the test ends."""
    started = []

    def hold(target: Path, command: str, is_file: bool = False) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        kind = "file" if is_file else "dir"
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(target), command, kind], stdout=subprocess.PIPE, text=True, env=env
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


def test_train_into_a_folder_another_train_writes_is_refused(tmp_path: Path, tiny_llava_dir: Path, holder, capsys):
    output_dir = tmp_path / "out"
    write_conversations(tmp_path / "data.json", write_images(tmp_path / "images", 2))
    other = holder(output_dir, "vdtrain train")
    argv = ["train", "--model", str(tiny_llava_dir), "--data", str(tmp_path / "data.json"), "--device", "cpu"]
    argv += ["--image_folder", str(tmp_path / "images"), "--output_dir", str(output_dir), "--max_steps", "1"]
    assert cli(argv) == 1  # without the lock: trains and exits 0, both runs writing into one folder
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"vdtrain train: error: {output_dir} is in use by `vdtrain train` (pid {other.pid} on ")
    assert err.endswith(f"If that process is gone, delete {output_dir / LOCK_NAME}")
    assert json.loads((output_dir / LOCK_NAME).read_text())["pid"] == other.pid  # the owner's lock is left alone


def test_filter_score_eval_generate_and_eval_run_are_refused_too(tmp_path: Path, holder, capsys):
    holder(tmp_path / "scores", "vdtrain filter score")
    assert cli(["filter", "score", "--model", "m", "--data", "d.json", "--output-dir", str(tmp_path / "scores")]) == 1
    assert f"vdtrain filter score: error: {tmp_path / 'scores'} is in use by `vdtrain filter score`" in (
        capsys.readouterr().err
    )
    answers = tmp_path / "answers.jsonl"
    holder(answers, "vdtrain eval generate", is_file=True)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "image": "a.png", "text": "Is there a cat?"}) + "\n")
    assert cli(["eval", "generate", "--model", "m", "--questions", str(questions), "--output", str(answers)]) == 1
    assert f"vdtrain eval generate: error: {answers} is in use by `vdtrain eval generate`" in capsys.readouterr().err
    assert not answers.exists()

    holder(tmp_path / "eval", "vdtrain eval run")
    config = Path(__file__).resolve().parents[1] / "eval" / "pope-coco.yaml"
    argv = ["eval", "run", str(config), "--model", "m", "--output-dir", str(tmp_path / "eval")]
    assert cli([*argv, "--image-folder", str(tmp_path)]) == 1
    assert f"vdtrain eval run: error: {tmp_path / 'eval'} is in use by `vdtrain eval run`" in capsys.readouterr().err


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path, caplog):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    lock = lock_path(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid, "command": "vdtrain train"}))
    with output_lock(tmp_path, "vdtrain train") as held:
        assert held == lock and json.loads(lock.read_text())["pid"] == os.getpid()
        assert f"taking over the stale lock {lock} (pid {dead_pid} on {socket.gethostname()} is gone)" in caplog.text
        with pytest.raises(OutputLockedError, match="in use by `vdtrain train`"):
            acquire(tmp_path, "vdtrain train")  # held by this live process now
    assert not lock.exists()  # released at the end of the block, even though the block ran

    lock.write_text(json.dumps({"host": "elsewhere", "pid": dead_pid, "command": "vdtrain train"}))
    with pytest.raises(OutputLockedError, match="pid .* on host elsewhere"):  # cannot check it from here
        acquire(tmp_path, "vdtrain train")
