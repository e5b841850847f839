"""Checkpoints hold adapter + projector, `resume_from_checkpoint` continues exactly, `vdtrain merge` round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runs import MAX_STEPS, StopAt, run_overrides, write_run_data
from safetensors.torch import load_file

from vdtrain.cli import main as cli_main
from vdtrain.commands.train import load_config
from vdtrain.training.run import build_trainer, run_training


def _train_logs(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_run_data(tmp_path_factory.mktemp("resume-data"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_llava_dir: Path, data_dir: Path) -> Path:
    output_dir = data_dir / "full"
    run_training(*load_config(None, run_overrides(tiny_llava_dir, data_dir, output_dir, vd_projector_lr=1e-3)))
    return output_dir


def test_checkpoint_holds_adapter_and_projector(uninterrupted: Path, tiny_llava_dir: Path):
    for folder in (uninterrupted / "checkpoint-2", uninterrupted):
        weights = load_file(folder / "adapter_model.safetensors")
        projector = {name for name in weights if "multi_modal_projector" in name}
        assert {name.rsplit(".", 2)[-2] for name in projector} == {"linear_1", "linear_2"}
        assert any("lora_A" in name for name in weights) and any("lora_B" in name for name in weights)
    assert (uninterrupted / "vdtrain_base_model.txt").read_text().strip() == str(tiny_llava_dir)
    logs = _train_logs(uninterrupted)
    assert [entry["step"] for entry in logs] == list(range(1, MAX_STEPS + 1))
    assert [("vd_mean" in entry) for entry in logs] == [step > 3 for step in range(1, MAX_STEPS + 1)]


@pytest.mark.parametrize("stop", [2, 4], ids=["before-vd-start", "after-vd-start"])
def test_resume_equals_uninterrupted(stop: int, uninterrupted: Path, tiny_llava_dir: Path, data_dir: Path):
    output_dir = data_dir / f"resumed-{stop}"
    overrides = run_overrides(tiny_llava_dir, data_dir, output_dir, vd_projector_lr=1e-3)
    trainer = build_trainer(*load_config(None, overrides))
    trainer.add_callback(StopAt(stop))
    trainer.train()
    assert trainer.state.global_step == stop and not (output_dir / f"checkpoint-{stop + 2}").exists()
    del trainer

    trainer = build_trainer(*load_config(None, overrides))
    trainer.add_callback(counter := StopAt())
    trainer.train(resume_from_checkpoint=str(output_dir / f"checkpoint-{stop}"))
    assert counter.steps == list(range(stop + 1, MAX_STEPS + 1))  # it resumed, it did not start over
    expected, got = _train_logs(uninterrupted), _train_logs(output_dir)
    assert got == expected  # losses, learning rates, grad norms and vd_* metrics of every step
    final, resumed = (
        load_file(path / f"checkpoint-{MAX_STEPS}/adapter_model.safetensors") for path in (uninterrupted, output_dir)
    )
    assert final.keys() == resumed.keys()
    for name, tensor in final.items():
        assert torch.equal(tensor, resumed[name]), name


def test_merge_round_trip(uninterrupted: Path, tiny_llava_dir: Path, data_dir: Path, tmp_path: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vdtrain.models.loading import load_for_inference

    merged_dir = tmp_path / "merged"
    assert cli_main(["merge", "--adapter", str(uninterrupted), "--output", str(merged_dir)]) == 0
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    processor = AutoProcessor.from_pretrained(merged_dir)
    peft_model, _, _ = load_for_inference(tiny_llava_dir, uninterrupted)
    base = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()

    from PIL import Image

    images = [Image.open(data_dir / "images" / f"img_00{i}.png") for i in range(2)]
    batch = processor(
        text=["<image> describe this image", "<image> what color"], images=images, return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected, got, untouched = (m(**batch).logits for m in (peft_model, merged, base))
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(untouched, expected, atol=1e-3)  # the adapter changed the model
    saved = load_file(uninterrupted / "adapter_model.safetensors")
    key = next(k for k in saved if "multi_modal_projector.linear_1.weight" in k)
    assert torch.equal(merged.model.multi_modal_projector.linear_1.weight, saved[key])

    assert cli_main(["merge", "--adapter", str(uninterrupted), "--output", str(merged_dir)]) == 1  # not new

    # the merged weights keep the base checkpoint's dtype wherever the merge runs; --dtype sets another
    bf16_base = tmp_path / "bf16-base"
    base.to(torch.bfloat16).save_pretrained(bf16_base)
    processor.save_pretrained(bf16_base)
    for flags, dtype in (([], torch.bfloat16), (["--dtype", "float32"], torch.float32)):
        out = tmp_path / f"merged-{dtype}"
        assert (
            cli_main(
                ["merge", "--adapter", str(uninterrupted), "--model", str(bf16_base), "--output", str(out), *flags]
            )
            == 0
        )
        weights = load_file(out / "model.safetensors")
        assert {tensor.dtype for tensor in weights.values()} == {dtype}, flags


def test_merge_output_that_is_a_file_is_refused_by_name(uninterrupted: Path, tmp_path: Path, capsys):
    taken = tmp_path / "merged"
    taken.write_text("notes\n")
    assert cli_main(["merge", "--adapter", str(uninterrupted), "--output", str(taken)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"error: {taken} is a file; --output names a new directory for the merged model"), err
    assert taken.read_text() == "notes\n"


def test_full_finetune_resumes_from_its_checkpoint(tiny_llava_dir: Path, data_dir: Path, tmp_path: Path):
    """transformers 5 saves legacy names (`language_model.model.*`) its Trainer cannot load; VDTrainer can."""
    from transformers import AutoModelForImageTextToText

    from vdtrain.training.checkpoints import load_full_checkpoint

    def overrides(output_dir: Path) -> dict:
        return {
            **run_overrides(tiny_llava_dir, data_dir, output_dir, vd_projector_lr=1e-3),
            "lora": False,
            "learning_rate": 1e-3,
        }

    run_training(*load_config(None, overrides(tmp_path / "full")))
    trainer = build_trainer(*load_config(None, overrides(tmp_path / "resumed")))
    trainer.add_callback(StopAt(4))
    trainer.train()
    del trainer
    saved = load_file(tmp_path / "resumed" / "checkpoint-4" / "model.safetensors")
    assert any(name.startswith("language_model.model.") for name in saved)  # the legacy layout, as released

    trainer = build_trainer(*load_config(None, overrides(tmp_path / "resumed")))
    trainer.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-4"))
    # every step's loss, vd_* metrics included, as if never interrupted
    assert _train_logs(tmp_path / "resumed") == _train_logs(tmp_path / "full")
    final, resumed = (
        load_file(tmp_path / p / f"checkpoint-{MAX_STEPS}" / "model.safetensors") for p in ("full", "resumed")
    )
    assert final.keys() == resumed.keys()
    for name, tensor in final.items():
        assert torch.equal(tensor, resumed[name]), name

    other = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    load_full_checkpoint(other, tmp_path / "full" / f"checkpoint-{MAX_STEPS}")  # a fresh model takes them too
    name = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(other.model.language_model.layers[0].self_attn.q_proj.weight, final[name])
    with pytest.raises(FileNotFoundError):
        load_full_checkpoint(other, tmp_path)
