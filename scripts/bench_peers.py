"""Step time and peak memory of vdtrain beside the trainers people already run, on one model and one batch.

Variants (each a `compute_loss` + `backward` of its own trainer on the same model and batch, no optimizer step):
HF `Trainer`; TRL `SFTTrainer` (fused LM head); `VDSFTTrainer` before and after `vd_start`; `VDTrainer` before
`vd_start` with the memory-light loss (logits at supervised positions only, the default) and with the Trainer's own
loss (`vd_masked_logits=False`), and after `vd_start`. Step times are medians of interleaved rounds in this process,
as ratios to HF `Trainer`. With `--memory`, each variant also runs in a fresh process (glibc's mmap threshold pinned
at 64 KiB so the resident set follows the live tensors) and reports the growth of its peak resident set during one
step over the resident set before it (Linux `VmHWM`, reset through /proc/self/clear_refs), gradients preallocated.

Shapes (Llama language model under a small CLIP tower, batch 2 x 512 tokens, 16 image tokens, the last 256 supervised):
`llava-7b`: 8 x 512, vocab 4096: LLaVA-1.5-7B's hidden/vocab proportion (4096 / 32000) and lm_head share;
`vocab-32k`: 8 x 512, vocab 32000: LLaVA's real vocabulary on a narrow model (lm_head-dominated);
`paligemma-3b`: 8 x 512, vocab 64304: PaliGemma-3B's proportion (2048 / 257216).
Usage: `python scripts/bench_peers.py [--shape llava-7b vocab-32k paligemma-3b] [--memory] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from bench_overhead import IMAGE, PATCH  # one LLaVA shape for both benchmarks
from bench_overhead import build_model as llava_model
from datasets import Dataset
from transformers import (
    LlavaForConditionalGeneration,
    Trainer,
    TrainingArguments,
)
from trl import SFTConfig, SFTTrainer

from vdtrain import VDTrainer, VDTrainingArguments
from vdtrain.demo.model import SPECIAL_TOKENS, bpe_tokenizer
from vdtrain.integrations.trl import VDSFTConfig, VDSFTTrainer
from vdtrain.keys import LOSS_ONLY_KEYS

SHAPES = {"llava-7b": (8, 512, 4096), "vocab-32k": (8, 512, 32000), "paligemma-3b": (8, 512, 64304)}
VARIANTS = (
    "HF Trainer",
    "TRL SFTTrainer",
    "VDSFTTrainer before vd_start",
    "VDSFTTrainer active",
    "VDTrainer before vd_start",
    "VDTrainer before, Trainer loss",
    "VDTrainer active",
)


def build_model(layers: int, hidden: int, vocab: int) -> LlavaForConditionalGeneration:
    """`bench_overhead.py`'s LLaVA-shaped model with random weights (seeded), in training mode."""
    torch.manual_seed(0)
    return llava_model(hidden, layers, vocab).train()


