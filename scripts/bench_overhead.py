"""Step time of the vanilla step, the active VD step, and the vanilla step plus one standalone no-grad forward.

The last one is the method's physical limit (docs/method.md, section 9). All three run in one process on the same
batches, interleaved, and the medians are compared. Usage:
`python scripts/bench_overhead.py [--preset lm-head-heavy] [--device cuda --dtype bfloat16]`.

Presets (explicit `--hidden/--layers/--vocab` override them):
  7b-share (default)  Llama 8x512, vocabulary 4096, batch 2 x 512 (half supervised): the lm_head is ~5% of the
                      language model's forward FLOPs, near Llama-2-7B's ~2% at 1024 tokens, so the ratios are the
                      ones a 7B user sees (the method saves lm_head work at unsupervised positions; a large share
                      flatters it).
  lm-head-heavy       Llama 4x256, vocabulary 32000 (the earlier default): the lm_head is ~60% of the FLOPs.
The lm_head share printed is `h V / (layers (4 h^2 + 3 h i + L h) + h V)` per token (attention projections, MLP,
causal attention scores averaged over positions, lm_head), grouped-query savings ignored.

Peak memory of one step of each variant (docs/method.md: an active step peaks no higher than vanilla), `--memory`:
on CUDA `torch.cuda.max_memory_allocated` above the memory held before the step; on CPU each variant runs in a fresh
process whose resident set is sampled every millisecond during the step, with glibc's mmap threshold pinned at
64 KiB so that every tensor is mapped and unmapped on its own and the resident set follows the live tensors.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from vdtrain import VDTrainer, VDTrainingArguments
from vdtrain.keys import LOSS_ONLY_KEYS

IMAGE, PATCH = 64, 16
PRESETS = {"7b-share": {"hidden": 512, "layers": 8, "vocab": 4096},
           "lm-head-heavy": {"hidden": 256, "layers": 4, "vocab": 32000}}  # fmt: skip


def lm_head_share(hidden: int, layers: int, vocab: int, length: int, intermediate: int | None = None) -> float:
    """Share of the lm_head in a Llama's forward multiply-adds per token (see the module docstring)."""
    intermediate = intermediate or 4 * hidden
    body = layers * (4 * hidden**2 + 3 * hidden * intermediate + length * hidden)
    return hidden * vocab / (body + hidden * vocab)


def build_model(hidden: int, layers: int, vocab: int) -> LlavaForConditionalGeneration:
    """A LLaVA-shaped model with random weights."""
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE,
        patch_size=PATCH,
    )
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1),
        vocab_size=vocab,
        max_position_embeddings=4096,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab - 1,
        image_seq_length=(IMAGE // PATCH) ** 2,
        vision_feature_select_strategy="default",
    )
    return LlavaForConditionalGeneration(config)


def make_batch(batch: int, length: int, vocab: int, response: int, device: str) -> dict[str, torch.Tensor]:
    """Sequences of `length` tokens with one image each; the last `response` tokens are supervised."""
    n_image = (IMAGE // PATCH) ** 2
    input_ids = torch.randint(0, vocab - 2, (batch, length))
    input_ids[:, 1 : 1 + n_image] = vocab - 1
    labels = input_ids.clone()
    labels[:, : length - response] = -100
    eot = torch.zeros(batch, length, dtype=torch.bool)
    eot[:, -1] = True
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones(batch, length, dtype=torch.long, device=device),
        "labels": labels.to(device),
        "pixel_values": torch.randn(batch, 3, IMAGE, IMAGE, device=device),
        "end_of_turn_mask": eot.to(device),
        "has_image": torch.ones(batch, dtype=torch.bool, device=device),
    }


