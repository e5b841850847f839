"""A diverged run never reports success: a non-finite loss or gradient norm stops training naming the step (or skips
the step when asked), non-finite weights are never marked complete, and non-finite scores are errors, never scores."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from runs import run_overrides, write_run_data
from safetensors.torch import load_file
from tiny import tiny_llava, write_conversations, write_images

from vdtrain.cli import main as cli_main
from vdtrain.commands.train import load_config
from vdtrain.errors import TrainingDiverged
from vdtrain.training.checkpoints import MANIFEST_NAME, complete_checkpoints
from vdtrain.training.run import build_trainer
from vdtrain.training.trainer import VDTrainer


class NaNLossAtStep3(VDTrainer):
    """A batch whose loss is NaN on optimizer step 3 only (as a bad sample or an fp16 overflow gives)."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        return loss * float("nan") if self.state.global_step == 2 else loss


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_run_data(tmp_path_factory.mktemp("nonfinite-data"))


def test_diverging_learning_rate_stops_naming_the_step(tiny_llava_dir: Path, data_dir: Path, tmp_path: Path, capsys):
    output_dir = tmp_path / "out"
    overrides = run_overrides(tiny_llava_dir, data_dir, output_dir, learning_rate=1e30, max_steps=4)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(overrides))
    assert cli_main(["train", str(recipe)]) == 1  # was: exit 0, every adapter weight NaN, marked complete
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    # step 1 is warm-up (learning rate 0), step 2 applies 1e30, step 3's loss is NaN: stopped before applying it
    assert last.startswith("vdtrain train: error: step 3: the loss is nan and the gradient norm is nan; stopped ")
    assert f"(newest complete checkpoint: {output_dir / 'checkpoint-2'})" in last
    assert "pass --skip_nonfinite_steps true to skip such steps" in last
    assert not (output_dir / MANIFEST_NAME).exists() and not (output_dir / "adapter_model.safetensors").exists()


def test_nonfinite_step_stops_or_is_skipped(tiny_llava_dir: Path, data_dir: Path, tmp_path: Path, caplog):
    overrides = run_overrides(tiny_llava_dir, data_dir, tmp_path / "stop", max_steps=3, save_steps=1)
    trainer = build_trainer(*load_config(None, overrides))
    trainer.__class__ = NaNLossAtStep3
    with pytest.raises(TrainingDiverged) as error:
        trainer.train()
    assert str(error.value).startswith(
        "step 3: the loss is nan and the gradient norm is nan; stopped before applying it (newest complete "
        f"checkpoint: {tmp_path / 'stop' / 'checkpoint-2'})"
    )
    assert [p.name for p in complete_checkpoints(tmp_path / "stop")] == ["checkpoint-1", "checkpoint-2"]
    assert not (tmp_path / "stop" / "checkpoint-3").exists()

    output_dir = tmp_path / "skip"
    overrides = run_overrides(tiny_llava_dir, data_dir, output_dir, max_steps=3, save_steps=1)
    trainer = build_trainer(*load_config(None, {**overrides, "skip_nonfinite_steps": True}))
    trainer.__class__ = NaNLossAtStep3
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.vd_skipped_steps == 1
    assert "step 3 skipped (the loss is nan and the gradient norm is nan)" in caplog.text
    step1, step2, step3 = (load_file(output_dir / f"checkpoint-{n}" / "adapter_model.safetensors") for n in (1, 2, 3))
    assert all(torch.isfinite(tensor).all() for tensor in step3.values())
    assert all(torch.equal(step2[name], step3[name]) for name in step2)  # the skipped step changed nothing
    assert not all(torch.equal(step1[name], step2[name]) for name in step1)  # a normal step does


def test_nonfinite_scores_are_errors_and_select_names_the_line(tmp_path: Path, capsys):
    model, processor = tiny_llava()
    with torch.no_grad():  # NaN image features: every sample with an image scores NaN, the text-only one does not
        model.model.multi_modal_projector.linear_1.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    write_conversations(tmp_path / "data.json", write_images(tmp_path / "images", 3), text_only=1)
    argv = ["filter", "score", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data.json")]
    argv += ["--image-folder", str(tmp_path / "images"), "--output-dir", str(tmp_path / "out"), "--no-progress"]
    assert cli_main(argv) == 0  # was: NaN score rows, then a traceback from the histogram
    assert "scored 1, errors 3" in capsys.readouterr().out
    scores = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [row["id"] for row in scores] == ["t0"] and math.isfinite(scores[0]["score"])
    assert sorted(row["id"] for row in errors) == ["s0", "s1", "s2"]
    assert all(row["error"].startswith("score is nan: the model's log-probabilities are not finite") for row in errors)

    # a NaN score in a scores file (an older version's, or edited): named by file and line, nothing written
    scores_path = tmp_path / "out" / "scores.jsonl"
    shutil.copy(scores_path, tmp_path / "scores.backup")
    scores_path.write_text(json.dumps({**scores[0], "score": float("nan")}) + "\n")
    kept = tmp_path / "sel" / "kept.json"
    argv = ["filter", "select", "--scores", str(scores_path), "--data", str(tmp_path / "data.json")]
    assert cli_main([*argv, "--strategy", "lowest", "--fraction", "0.5", "--output", str(kept)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"vdtrain filter select: error: {scores_path}, line 1: sample 't0' has score nan, not a fin")
    assert not kept.exists() and not (kept.parent / "removed.json").exists()