def make_batch(vocab: int, batch: int = 2, length: int = 512, response: int = 256) -> dict[str, torch.Tensor]:
    """One image per sequence after the first token; the last `response` tokens supervised, the last one closes
    the turn."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab - 2, (batch, length), generator=generator)
    input_ids[:, 1 : 1 + (IMAGE // PATCH) ** 2] = vocab - 1
    labels = input_ids.clone()
    labels[:, : length - response] = -100
    end_of_turn = torch.zeros(batch, length, dtype=torch.bool)
    end_of_turn[:, -1] = True
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "labels": labels,
        "pixel_values": torch.randn(batch, 3, IMAGE, IMAGE, generator=generator),
        "end_of_turn_mask": end_of_turn,
        "has_image": torch.ones(batch, dtype=torch.bool),
    }


def build_trainers(model, folder: str, names=VARIANTS) -> dict[str, Trainer]:
    """Each variant's trainer around the same model (TRL's fused head is active only when asked for)."""
    common = dict(output_dir=folder, report_to="none", use_cpu=True, disable_tqdm=True)
    sft = dict(gradient_checkpointing=False, max_length=None, dataset_kwargs={"skip_prepare_dataset": True})
    tokenizer = bpe_tokenizer(["a red cat on a blue mat."] * 4, 20, SPECIAL_TOKENS)
    dataset = Dataset.from_list([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}])
    trl_kwargs = dict(train_dataset=dataset, processing_class=tokenizer)
    factories = {
        "HF Trainer": lambda: Trainer(model=model, args=TrainingArguments(**common)),
        "TRL SFTTrainer": lambda: SFTTrainer(model=model, args=SFTConfig(**common, **sft), **trl_kwargs),
        "VDSFTTrainer before vd_start": lambda: VDSFTTrainer(
            model=model, args=VDSFTConfig(vd_start=1.0, **common, **sft), **trl_kwargs
        ),
        "VDSFTTrainer active": lambda: VDSFTTrainer(
            model=model, args=VDSFTConfig(vd_start=0.0, **common, **sft), **trl_kwargs
        ),
        "VDTrainer before vd_start": lambda: VDTrainer(model=model, args=VDTrainingArguments(vd_start=1.0, **common)),
        "VDTrainer before, Trainer loss": lambda: VDTrainer(
            model=model, args=VDTrainingArguments(vd_start=1.0, vd_masked_logits=False, **common)
        ),
        "VDTrainer active": lambda: VDTrainer(model=model, args=VDTrainingArguments(vd_start=0.0, **common)),
    }
    trainers = {name: factories[name]() for name in names}
    for trainer in trainers.values():
        trainer.state.max_steps = 100
    return trainers


def step(trainer: Trainer, model, batch: dict) -> None:
    """One forward + backward through the trainer's own `compute_loss`."""
    inputs = batch if hasattr(trainer, "vd_active") else {k: v for k, v in batch.items() if k not in LOSS_ONLY_KEYS}
    n_items = batch["labels"][:, 1:].ne(-100).sum()
    trainer.compute_loss(model, dict(inputs), num_items_in_batch=n_items).backward()


def peak_growth(trainer: Trainer, model, batch: dict) -> int:
    """Bytes by which the peak resident set of one step exceeds the resident set before it."""
    step(trainer, model, batch)  # allocates the gradients; the measured step reuses them
    model.zero_grad(set_to_none=False)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to the current resident set
    before = _status("VmRSS")
    step(trainer, model, batch)
    return (_status("VmHWM") - before) * 1024


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(rf"{field}:\s+(\d+)", handle.read()).group(1))  # KiB


def timings(shape: str, repeats: int) -> dict[str, float]:
    """Median seconds per step of every variant, rounds interleaved, after one warm-up round."""
    model = build_model(*SHAPES[shape])
    batch = make_batch(SHAPES[shape][2])
    with tempfile.TemporaryDirectory() as folder:
        trainers = build_trainers(model, folder)
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for round_ in range(repeats + 1):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                step(trainer, model, batch)
                model.zero_grad(set_to_none=False)
                if round_:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def memory(shape: str) -> dict[str, int]:
    """Peak growth of each variant, each in a fresh process."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    peaks = {}
    for name in VARIANTS:
        command = [sys.executable, __file__, "--shape", shape, "--memory-variant", name]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        peaks[name] = json.loads(out.strip().splitlines()[-1])["peak"]
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also the peak resident set of one step of each")
    parser.add_argument("--no-time", action="store_true", help="memory only")
    parser.add_argument("--memory-variant", help=argparse.SUPPRESS)  # internal: one variant in this process
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    if args.memory_variant:
        shape = args.shape[0]
        model = build_model(*SHAPES[shape])
        with tempfile.TemporaryDirectory() as folder:
            trainer = build_trainers(model, folder, names=(args.memory_variant,))[args.memory_variant]
            print(json.dumps({"peak": peak_growth(trainer, model, make_batch(SHAPES[shape][2]))}))
        return
    for shape in args.shape:
        layers, hidden, vocab = SHAPES[shape]
        print(f"\n{shape}: Llama {layers}x{hidden}, vocab {vocab}, batch 2 x 512 (256 supervised), CPU float32")
        seconds = {} if args.no_time else timings(shape, args.repeats)
        peaks = memory(shape) if args.memory else {}
        print(f"{'variant':<32}{'step s':>9}{'x HF':>7}{'peak MiB':>11}{'x HF':>7}")
        for name in VARIANTS:
            row = f"{name:<32}"
            if seconds:
                row += f"{seconds[name]:>9.3f}{seconds[name] / seconds['HF Trainer']:>7.2f}"
            else:
                row += " " * 16
            if peaks:
                row += f"{peaks[name] / 2**20:>11.1f}{peaks[name] / peaks['HF Trainer']:>7.2f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
