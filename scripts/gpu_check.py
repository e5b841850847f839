"""One-command GPU check of vdtrain at LLaVA-1.5-7B shapes (random weights, synthetic data, nothing downloaded).

    python scripts/gpu_check.py                # one H100/H200: about 5 min; writes gpu_check.json + gpu_check.md
    python scripts/gpu_check.py --tiny         # the same code paths on CPU at toy sizes (tests/test_gpu_check.py)
    python scripts/gpu_check.py --dry          # parameter count of the 7B model, built on the meta device

Parts, each guarded (a failing part records its error and the others still run):
  step      LoRA r128 on the language model, projector trained, activation checkpointing, batch 8 x 1024 tokens
            (576 image tokens, 350 supervised): step time and peak memory of the vanilla step, the active VD step
            and the vanilla step plus one no-grad forward (the method's limit, SPEC section 7), with ratios.
  zero2/3   `VDTrainer.train()` under DeepSpeed ZeRO-2 / ZeRO-3 (recipes/deepspeed/*.json) on one GPU, the noisy
            pass active from step 0; checks the saved adapter is non-empty and trained. Each in a fresh process.
  filter    `score_batch` and `score_dataset` (the `vdtrain filter score` path) against two bare no-grad forwards.
  generate  `generate_answers` at batch 16 (left padding, KV cache) against one question at a time.
The model is built directly on the device in bf16 (`torch.device` context), never first on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny.py: the offline BPE tokenizer, random images, the word list
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_overhead.py: the CPU resident-set sampler

from bench_overhead import PeakResidentSet  # noqa: E402
from tiny import WORDS, tiny_tokenizer, write_images  # noqa: E402

PARTS = ("step", "zero2", "zero3", "filter", "generate")
LLAVA_7B_PARAMS = 7_063_427_072  # llava-hf/llava-1.5-7b-hf: Llama-2-7B (vocab 32064) + CLIP ViT-L/14-336 + MLP


@dataclass(frozen=True)
class Shape:
    """Model and workload sizes of one mode."""

    vision: dict
    text: dict
    image: int
    patch: int
    batch: int = 8
    length: int = 1024
    supervised: int = 350
    lora_r: int = 128
    repeats: int = 5
    train_steps: int = 4
    filter_samples: int = 32
    filter_batch: int = 16
    filter_words: int = 160
    filter_rounds: int = 3
    gen_samples: int = 16
    gen_batch: int = 16
    gen_new_tokens: int = 32
    zero_timeout: int = 210  # seconds per ZeRO process; also bounded by what is left of --budget
    extra: dict = field(default_factory=dict)


FULL = Shape(
    vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                projection_dim=768),
    text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
              num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5),
    image=336, patch=14,
)  # fmt: skip
TINY = Shape(
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=512, max_position_embeddings=512),
    image=32, patch=8, batch=2, length=64, supervised=24, lora_r=8, repeats=2, train_steps=2, filter_samples=4,
    filter_batch=2, filter_words=40, filter_rounds=1, gen_samples=4, gen_batch=4, gen_new_tokens=4, zero_timeout=600,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- model and data
def build_processor(shape: Shape) -> Any:
    """A `LlavaProcessor` at the shape's image size around the offline BPE tokenizer of the tests."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": shape.image}, crop_size={"height": shape.image, "width": shape.image}
    )
    return LlavaProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer(), patch_size=shape.patch,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip


