"""scripts/gpu_check.py: the full mode's shapes (on the meta device) and a `--tiny` run of every part on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"
FIELDS = {
    "step": ("step_s", "peak_mib", "peak_total_mib", "loss", "vd_vs_vanilla_time", "vd_vs_limit_time",
             "limit_vs_vanilla_time", "vd_vs_vanilla_memory", "masked_vs_vanilla_memory", "trainable_params",
             "tokens_per_batch", "supervised_per_sequence", "image_tokens"),
    "zero2": ("zero_stage", "steps", "step_s", "peak_total_mib", "losses", "vd_active_steps", "adapter_tensors",
              "adapter_mib", "adapter_empty_tensors", "projector_saved", "lora_b_trained"),
    "filter": ("samples_per_s", "score_batch_vs_limit", "score_dataset_vs_limit", "samples", "batch_size", "scored",
               "tokens_per_sample", "supervised_per_sample"),
    "generate": ("samples_per_s", "speedup", "batch_size", "samples", "max_new_tokens", "answers",
                 "same_answers_as_one_by_one"),
}  # fmt: skip
FIELDS["zero3"] = FIELDS["zero2"]
STEP_VARIANTS = ("vanilla", "vanilla_masked", "vd_active", "vanilla_plus_forward")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_full_shapes_are_llava_1_5_7b(gpu_check):
    # Built on the meta device (no memory): the parameter count of llava-hf/llava-1.5-7b-hf exactly, and a batch of
    # 8 x 1024 tokens with 576 image tokens (what the 336-px processor expands <image> to) and 350 supervised.
    shape = gpu_check.FULL
    processor = gpu_check.build_processor(shape)
    config = gpu_check.build_config(shape, processor.tokenizer)
    model = gpu_check.build_model(config, "meta", torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == gpu_check.LLAVA_7B_PARAMS == 7_063_427_072
    assert model.dtype == torch.bfloat16 and config.text_config.vocab_size == 32064
    from vdtrain.models import get_adapter

    assert get_adapter(model, processor).num_image_tokens(processor, (336, 336)) == config.image_seq_length == 576
    batch = gpu_check.train_batch(shape, config, "cpu", torch.bfloat16)
    assert batch["input_ids"].shape == (8, 1024) and batch["pixel_values"].shape == (8, 3, 336, 336)
    assert (batch["input_ids"] == config.image_token_index).sum(dim=1).tolist() == [576] * 8
    assert (batch["labels"][:, 1:] != -100).sum(dim=1).tolist() == [350] * 8
    eot = batch["end_of_turn_mask"]
    assert eot.sum(dim=1).tolist() == [2] * 8 and (batch["labels"][eot] != -100).all()


def test_failing_part_is_recorded(gpu_check):
    result = gpu_check.guarded(lambda: {"x": 1 / 0})
    assert result["status"] == "error" and result["error"].startswith("ZeroDivisionError")
    report = {"mode": "tiny", "device": "cpu", "versions": {"torch": "x"}, "total_s": 1.0, "parts": {"step": result}}
    assert "| step | **error** | ZeroDivisionError" in gpu_check.markdown(report)


@pytest.mark.slow
def test_tiny_run_writes_every_part(tmp_path):
    # The same code as on the GPU (two ZeRO processes included; DeepSpeed's first start compiles an op, ~60 s),
    # through the device wrapper, as a lent machine runs it: files in $OUT, no wheels to install here.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    env["VDTRAIN_WHEELS"] = str(tmp_path / "no-wheels")
    output = tmp_path / "gpu_check.json"
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_run.sh"), "--tiny"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    versions = (tmp_path / "versions.txt").read_text()
    assert "FAILED" not in versions and re.search(r"^vdtrain +\S+ +\S*vdtrain/__init__.py$", versions, re.M), versions
    assert (tmp_path / "gpu_check.log").read_text().strip().endswith("|")  # the table, last
    report = json.loads(output.read_text())
    assert report["mode"] == "tiny" and report["model"]["status"] == "ok"
    for name, fields in FIELDS.items():
        part = report["parts"][name]
        assert part["status"] == "ok", (name, part.get("traceback"))
        assert set(fields) <= set(part), (name, sorted(set(fields) - set(part)))
    step = report["parts"]["step"]
    assert set(step["step_s"]) == set(step["peak_mib"]) == set(STEP_VARIANTS)
    assert all(value > 0 for value in step["step_s"].values())
    assert step["supervised_per_sequence"] == 24 and step["image_tokens"] == 16
    for name in ("zero2", "zero3"):
        zero = report["parts"][name]
        assert zero["zero_stage"] == int(name[-1]) and zero["steps"] == zero["vd_active_steps"] == 2
        assert zero["adapter_tensors"] > 0 and zero["adapter_empty_tensors"] == 0
        assert zero["projector_saved"] and zero["lora_b_trained"]
    assert report["parts"]["filter"]["scored"] == report["parts"]["filter"]["samples"] == 4
    generate = report["parts"]["generate"]
    assert generate["answers"] == 4 and generate["same_answers_as_one_by_one"] == 1.0  # float32: padding-invariant
    table = output.with_suffix(".md").read_text()
    assert all(f"| {name} | ok" in table for name in FIELDS)
