"""Every recipe under `recipes/` parses, builds a trainer on a tiny model, and holds Table 5.8's hyper-parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny import write_conversations, write_images

from vdtrain.commands.train import load_config
from vdtrain.training.run import build_trainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TRAINING_RECIPES = sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name != "accelerate")

# Table 5.8 (thesis): seed, LoRA rank/alpha/dropout, per-device batch, accumulation, ZeRO stage, lr, projector lr.
TABLE_5_8 = {
    "llava-1.5-7b": dict(lora_r=128, lora_alpha=256, per_device_train_batch_size=16, zero=2, lr=2e-4, projector=2e-5),
    "llava-1.5-13b": dict(lora_r=128, lora_alpha=256, per_device_train_batch_size=16, zero=3, lr=2e-4, projector=2e-5),
    "paligemma-3b": dict(lora_r=64, lora_alpha=128, per_device_train_batch_size=16, zero=2, lr=1e-4, projector=1e-5),
    "bunny-v1.1-8b": dict(lora_r=128, lora_alpha=256, per_device_train_batch_size=8, zero=3, lr=2e-4, projector=2e-5),
}
SHARED = dict(seed=42, lora_dropout=0.05, gradient_accumulation_steps=2, warmup_steps=0.03, weight_decay=0.0)
# variant -> (vd_weighting, vd_start, vd_eos_selective); the pure-MLE and EOS recipes never run the noisy pass.
VARIANTS = {
    "mle": ("none", 1.0, False),
    "eos": ("none", 1.0, True),
    "vd-neg": ("neg", 0.5, False),
    "vd-pos": ("pos", 0.5, False),
}
ALL, CONTINUED = tuple(VARIANTS), ("mle", "eos", "vd-neg")
# Table 5.1: every model from its pre-trained checkpoint, four variants; Table 5.2: continued, three variants;
# Table 5.3: vanilla training on a filtered Instruct-150k; Table 5.7: the LLaVA-Mix subset, three variants.
EXPECTED = {
    "llava-1.5-7b": {
        "detail23k": ALL,
        "instruct150k": ALL,
        "continue-detail23k": CONTINUED,
        "instruct150k-filtered": ("mle",),
        "mix264k": CONTINUED,
    },  # fmt: skip
    "llava-1.5-13b": {"detail23k": ALL, "continue-detail23k": CONTINUED},
    "paligemma-3b": {"detail23k": ALL, "continue-detail23k": CONTINUED},
    "bunny-v1.1-8b": {"svit71k": ALL, "continue-svit71k": CONTINUED},
}


def _variant(path: Path) -> str:
    return next(v for v in sorted(VARIANTS, key=len, reverse=True) if path.stem.endswith(v))


def test_recipe_set_is_complete():
    expected = {
        f"{model}/{experiment}-{variant}.yaml"
        for model, experiments in EXPECTED.items()
        for experiment, variants in experiments.items()
        for variant in variants
    }
    assert {str(p.relative_to(RECIPES)) for p in TRAINING_RECIPES} == expected


@pytest.mark.parametrize("path", TRAINING_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_matches_table_5_8(path: Path):
    model_args, data_args, args = load_config(path, {"use_cpu": True})  # bf16 on a CPU-only machine needs it
    table, variant = TABLE_5_8[path.parent.name], _variant(path)
    continued = path.stem.startswith("continue-")
    first_line = path.read_text().splitlines()[0]
    relative = path.relative_to(RECIPES.parent)
    assert first_line == (
        f"# accelerate launch --config_file recipes/accelerate/zero{table['zero']}.yaml -m vdtrain train {relative}"
    )
    assert (model_args.lora_r, model_args.lora_alpha) == (table["lora_r"], table["lora_alpha"])
    assert model_args.lora_dropout == SHARED["lora_dropout"] and model_args.dtype == "bfloat16"
    assert args.per_device_train_batch_size == table["per_device_train_batch_size"]
    assert args.learning_rate == table["lr"] and args.vd_projector_lr == table["projector"]
    for name in ("seed", "gradient_accumulation_steps", "warmup_steps", "weight_decay"):
        assert getattr(args, name) == SHARED[name], name
    assert args.bf16 and args.optim == "adamw_torch" and args.deepspeed is None
    assert args.num_train_epochs == (1 if continued else 2)
    scheme, start, eos = VARIANTS[variant]
    assert (args.vd_weighting, args.vd_start, args.vd_eos_selective, args.vd_noise_step) == (scheme, start, eos, 900)
    if scheme != "none":  # Table 5.1: tau 0.5; Table 5.2: tau 1.0, 0.5 for PaliGemma
        tau = 1.0 if continued and path.parent.name != "paligemma-3b" else 0.5
        assert args.vd_temperature == tau
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": True}
    assert args.output_dir == f"outputs/{path.parent.name}/{path.stem}"
    assert data_args.data_path.startswith("data/") and data_args.image_folder.split("/")[0] == "data"


@pytest.mark.parametrize("path", TRAINING_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_builds_a_trainer(path: Path, tiny_llava_dir: Path, tmp_path: Path):
    names = write_images(tmp_path / "images", 2)
    write_conversations(tmp_path / "data.json", names)
    overrides = dict(
        model_name_or_path=str(tiny_llava_dir),
        data_path=str(tmp_path / "data.json"),
        image_folder=str(tmp_path / "images"),
        output_dir=str(tmp_path / "out"),
        bf16=False,
        use_cpu=True,
        deepspeed=None,
        max_steps=2,
        report_to="none",
        dataloader_num_workers=0,
        dtype="float32",
    )
    trainer = build_trainer(*load_config(path, overrides))
    assert trainer.args.vd_pixel_key == "pixel_values" and trainer.args.vd_projector_lr is not None
    saved = set(trainer.model.peft_config["default"].modules_to_save or ())
    assert saved == {"multi_modal_projector"}
    learning_rates = {group["lr"] for group in trainer.create_optimizer().param_groups}
    assert learning_rates == {trainer.args.learning_rate, trainer.args.vd_projector_lr}


@pytest.mark.parametrize("stage", [2, 3])
def test_launch_configs(stage: int):
    accelerate = yaml.safe_load((RECIPES / "accelerate" / f"zero{stage}.yaml").read_text())
    assert accelerate["distributed_type"] == "DEEPSPEED" and accelerate["num_processes"] == 4
    ds_path = RECIPES.parent / accelerate["deepspeed_config"]["deepspeed_config_file"]
    ds = json.loads(ds_path.read_text())
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["bf16"]["enabled"] == "auto"
    for key in ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps"):
        assert ds[key] == "auto"
    assert "optimizer" not in ds and "scheduler" not in ds  # the Trainer builds them (projector lr group)
    if stage == 2:
        assert ds["zero_optimization"]["overlap_comm"] and ds["zero_optimization"]["contiguous_gradients"]
    else:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    ddp = yaml.safe_load((RECIPES / "accelerate" / "ddp.yaml").read_text())
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["num_processes"] == 4 and ddp["mixed_precision"] == "bf16"
