"""Step time of the vanilla step, the active VD step, and the vanilla step plus one standalone no-grad forward.

The last one is the physical limit of the method (SPEC section 7). All three run in one process on the same
batches, interleaved, and the medians are compared. Default model: a LLaVA with a 4-layer, 256-wide Llama,
vocabulary 32000, sequence 512, on CPU. Usage: `python scripts/bench_overhead.py [--device cuda --dtype bfloat16]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from vdtrain import VDTrainer, VDTrainingArguments
from vdtrain.trainer import EXTRA_KEYS

IMAGE, PATCH = 64, 16


def build_model(hidden: int, layers: int, vocab: int) -> LlavaForConditionalGeneration:
    """A LLaVA-shaped model with random weights."""
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                              image_size=IMAGE, patch_size=PATCH)  # fmt: skip
    text = LlamaConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                       num_attention_heads=max(hidden // 64, 1), vocab_size=vocab,
                       max_position_embeddings=4096)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab - 1,
                         image_seq_length=(IMAGE // PATCH) ** 2, vision_feature_select_strategy="default")  # fmt: skip
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--response", type=int, default=256, help="supervised tokens per sequence")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(args.hidden, args.layers, args.vocab).to(args.device, getattr(torch, args.dtype)).train()
    batch = make_batch(args.batch, args.length, args.vocab, args.response, args.device)
    batch["pixel_values"] = batch["pixel_values"].to(getattr(torch, args.dtype))
    plain = {k: v for k, v in batch.items() if k not in EXTRA_KEYS}
    n_items = batch["labels"][:, 1:].ne(-100).sum()
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(output_dir=tmp, report_to="none", use_cpu=args.device == "cpu")
        vanilla = VDTrainer(model=model, args=VDTrainingArguments(vd_start=1.0, **common))
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
    print(f"device {args.device}, {args.dtype}, batch {args.batch} x {args.length} tokens "
          f"({args.response} supervised), Llama {args.layers}x{args.hidden}, vocab {args.vocab}")  # fmt: skip
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<30} {median * 1000:8.1f} ms   x{median / base:.3f} of vanilla   x{median / limit:.3f} of limit")


if __name__ == "__main__":
    main()
