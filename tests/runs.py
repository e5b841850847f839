"""A short LoRA training run on the tiny LLaVA, shared by the resume and checkpoint tests: its data, its settings
and a callback that stops it where a crash would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiny import write_conversations, write_images
from transformers import TrainerCallback

MAX_STEPS = 6  # 12 samples, batch 2 x accumulation 2: 3 optimizer steps per epoch; checkpoints at 2, 4, 6; vd from 3


class StopAt(TrainerCallback):
    """Ends training after optimizer step `step` (as a crash right after a checkpoint would); records the steps run."""

    def __init__(self, step: int | None = None) -> None:
        self.step, self.steps = step, []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def write_run_data(path: Path) -> Path:
    """12 two-turn conversations with their images under `path`."""
    write_conversations(path / "data.json", write_images(path / "images", 12), turns=2)
    return path


def run_overrides(tiny_dir: Path, data: Path, output_dir: Path, **changes: Any) -> dict[str, Any]:
    """`vdtrain train` fields of the run: checkpoints every 2 steps, re-weighting active from half way."""
    return {
        "model_name_or_path": str(tiny_dir),
        "data_path": str(data / "data.json"),
        "image_folder": str(data / "images"),
        "output_dir": str(output_dir),
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": 128,
        "seed": 7,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "max_steps": MAX_STEPS,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1e-2,
        "warmup_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        "logging_steps": 1,
        "vd_weighting": "neg",
        "vd_temperature": 1.0,
        "vd_start": 0.5,
        **changes,
    }