def build_config(shape: Shape, tokenizer: Any) -> Any:
    """LLaVA-1.5 config: CLIP tower (second-to-last layer, CLS dropped), 2-layer GELU MLP projector, Llama."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(**shape.vision, image_size=shape.image, patch_size=shape.patch)
    text = LlamaConfig(**shape.text, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(
        "<image>"), image_seq_length=(shape.image // shape.patch) ** 2, vision_feature_select_strategy="default",
        vision_feature_layer=-2, projector_hidden_act="gelu")  # fmt: skip


def build_model(config: Any, device: str | torch.device, dtype: torch.dtype) -> Any:
    """Random-weight `LlavaForConditionalGeneration` created on `device` in `dtype` (7B on a GPU: no CPU copy)."""
    from transformers import LlavaForConditionalGeneration

    with torch.device(device):
        return LlavaForConditionalGeneration._from_config(config, dtype=dtype)


def train_batch(shape: Shape, config: Any, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`shape.batch` sequences of `shape.length` tokens as `VDDataCollator` makes them: system prompt, image tokens,
    two question/answer turns; the answers (`shape.supervised` tokens) supervised, their last tokens end-of-turn."""
    batch, length, n_image = shape.batch, shape.length, config.image_seq_length
    image_id, vocab = config.image_token_index, config.text_config.vocab_size
    prefix = min(35, length // 16)
    rest = length - prefix - n_image - shape.supervised
    if rest < 2:
        raise ValueError(f"{length} tokens do not hold {n_image} image and {shape.supervised} supervised tokens")
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, vocab, (batch, length), generator=generator)
    input_ids[input_ids == image_id] = image_id + 1 if image_id + 1 < vocab else 3
    input_ids[:, 0] = config.text_config.bos_token_id
    input_ids[:, prefix : prefix + n_image] = image_id
    labels = torch.full_like(input_ids, -100)
    end_of_turn = torch.zeros(batch, length, dtype=torch.bool)
    start = prefix + n_image + rest // 2
    for size, gap in ((shape.supervised // 2, rest - rest // 2), (shape.supervised - shape.supervised // 2, 0)):
        labels[:, start : start + size] = input_ids[:, start : start + size]
        end_of_turn[:, start + size - 1] = True
        start += size + gap
    pixels = torch.randn(batch, 3, shape.image, shape.image, generator=generator)
    tensors = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
               "end_of_turn_mask": end_of_turn, "has_image": torch.ones(batch, dtype=torch.bool)}  # fmt: skip
    return {**{k: v.to(device) for k, v in tensors.items()}, "pixel_values": pixels.to(device, dtype)}


def make_records(names: list[str], words: int) -> list[dict]:
    """LLaVA-format conversations of about `words` words in 40-word question/answer turns, one image each."""
    import random

    rng = random.Random(0)
    records = []
    for index, name in enumerate(names):
        turns: list[dict] = []
        while 20 * len(turns) < words:
            question = " ".join(rng.choices(WORDS, k=12)) + "?"
            turns += [{"from": "human", "value": ("<image>\n" if not turns else "") + question},
                      {"from": "gpt", "value": " ".join(rng.choices(WORDS, k=28)) + "."}]  # fmt: skip
        records.append({"id": f"g{index}", "image": name, "conversations": turns})
    return records


# ---------------------------------------------------------------------------------------------- measuring
class Meter:
    """Device-aware timing and peak memory: the CUDA allocator's peak above what is held, else resident-set growth."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def peak(self, fn) -> tuple[float, float]:
        """`(growth, absolute)` peak MiB while `fn` runs (CPU: the resident set; absolute = the process's)."""
        if not self.cuda:
            with PeakResidentSet() as peak:
                fn()
            return peak.growth / 2**20, peak.peak / 2**20
        self.sync()
        held = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        self.sync()
        top = torch.cuda.max_memory_allocated()
        return (top - held) / 2**20, top / 2**20


def ratio(numerator: float, denominator: float) -> float | None:
    """`numerator / denominator`, None where the denominator is not positive (a CPU peak below page resolution)."""
    return numerator / denominator if denominator > 0 else None


def interleaved(meter: Meter, variants: dict, repeats: int, before=None) -> dict[str, float]:
    """Median seconds of each variant over `repeats` rounds, variants taking turns within a round (one warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeats + 1):
        for name, fn in variants.items():
            if before is not None:
                before()
            seconds = meter.time(fn)
            if round_:
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------------------------------------- the parts
def part_step(shape: Shape, model: Any, processor: Any, device: str, work: Path) -> dict:
    """(a) vanilla step, active VD step and vanilla + one no-grad forward, LoRA + activation checkpointing."""
    from vdtrain import VDTrainer, VDTrainingArguments
    from vdtrain.config import ModelArguments
    from vdtrain.modeling import prepare_for_training
    from vdtrain.models import get_adapter
    from vdtrain.trainer import EXTRA_KEYS

    adapter = get_adapter(model, processor)
    lora = ModelArguments(model_name_or_path="random", lora_r=shape.lora_r, lora_alpha=2 * shape.lora_r)
    model = prepare_for_training(model, adapter, lora, gradient_checkpointing=True)
    reentrant = {"use_reentrant": True}  # as the recipes (PEFT + ZeRO-3 need it)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=reentrant)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=reentrant)
    model.train()
    batch = train_batch(shape, model.config, device, model.dtype)
    n_items = batch["labels"][:, 1:].ne(-100).sum()
    targets_at = torch.nn.functional.pad(batch["labels"][:, 1:] != -100, (0, 1), value=False)
    plain = {k: v for k, v in batch.items() if k not in (*EXTRA_KEYS, "labels")}
    common = dict(output_dir=str(work / "step"), report_to="none", use_cpu=device == "cpu", seed=42)
    trainers = {}
    for name, start in (("vanilla", 1.0), ("vd_active", 0.0)):
        trainers[name] = VDTrainer(model=model, args=VDTrainingArguments(vd_start=start, **common),
                                   projector_modules=adapter.projector_modules)  # fmt: skip
        trainers[name].state.max_steps = 100
    assert trainers["vd_active"].vd_active() and not trainers["vanilla"].vd_active()
    losses: dict[str, float] = {}

    def step(name: str):
        def run() -> None:
            loss = trainers[name].compute_loss(model, dict(batch), num_items_in_batch=n_items)
            loss.backward()
            losses[name] = float(loss.detach())

        return run

    def vanilla_plus_forward() -> None:
        step("vanilla")()
        with torch.no_grad():  # the noisy pass as the trainer runs it: eval mode, logits at supervised positions
            model.eval()
            model(**plain, logits_to_keep=targets_at)
            model.train()

    variants = {
        "vanilla": step("vanilla"),
        "vd_active": step("vd_active"),
        "vanilla_plus_forward": vanilla_plus_forward,
    }
    meter = Meter(device)
    clear = lambda: model.zero_grad(set_to_none=True)  # noqa: E731
    seconds = interleaved(meter, variants, shape.repeats, before=clear)
    growth, total = {}, {}
    for name, fn in variants.items():
        clear()
        growth[name], total[name] = meter.peak(fn)
    clear()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "step_s": seconds, "peak_mib": growth, "peak_total_mib": total, "loss": losses,
        "vd_vs_vanilla_time": ratio(seconds["vd_active"], seconds["vanilla"]),
        "vd_vs_limit_time": ratio(seconds["vd_active"], seconds["vanilla_plus_forward"]),
        "limit_vs_vanilla_time": ratio(seconds["vanilla_plus_forward"], seconds["vanilla"]),
        "vd_vs_vanilla_memory": ratio(growth["vd_active"], growth["vanilla"]),
        "trainable_params": trainable, "tokens_per_batch": int(batch["input_ids"].numel()),
        "supervised_per_sequence": int(n_items) // shape.batch, "image_tokens": int(model.config.image_seq_length),
    }  # fmt: skip


def part_filter(shape: Shape, model: Any, processor: Any, device: str, work: Path) -> dict:
    """(c) the scorer's hot path and `score_dataset` against two bare masked no-grad forwards over the same batches."""
    from vdtrain.filtering.scoring import collate_samples, prepare_sample, score_batch, score_dataset
    from vdtrain.models import get_adapter
    from vdtrain.noise import add_diffusion_noise

    model.eval()
    adapter = get_adapter(model, processor)
    folder = work / "filter"
    names = write_images(folder / "images", shape.filter_samples, size=shape.image)
    records = make_records(names, shape.filter_words)
    (folder / "data.json").write_text(json.dumps(records))
    prepared = [prepare_sample(r, i, adapter, processor, folder / "images", max_length=4096, seed=42)
                for i, r in enumerate(records)]  # fmt: skip
    errors = [s["error"] for s in prepared if "error" in s]
    if errors:
        raise RuntimeError(f"sample preparation failed: {errors[0]}")
    pad, size = processor.tokenizer.pad_token_id, shape.filter_batch
    batches = [collate_samples(prepared[i : i + size], pad) for i in range(0, len(prepared), size)]
    workers = 4 if device.startswith("cuda") else 0

    @torch.no_grad()
    def limit() -> None:
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch["inputs"].items() if k != "labels"}
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            mask = torch.nn.functional.pad(batch["inputs"]["labels"][:, 1:] != -100, (0, 1), value=False).to(device)
            model(**inputs, logits_to_keep=mask)
            noised = add_diffusion_noise(inputs["pixel_values"].float(), 900, noise=batch["noise"].to(device))
            model(**{**inputs, "pixel_values": noised.to(model.dtype)}, logits_to_keep=mask)

    def hot_path() -> None:
        for batch in batches:
            score_batch(model, batch, noise_step=900, pixel_key=adapter.pixel_key).tolist()

    runs = iter(range(10**6))

    def end_to_end() -> None:
        score_dataset(model, processor, folder / "data.json", folder / f"out{next(runs)}", image_folder=folder /
                      "images", adapter=adapter, batch_size=size, num_workers=workers, progress=False)  # fmt: skip

    seconds = interleaved(Meter(device), {"limit": limit, "score_batch": hot_path, "score_dataset": end_to_end},
                          shape.filter_rounds)  # fmt: skip
    scored = len((folder / "out0" / "scores.jsonl").read_text().splitlines())
    lengths = [len(e.input_ids) for s in prepared for e in s["examples"]]
    supervised = [e.num_supervised for s in prepared for e in s["examples"]]
    n = shape.filter_samples
    return {
        "samples_per_s": {name: n / value for name, value in seconds.items()},
        "score_batch_vs_limit": ratio(seconds["limit"], seconds["score_batch"]),
        "score_dataset_vs_limit": ratio(seconds["limit"], seconds["score_dataset"]),
        "samples": n, "batch_size": size, "scored": scored, "num_workers": workers,
        "tokens_per_sample": sum(lengths) / len(lengths), "supervised_per_sample": sum(supervised) / len(supervised),
    }  # fmt: skip


def part_generate(shape: Shape, model: Any, processor: Any, device: str, work: Path) -> dict:
    """(d) `generate_answers` at batch `gen_batch` (left padding, KV cache) against batch 1, greedy."""
    from vdtrain.evaluation.generate import DecodingOptions, generate_answers

    model.eval()
    folder = work / "generate"
    names = write_images(folder / "images", shape.gen_samples, seed=1, size=shape.image)
    questions = [
        {"question_id": f"q{i}", "image": name, "text": "describe this image " + " ".join(WORDS[: 3 * i])}
        for i, name in enumerate(names)
    ]  # fmt: skip  (different lengths: the batch is left-padded)
    options = DecodingOptions(max_new_tokens=shape.gen_new_tokens)

    def run(batch_size: int) -> float:
        output = folder / f"answers-b{batch_size}.jsonl"
        meter = Meter(device)
        return meter.time(lambda: generate_answers(model, processor, questions, output, image_folder=folder / "images",
                                                   options=options, batch_size=batch_size, overwrite=True,
                                                   progress=False))  # fmt: skip

    generate_answers(model, processor, questions[:2], folder / "warmup.jsonl", image_folder=folder / "images",
                     options=options, batch_size=2, overwrite=True, progress=False)  # fmt: skip
    batched, single = run(shape.gen_batch), run(1)
    answers = [[json.loads(line)["text"] for line in (folder / f"answers-b{b}.jsonl").read_text().splitlines()]
               for b in (shape.gen_batch, 1)]  # fmt: skip
    agree = sum(a == b for a, b in zip(*answers)) / len(questions)
    return {
        "samples_per_s": {"batched": shape.gen_samples / batched, "one_by_one": shape.gen_samples / single},
        "speedup": ratio(single, batched), "batch_size": shape.gen_batch, "samples": shape.gen_samples,
        "max_new_tokens": shape.gen_new_tokens, "answers": len(answers[0]), "same_answers_as_one_by_one": agree,
    }  # fmt: skip


class _StepTimes:
    """Trainer callback: wall time of each optimizer step (device-synchronised)."""

    def __init__(self, meter: Meter) -> None:
        from transformers import TrainerCallback

        self.meter, self.times, self.start = meter, [], 0.0
        outer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                outer.meter.sync()
                outer.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                outer.meter.sync()
                outer.times.append(time.perf_counter() - outer.start)

        self.callback = Callback()


def part_zero(stage: int, shape: Shape, device: str, dtype: torch.dtype, work: Path) -> dict:
    """(b) `VDTrainer.train()` under ZeRO-`stage` (the recipes' JSON), noisy pass from step 0, then the saved adapter.

    Runs in its own process, launched by `main` with the single-process distributed environment DeepSpeed needs.
    """
    from safetensors.torch import load_file
    from transformers import default_data_collator

    from vdtrain import VDTrainer, VDTrainingArguments
    from vdtrain.config import ModelArguments
    from vdtrain.modeling import prepare_for_training
    from vdtrain.models import get_adapter

    processor = build_processor(shape)
    model = build_model(build_config(shape, processor.tokenizer), device, dtype)
    adapter = get_adapter(model, processor)
    lora = ModelArguments(model_name_or_path="random", lora_r=shape.lora_r, lora_alpha=2 * shape.lora_r)
    model = prepare_for_training(model, adapter, lora, gradient_checkpointing=True)
    batch = {k: v.cpu() for k, v in train_batch(shape, model.config, "cpu", dtype).items()}
    rows = [{k: v[i] for k, v in batch.items()} for i in range(shape.batch)] * shape.train_steps
    out = work / f"zero{stage}"
    args = VDTrainingArguments(
        output_dir=str(out), deepspeed=str(REPO / f"recipes/deepspeed/zero{stage}.json"), use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16, per_device_train_batch_size=shape.batch, gradient_accumulation_steps=1,
        max_steps=shape.train_steps, learning_rate=2e-4, projector_lr=2e-5, activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": True}, vd_start=0.0, logging_steps=1, save_strategy="no",
        report_to="none", remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0, seed=42,
    )  # fmt: skip
    meter = Meter(device)
    steps = _StepTimes(meter)
    trainer = VDTrainer(model=model, args=args, train_dataset=rows, data_collator=default_data_collator,
                        callbacks=[steps.callback], projector_modules=adapter.projector_modules)  # fmt: skip
    if meter.cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = (
        torch.cuda.max_memory_allocated() / 2**20 if meter.cuda else resource.getrusage(resource.RUSAGE_SELF)[2] / 1024
    )
    trainer.save_model(str(out))
    trainer.accelerator.wait_for_everyone()
    weights = load_file(out / "adapter_model.safetensors")
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    trainer.accelerator.end_training()
    return {
        "zero_stage": stage, "steps": trainer.state.global_step,
        "step_s": statistics.median(steps.times[1:] or steps.times),
        "peak_total_mib": peak, "losses": [entry["loss"] for entry in logs],
        "vd_active_steps": sum("vd_mean" in entry for entry in logs), "adapter_tensors": len(weights),
        "adapter_mib": (out / "adapter_model.safetensors").stat().st_size / 2**20,
        "adapter_empty_tensors": sum(t.numel() == 0 for t in weights.values()),
        "projector_saved": any("multi_modal_projector" in name for name in weights),
        "lora_b_trained": any("lora_B" in name and t.float().abs().sum() > 0 for name, t in weights.items()),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- driver
def guarded(fn, *args) -> dict:
    """`{"status": "ok", "seconds", **fn(*args)}`, or the error and the traceback's tail if `fn` raises."""
    start = time.perf_counter()
    try:
        result = {"status": "ok", **fn(*args)}
    except Exception as error:  # noqa: BLE001  (one broken part must not hide the others' numbers)
        result = {"status": "error", "error": f"{type(error).__name__}: {error}"[:2000],
                  "traceback": traceback.format_exc()[-4000:]}  # fmt: skip
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["seconds"] = time.perf_counter() - start
    return result


def zero_subprocess(stage: int, tiny: bool, work: Path, timeout: int) -> dict:
    """Run `part_zero` in a fresh process (DeepSpeed's global state and a hang stay there); its result JSON back."""
    result_path = work / f"zero{stage}.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": os.pathsep.join(
               filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    command = [sys.executable, __file__, "--zero-stage", str(stage), "--work", str(work), *(["--tiny"] * tiny)]
    try:
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise TimeoutError(f"ZeRO-{stage} run did not finish in {timeout} s: {str(error.stderr)[-2000:]}") from None
    if not result_path.exists():
        raise RuntimeError(f"ZeRO-{stage} process exited {run.returncode}: {(run.stdout + run.stderr)[-3000:]}")
    result = json.loads(result_path.read_text())
    if result.get("status") == "error":
        raise RuntimeError(result["error"])
    return {k: v for k, v in result.items() if k not in ("status", "seconds")}


def markdown(report: dict) -> str:
    """The Markdown table of a report."""
    parts = report["parts"]
    lines = [f"vdtrain gpu_check ({report['mode']}) on {report['device']}, torch {report['versions']['torch']}, "
             f"{report['total_s']:.0f} s", "", "| part | status | result |", "| --- | --- | --- |"]  # fmt: skip
    for name in PARTS:
        part = parts.get(name)
        if part is None:
            continue
        if part["status"] != "ok":
            lines.append(f"| {name} | **error** | {part['error'].splitlines()[0][:300]} |")
            continue
        try:
            text = _row(name, part)
        except (KeyError, TypeError, ValueError) as error:  # a report from another version: show what is there
            text = f"(cannot render: {error!r}) " + json.dumps({k: v for k, v in part.items() if k != "traceback"})
        lines.append(f"| {name} | ok ({part['seconds']:.0f} s) | {text} |")
    return "\n".join(lines) + "\n"


def num(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, or n/a for a ratio that could not be taken."""
    return "n/a" if value is None else format(value, spec)


def _row(name: str, part: dict) -> str:
    """The result cell of one part."""
    if name == "step":
        s, m, total = part["step_s"], part["peak_mib"], part["peak_total_mib"]["vd_active"]
        return (
            f"vanilla {s['vanilla']:.3f} s / +{m['vanilla']:.0f} MiB; VD active {s['vd_active']:.3f} s / "
            f"+{m['vd_active']:.0f} MiB; vanilla + 1 forward {s['vanilla_plus_forward']:.3f} s / "
            f"+{m['vanilla_plus_forward']:.0f} MiB. VD/vanilla time **{num(part['vd_vs_vanilla_time'], '.2f')}**, "
            f"VD/limit **{num(part['vd_vs_limit_time'], '.2f')}**, VD/vanilla memory "
            f"**{num(part['vd_vs_vanilla_memory'], '.2f')}** (VD peak {total:.0f} MiB in all)"
        )
    if name.startswith("zero"):
        return (
            f"{part['steps']} steps, {part['step_s']:.3f} s/step, peak {part['peak_total_mib']:.0f} MiB, "
            f"VD active on {part['vd_active_steps']} logged steps, adapter {part['adapter_tensors']} "
            f"tensors / {part['adapter_mib']:.0f} MiB, empty {part['adapter_empty_tensors']}, "
            f"projector {part['projector_saved']}, LoRA B trained {part['lora_b_trained']}"
        )
    sps = part["samples_per_s"]
    if name == "filter":
        return (
            f"limit {sps['limit']:.2f} samples/s; score_batch **{num(part['score_batch_vs_limit'], '.2f')}** of it, "
            f"score_dataset **{num(part['score_dataset_vs_limit'], '.2f')}** ({part['tokens_per_sample']:.0f} "
            f"tokens/sample, batch {part['batch_size']})"
        )
    return (
        f"batch {part['batch_size']}: {sps['batched']:.2f} samples/s, one by one {sps['one_by_one']:.2f}: "
        f"**x{num(part['speedup'], '.1f')}** ({part['max_new_tokens']} new tokens; same answers "
        f"{part['same_answers_as_one_by_one']:.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU, float32 (what the tests run)")
    parser.add_argument("--dry", action="store_true", help="only count the full model's parameters on meta")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--output", default="gpu_check.json", help="JSON report; the Markdown table goes beside it")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds the whole check may take (default: 460 full, none --tiny); the ZeRO processes "
                             "are stopped when it runs out and recorded as errors")  # fmt: skip
    parser.add_argument("--zero-stage", type=int, help=argparse.SUPPRESS)  # internal: one ZeRO run in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = TINY if args.tiny else FULL
    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    if args.dry:
        model = build_model(build_config(FULL, tiny_tokenizer()), "meta", torch.bfloat16)
        count = sum(p.numel() for p in model.parameters())
        print(f"LLaVA-1.5-7B-shaped model: {count:,} parameters (llava-hf/llava-1.5-7b-hf: {LLAVA_7B_PARAMS:,})")
        return
    if args.zero_stage is not None:
        work = Path(args.work)
        result = guarded(part_zero, args.zero_stage, shape, device, dtype, work)
        (work / f"zero{args.zero_stage}.json").write_text(json.dumps(result, indent=1))
        return
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run with --tiny on a CPU machine")
    import peft
    import transformers

    wanted = [name for name in args.parts.split(",") if name]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        raise SystemExit(f"gpu_check: unknown part(s) {unknown}; choose from {PARTS}")
    started = time.perf_counter()
    budget = args.budget if args.budget is not None else (float("inf") if args.tiny else 460.0)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                "python": platform.python_version()}  # fmt: skip
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    report: dict[str, Any] = {"mode": "tiny" if args.tiny else "full", "device": name, "versions": versions,
                              "shape": asdict(shape), "parts": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        model_info = guarded(lambda: _build(shape, device, dtype))
        report["model"] = {k: v for k, v in model_info.items() if k not in ("model", "processor")}
        model, processor = model_info.get("model"), model_info.get("processor")
        for name, fn in (("filter", part_filter), ("generate", part_generate), ("step", part_step)):
            if name in wanted:  # the step part wraps the model with LoRA in place: it goes last
                if model is None:
                    report["parts"][name] = {"status": "error", "error": "model build failed", "seconds": 0.0}
                    continue
                report["parts"][name] = guarded(fn, shape, model, processor, device, work)
                print(f"gpu_check: {name}: {report['parts'][name]['status']}", flush=True)
        del model, model_info
        if device == "cuda":
            torch.cuda.empty_cache()
        for stage in (2, 3):
            if f"zero{stage}" in wanted:
                left = budget - (time.perf_counter() - started)
                timeout = int(max(30, min(shape.zero_timeout, left)))
                report["parts"][f"zero{stage}"] = guarded(zero_subprocess, stage, args.tiny, work, timeout)
                print(f"gpu_check: zero{stage}: {report['parts'][f'zero{stage}']['status']}", flush=True)
    report["total_s"] = time.perf_counter() - started
    output = Path(args.output)
    output.write_text(json.dumps(report, indent=1))
    table = markdown(report)
    output.with_suffix(".md").write_text(table)
    print(table)


def _build(shape: Shape, device: str, dtype: torch.dtype) -> dict:
    processor = build_processor(shape)
    model = build_model(build_config(shape, processor.tokenizer), device, dtype)
    params = sum(p.numel() for p in model.parameters())
    return {"model": model, "processor": processor, "params": params, "dtype": str(dtype).replace("torch.", "")}


if __name__ == "__main__":
    main()
