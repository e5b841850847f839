"""The parts of `scripts/gpu_check.py`: LLaVA-1.5-7B shapes (and the `--tiny` ones), builders, timing, the checks.

Every part uses vdtrain's own code (`VDTrainer`, `prepare_for_training`, the filter scorer, the generation runner);
only the model (random weights, built on the device) and the data (synthetic) are made here.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # vdtrain itself, installed or not (a lent GPU machine runs it from the checkout)
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
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tiny_tokenizer(),
        patch_size=shape.patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def build_config(shape: Shape, tokenizer: Any) -> Any:
    """LLaVA-1.5 config: CLIP tower (second-to-last layer, CLS dropped), 2-layer GELU MLP projector, Llama."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(**shape.vision, image_size=shape.image, patch_size=shape.patch)
    text = LlamaConfig(
        **shape.text,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(shape.image // shape.patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )


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
    tensors = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "end_of_turn_mask": end_of_turn,
        "has_image": torch.ones(batch, dtype=torch.bool),
    }
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
            turns += [
                {"from": "human", "value": ("<image>\n" if not turns else "") + question},
                {"from": "gpt", "value": " ".join(rng.choices(WORDS, k=28)) + "."},
            ]
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
    from vdtrain.models import get_adapter
    from vdtrain.models.loading import prepare_for_training
    from vdtrain.training.config import ModelArguments

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
    plain = {k: v for k, v in batch.items() if k not in ("end_of_turn_mask", "has_image", "labels")}  # model inputs
    common = dict(output_dir=str(work / "step"), report_to="none", use_cpu=device == "cpu", seed=42)
    trainers = {}
    # vanilla: the HF Trainer's loss (full float32 logits); vanilla_masked: vdtrain's default before vd_start
    settings = {"vanilla": (1.0, False), "vanilla_masked": (1.0, True), "vd_active": (0.0, None)}
    for name, (start, masked) in settings.items():
        args = VDTrainingArguments(vd_start=start, vd_masked_logits=masked, **common)
        trainers[name] = VDTrainer(model=model, args=args, projector_modules=adapter.projector_modules)
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
        "vanilla_masked": step("vanilla_masked"),
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
        "step_s": seconds,
        "peak_mib": growth,
        "peak_total_mib": total,
        "loss": losses,
        "vd_vs_vanilla_time": ratio(seconds["vd_active"], seconds["vanilla"]),
        "vd_vs_limit_time": ratio(seconds["vd_active"], seconds["vanilla_plus_forward"]),
        "limit_vs_vanilla_time": ratio(seconds["vanilla_plus_forward"], seconds["vanilla"]),
        "vd_vs_vanilla_memory": ratio(growth["vd_active"], growth["vanilla"]),
        "masked_vs_vanilla_memory": ratio(growth["vanilla_masked"], growth["vanilla"]),
        "trainable_params": trainable,
        "tokens_per_batch": int(batch["input_ids"].numel()),
        "supervised_per_sequence": int(n_items) // shape.batch,
        "image_tokens": int(model.config.image_seq_length),
    }