class PeakResidentSet:
    """Largest resident-set growth (bytes) over the `with` block, sampled every millisecond from /proc/self/statm."""

    def __enter__(self) -> PeakResidentSet:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.baseline = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.growth = self.peak - self.baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="7b-share", choices=sorted(PRESETS), help="model shape (see above)")
    parser.add_argument("--hidden", type=int, help="Llama width (default: the preset's)")
    parser.add_argument("--layers", type=int, help="Llama layers (default: the preset's)")
    parser.add_argument("--vocab", type=int, help="vocabulary size (default: the preset's)")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--response", type=int, default=256, help="supervised tokens per sequence")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--memory", action="store_true", help="measure the peak memory of one step of each variant")
    parser.add_argument("--memory-variant", help=argparse.SUPPRESS)  # internal: one variant in this process (CPU)
    args = parser.parse_args()
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.memory and args.device == "cpu" and args.memory_variant is None:
        return cpu_memory(args)

    torch.manual_seed(0)
    model = build_model(args.hidden, args.layers, args.vocab).to(args.device, getattr(torch, args.dtype)).train()
    batch = make_batch(args.batch, args.length, args.vocab, args.response, args.device)
    batch["pixel_values"] = batch["pixel_values"].to(getattr(torch, args.dtype))
    plain = {k: v for k, v in batch.items() if k not in LOSS_ONLY_KEYS}
    n_items = batch["labels"][:, 1:].ne(-100).sum()
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(output_dir=tmp, report_to="none", use_cpu=args.device == "cpu")
        # vanilla = the HF Trainer's own loss (vdtrain's default before vd_start is the masked-logits one)
        vanilla = VDTrainer(model=model, args=VDTrainingArguments(vd_start=1.0, vd_masked_logits=False, **common))
        active = VDTrainer(model=model, args=VDTrainingArguments(vd_start=0.0, **common))
    for trainer in (vanilla, active):
        trainer.state.max_steps = 100
    assert active.vd_active() and not vanilla.vd_active()

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def vanilla_step() -> None:
        vanilla.compute_loss(model, dict(batch), num_items_in_batch=n_items).backward()

    def active_step() -> None:
        active.compute_loss(model, dict(batch), num_items_in_batch=n_items).backward()

    def vanilla_plus_forward() -> None:
        vanilla_step()
        with torch.no_grad():
            model.eval()
            model(**{k: v for k, v in plain.items() if k != "labels"})
            model.train()

    variants = {"vanilla": vanilla_step, "vd active": active_step, "vanilla + 1 no-grad forward": vanilla_plus_forward}
    if args.memory_variant is not None:  # CPU, fresh process: one warm-up step, then one measured step
        variants[args.memory_variant]()
        model.zero_grad(set_to_none=True)
        with PeakResidentSet() as peak:
            variants[args.memory_variant]()
        print(f"PEAK {peak.growth}")
        return
    if args.memory:  # CUDA: the allocator's own peak
        for name, fn in variants.items():
            fn()
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            growth = torch.cuda.max_memory_allocated() - held
            print(f"{name:<30} peak +{growth / 2**20:9.1f} MiB above the {held / 2**20:.0f} MiB held before the step")
            model.zero_grad(set_to_none=True)
        return
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in variants.items():
            model.zero_grad(set_to_none=True)
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["vanilla"])
    limit = statistics.median(times["vanilla + 1 no-grad forward"])
    print(
        f"device {args.device}, {args.dtype}, batch {args.batch} x {args.length} tokens "
        f"({args.response} supervised), Llama {args.layers}x{args.hidden}, vocab {args.vocab}; lm_head "
        f"{lm_head_share(args.hidden, args.layers, args.vocab, args.length):.1%} of the forward FLOPs "
        f"(Llama-2-7B at 1024 tokens: {lm_head_share(4096, 32, 32064, 1024, 11008):.1%})"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<30} {median * 1000:8.1f} ms   x{median / base:.3f} of vanilla   x{median / limit:.3f} of limit")


def cpu_memory(args: argparse.Namespace) -> None:
    """Each variant in its own process (no allocator state carried over); prints the peaks and their ratios."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    names = ("hidden", "layers", "vocab", "length", "response", "batch")
    shape = [f"--{name}={getattr(args, name)}" for name in names] + [f"--dtype={args.dtype}", "--device=cpu"]
    peaks = {}
    for name in ("vanilla", "vd active", "vanilla + 1 no-grad forward"):
        command = [sys.executable, __file__, *shape, f"--memory-variant={name}"]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        peaks[name] = int(next(line for line in out.splitlines() if line.startswith("PEAK")).split()[1])
    print(
        f"cpu, {args.dtype}, batch {args.batch} x {args.length} tokens ({args.response} supervised), "
        f"Llama {args.layers}x{args.hidden}, vocab {args.vocab}: resident-set growth during one step"
    )
    for name, growth in peaks.items():
        print(f"{name:<30} +{growth / 2**20:9.1f} MiB   x{growth / peaks['vanilla']:.3f} of vanilla")


if __name__ == "__main__":
    main()
