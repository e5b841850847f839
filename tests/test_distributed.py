"""Multi-process training on CPU: DDP equals one process at the same global batch; ZeRO-2/3 runs save adapters.

All tests here are `slow`: each launches 1-2 fresh Python processes (and DeepSpeed JIT-compiles an op on its
first start, ~80 s, cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from tiny import write_conversations, write_images

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(launcher: list[str], config: dict, folder: Path, timeout: int = 600) -> Path:
    """Write `config` as a recipe, run `launcher -m vdtrain train recipe.yaml`, return the output directory."""
    _launched(launcher, config, folder, timeout)
    return Path(config["output_dir"])


def _launched(launcher: list[str], config: dict, folder: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`_launch`, returning the finished process (its stderr holds every rank's log)."""
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    run = subprocess.run(
        [*launcher, "-m", "vdtrain", "train", str(recipe)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"{' '.join(launcher[:4])}: {time.perf_counter() - start:.0f} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return run


def _torchrun(nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={_free_port()}",
    ]


def _logs(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("distributed-data")
    write_conversations(path / "data.json", write_images(path / "images", 8), turns=2)
    return path


def _config(tiny_dir: Path, data: Path, name: str, **overrides) -> dict:
    defaults = dict(
        model_name_or_path=str(tiny_dir),
        data_path=str(data / "data.json"),
        image_folder=str(data / "images"),
        output_dir=str(data / name),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=128,
        seed=11,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        max_steps=MAX_STEPS,
        gradient_accumulation_steps=1,
        learning_rate=1e-2,
        vd_projector_lr=1e-3,
        save_strategy="steps",
        save_steps=MAX_STEPS,
        logging_steps=1,
        vd_start=0.0,
    )
    return {**defaults, **overrides}


def test_ddp_two_processes_equal_one(tiny_llava_dir: Path, data_dir: Path):
    # Re-weighting on every step (vd_start 0, tau 1): the noise of each sample is seeded from its position in the
    # global batch, so 2 processes x batch 2 must reproduce 1 process x batch 4 to float tolerance. This checks data
    # sharding, the noise seeding and the loss normalisation across ranks.
    same = dict(use_cpu=True, vd_weighting="neg", vd_temperature=1.0)
    one = _launch(
        _torchrun(1), _config(tiny_llava_dir, data_dir, "one", per_device_train_batch_size=4, **same), data_dir
    )
    two = _launch(
        _torchrun(2), _config(tiny_llava_dir, data_dir, "two", per_device_train_batch_size=2, **same), data_dir
    )
    logs_one, logs_two = _logs(one), _logs(two)
    assert [e["step"] for e in logs_two] == [e["step"] for e in logs_one] == list(range(1, MAX_STEPS + 1))
    for a, b in zip(logs_one, logs_two):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
        assert a["vd_weight_max"] == pytest.approx(b["vd_weight_max"], abs=1e-3) and a["vd_weight_max"] > 1.0
    weights_one, weights_two = (load_file(d / "adapter_model.safetensors") for d in (one, two))
    assert weights_one.keys() == weights_two.keys()
    for name in weights_one:
        assert torch.allclose(weights_one[name], weights_two[name], atol=1e-5), name
    assert any("lora_B" in name and weights_one[name].abs().sum() > 0 for name in weights_one)  # it trained


def test_two_processes_build_the_examples_once(tiny_llava_dir: Path, data_dir: Path, tmp_path: Path):
    """The main process tokenizes and checks the data into the cache; the other rank loads what it wrote."""
    config = _config(tiny_llava_dir, data_dir, "cache-once", use_cpu=True, per_device_train_batch_size=2)
    config.update(max_steps=1, save_strategy="no", dataset_cache_dir=str(tmp_path / "cache"), dataset_num_proc=2)
    run = _launched(_torchrun(2), config, data_dir)
    assert run.stderr.count("examples built into") == 1 and run.stderr.count("examples reused from") == 1
    assert run.stderr.count(" 8 training sequences") == 2 and "examples built into" in run.stderr
    assert len(list((tmp_path / "cache").glob("examples-*.arrow"))) == 2  # one build, in dataset_num_proc shards


def _check_adapter(output_dir: Path, tiny_dir: Path) -> None:
    from vdtrain.models.loading import load_for_inference

    # DeepSpeed really ran, over two ranks: its checkpoint holds one ZeRO optimizer partition per rank.
    assert (
        len(
            list(
                (output_dir / f"checkpoint-{MAX_STEPS}" / f"global_step{MAX_STEPS}").glob(
                    "*zero_pp_rank_*optim_states.pt"
                )
            )
        )
        == 2
    )
    weights = load_file(output_dir / "adapter_model.safetensors")
    assert weights and all(tensor.numel() > 0 for tensor in weights.values())  # ZeRO-3 saves empty tensors if misset
    assert any("multi_modal_projector" in name for name in weights)
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in weights.items())
    model, processor, _ = load_for_inference(tiny_dir, output_dir)
    batch = processor(text="<image> describe", images=Image.new("RGB", (32, 32)), return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


def test_zero2_torchrun_deepspeed_field(tiny_llava_dir: Path, data_dir: Path):
    # use_cpu (CPU machines only): without a GPU, accelerate's state otherwise counts one process, and the "auto"
    # train_batch_size comes out a world-size too small.
    config = _config(
        tiny_llava_dir,
        data_dir,
        "zero2",
        deepspeed=str(REPO / "recipes/deepspeed/zero2.json"),
        use_cpu=True,
        vd_weighting="neg",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
    )
    out = _launch(_torchrun(2), config, data_dir)
    assert all("vd_mean" in entry for entry in _logs(out))
    _check_adapter(out, tiny_llava_dir)


def test_zero3_accelerate_recipe_launch(tiny_llava_dir: Path, data_dir: Path):
    # The recipes' own launch path: the accelerate config points DeepSpeed at recipes/deepspeed/zero3.json, whose
    # "auto" values the Trainer fills; activation checkpointing (reentrant) as in the recipes.
    checkpointing = dict(activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": True})
    config = _config(
        tiny_llava_dir,
        data_dir,
        "zero3",
        use_cpu=True,
        vd_weighting="neg",
        per_device_train_batch_size=2,
        **checkpointing,
    )
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "recipes/accelerate/zero3.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        str(_free_port()),
    ]
    out = _launch(launcher, config, data_dir)
    assert all("vd_mean" in entry for entry in _logs(out))
    _check_adapter(out, tiny_llava_dir)