def part_filter(shape: Shape, model: Any, processor: Any, device: str, work: Path) -> dict:
    """(c) the scorer's hot path and `score_dataset` against two bare masked no-grad forwards over the same batches."""
    from vdtrain.data.samples import collate_samples, prepare_sample
    from vdtrain.filtering.scoring import score_batch, score_dataset
    from vdtrain.method.noise import add_diffusion_noise
    from vdtrain.models import get_adapter

    model.eval()
    adapter = get_adapter(model, processor)
    folder = work / "filter"
    names = write_images(folder / "images", shape.filter_samples, size=shape.image)
    records = make_records(names, shape.filter_words)
    (folder / "data.json").write_text(json.dumps(records))
    prepared = [
        prepare_sample(r, i, adapter, processor, folder / "images", max_length=4096, seed=42)
        for i, r in enumerate(records)
    ]
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
        score_dataset(
            model,
            processor,
            folder / "data.json",
            folder / f"out{next(runs)}",
            image_folder=folder / "images",
            adapter=adapter,
            batch_size=size,
            num_workers=workers,
            progress=False,
        )

    seconds = interleaved(
        Meter(device), {"limit": limit, "score_batch": hot_path, "score_dataset": end_to_end}, shape.filter_rounds
    )
    scored = len((folder / "out0" / "scores.jsonl").read_text().splitlines())
    lengths = [len(e.input_ids) for s in prepared for e in s["examples"]]
    supervised = [e.num_supervised for s in prepared for e in s["examples"]]
    n = shape.filter_samples
    return {
        "samples_per_s": {name: n / value for name, value in seconds.items()},
        "score_batch_vs_limit": ratio(seconds["limit"], seconds["score_batch"]),
        "score_dataset_vs_limit": ratio(seconds["limit"], seconds["score_dataset"]),
        "samples": n,
        "batch_size": size,
        "scored": scored,
        "num_workers": workers,
        "tokens_per_sample": sum(lengths) / len(lengths),
        "supervised_per_sample": sum(supervised) / len(supervised),
    }


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
        return meter.time(
            lambda: generate_answers(
                model,
                processor,
                questions,
                output,
                image_folder=folder / "images",
                options=options,
                batch_size=batch_size,
                overwrite=True,
                progress=False,
            )
        )

    generate_answers(
        model,
        processor,
        questions[:2],
        folder / "warmup.jsonl",
        image_folder=folder / "images",
        options=options,
        batch_size=2,
        overwrite=True,
        progress=False,
    )
    batched, single = run(shape.gen_batch), run(1)
    answers = [
        [json.loads(line)["text"] for line in (folder / f"answers-b{b}.jsonl").read_text().splitlines()]
        for b in (shape.gen_batch, 1)
    ]
    agree = sum(a == b for a, b in zip(*answers)) / len(questions)
    return {
        "samples_per_s": {"batched": shape.gen_samples / batched, "one_by_one": shape.gen_samples / single},
        "speedup": ratio(single, batched),
        "batch_size": shape.gen_batch,
        "samples": shape.gen_samples,
        "max_new_tokens": shape.gen_new_tokens,
        "answers": len(answers[0]),
        "same_answers_as_one_by_one": agree,
    }


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
    from vdtrain.models import get_adapter
    from vdtrain.models.loading import prepare_for_training
    from vdtrain.training.config import ModelArguments

    processor = build_processor(shape)
    model = build_model(build_config(shape, processor.tokenizer), device, dtype)
    adapter = get_adapter(model, processor)
    lora = ModelArguments(model_name_or_path="random", lora_r=shape.lora_r, lora_alpha=2 * shape.lora_r)
    model = prepare_for_training(model, adapter, lora, gradient_checkpointing=True)
    batch = {k: v.cpu() for k, v in train_batch(shape, model.config, "cpu", dtype).items()}
    rows = [{k: v[i] for k, v in batch.items()} for i in range(shape.batch)] * shape.train_steps
    out = work / f"zero{stage}"
    args = VDTrainingArguments(
        output_dir=str(out),
        deepspeed=str(REPO / f"recipes/deepspeed/zero{stage}.json"),
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,
        per_device_train_batch_size=shape.batch,
        gradient_accumulation_steps=1,
        max_steps=shape.train_steps,
        learning_rate=2e-4,
        vd_projector_lr=2e-5,
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": True},
        vd_start=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=42,
    )
    meter = Meter(device)
    steps = _StepTimes(meter)
    trainer = VDTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=default_data_collator,
        callbacks=[steps.callback],
        projector_modules=adapter.projector_modules,
    )
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
        "zero_stage": stage,
        "steps": trainer.state.global_step,
        "step_s": statistics.median(steps.times[1:] or steps.times),
        "peak_total_mib": peak,
        "losses": [entry["loss"] for entry in logs],
        "vd_active_steps": sum("vd_mean" in entry for entry in logs),
        "adapter_tensors": len(weights),
        "adapter_mib": (out / "adapter_model.safetensors").stat().st_size / 2**20,
        "adapter_empty_tensors": sum(t.numel() == 0 for t in weights.values()),
        "projector_saved": any("multi_modal_projector" in name for name in weights),
        "lora_b_trained": any("lora_B" in name and t.float().abs().sum() > 0 for name, t in weights.items()),
    }
