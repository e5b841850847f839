"""Throughput of `vdtrain filter score` against its physical limit: two bare no-grad forwards over the same batches.

    python scripts/bench_filter.py [--samples 32] [--batch-size 8] [--hidden 256] [--layers 4] [--repeats 5]

Builds a tiny LLaVA (vocab 32000, ~380-token conversations), then times `--repeats` interleaved rounds of:
  limit      two forwards per batch (clean pixels, noised pixels) with `logits_to_keep` at supervised positions,
             nothing else: the least work any scorer must do;
  limit-full the same with full `(B, L, V)` logits (what a naive scorer pays);
  hot path   `score_batch` on the same collated batches (forwards + log-probs + d + per-sample sums);
  end-to-end `score_dataset` from the JSON file (tokenising, image loading, noise, JSONL writing, resume checks),
             batching samples of similar length (with `--spread`, also in file order, the limit's batches).
  end-to-end minus fixed cost: the same without the per-run work a rerun on a finished directory does (run checks,
             merging, summary.json, the histogram), which a 150k-sample run pays once.
Prints samples/s (median round) and each one's ratio to `limit` within the same round (median [min, max] over rounds;
1.00 = at the limit; the aim is >= 0.90).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny import WORDS, tiny_llava, write_images  # noqa: E402

from vdtrain.data.samples import collate_samples, prepare_sample  # noqa: E402
from vdtrain.filtering.scoring import score_batch, score_dataset  # noqa: E402
from vdtrain.method.dependence import IGNORE_INDEX  # noqa: E402
from vdtrain.method.noise import add_diffusion_noise  # noqa: E402
from vdtrain.models import get_adapter  # noqa: E402


def make_records(names: list[str], words_per_sample: int, spread: float = 0.0, seed: int = 0) -> list[dict]:
    """Multi-turn conversations of about `words_per_sample` words (times 1 +- `spread`, uniform), a third of them in
    human turns."""
    rng = random.Random(seed)
    records = []
    for index, name in enumerate(names):
        turns, total = [], 0
        target = words_per_sample * rng.uniform(1 - spread, 1 + spread)
        while total < target:
            question = " ".join(rng.choices(WORDS, k=12)) + "?"
            answer = " ".join(rng.choices(WORDS, k=28)) + "."
            turns += [
                {"from": "human", "value": ("<image>\n" if not turns else "") + question},
                {"from": "gpt", "value": answer},
            ]
            total += 40
        records.append({"id": f"b{index}", "image": name, "conversations": turns})
    return records


def interleaved(repeats: int, variants: dict) -> dict[str, list[float]]:
    """Wall times of each variant over `repeats` rounds, the variants taking turns within each round so that a shared
    machine's load drifts over them alike; ratios are then taken within a round (paired) and summarised by median."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32, help="samples scored per measurement")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per forward")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the tiny Llama")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the tiny Llama")
    parser.add_argument("--words", type=int, default=150, help="words per conversation (~2 tokens per word)")
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="conversation lengths vary by this factor (0.8: 0.2x to 1.8x --words); shows what "
        "grouping batches by length saves over the file-order limit",
    )
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds; paired ratios are summarised")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for the end-to-end run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    torch.manual_seed(0)
    model, processor = tiny_llava(hidden=args.hidden, layers=args.layers, vocab=32000)
    model = model.to(args.device, getattr(torch, args.dtype)).eval()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    adapter = get_adapter(model, processor)
    work = Path(tempfile.mkdtemp(prefix="bench_filter_"))
    names = write_images(work / "images", args.samples)
    records = make_records(names, args.words, args.spread)
    (work / "data.json").write_text(json.dumps(records))

    prepared = [
        prepare_sample(r, i, adapter, processor, work / "images", max_length=2048, seed=42)
        for i, r in enumerate(records)
    ]
    pad = processor.tokenizer.pad_token_id
    size = args.batch_size
    batches = [collate_samples(prepared[i : i + size], pad) for i in range(0, len(prepared), size)]
    lengths = [len(e.input_ids) for s in prepared for e in s["examples"]]
    supervised = [e.num_supervised for s in prepared for e in s["examples"]]
    print(
        f"tiny LLaVA hidden {args.hidden}, {args.layers} layers, vocab 32000, {args.device} {args.dtype}; "
        f"{args.samples} samples, "
        f"batch {args.batch_size}; tokens/sample {sum(lengths) / len(lengths):.0f} "
        f"({sum(supervised) / len(supervised):.0f} supervised); {torch.get_num_threads()} threads"
    )

    def bare(full_logits: bool):
        @torch.no_grad()
        def run():
            for batch in batches:
                inputs = {k: v.to(device) for k, v in batch["inputs"].items() if k != "labels"}
                inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
                labels = batch["inputs"]["labels"].to(device)
                mask = torch.nn.functional.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1), value=False)
                keep = {} if full_logits else {"logits_to_keep": mask}
                model(**inputs, **keep)
                noise = batch["noise"].to(device)
                inputs["pixel_values"] = add_diffusion_noise(inputs["pixel_values"], 900, noise=noise)
                model(**inputs, **keep)
            if device.type == "cuda":
                torch.cuda.synchronize()

        return run

    def hot_path():
        for batch in batches:
            score_batch(model, batch, noise_step=900, pixel_key="pixel_values").tolist()

    counter = iter(range(10**6))

    def end_to_end(group_by_length: bool = True):
        out = work / f"out{next(counter)}"
        score_dataset(
            model,
            processor,
            work / "data.json",
            out,
            image_folder=work / "images",
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            progress=False,
            group_by_length=group_by_length,
        )

    def fixed_cost():  # a rerun on a finished directory: run checks, merging, summary.json and the histogram
        score_dataset(
            model,
            processor,
            work / "data.json",
            work / "out0",
            image_folder=work / "images",
            batch_size=args.batch_size,
            progress=False,
        )

    variants = {
        "limit (2 masked forwards)": bare(False),
        "limit-full (2 full-logit forwards)": bare(True),
        "hot path (score_batch)": hot_path,
        "end-to-end (score_dataset)": end_to_end,
        "per-run fixed cost": fixed_cost,
    }
    if args.spread:
        variants["end-to-end, file order"] = lambda: end_to_end(group_by_length=False)
    for fn in variants.values():  # warm-up (also leaves out0 finished for `fixed_cost`)
        fn()
    times = interleaved(args.repeats, variants)
    limit = times.pop("limit (2 masked forwards)")
    fixed = times.pop("per-run fixed cost")
    times["end-to-end minus fixed cost"] = [t - f for t, f in zip(times["end-to-end (score_dataset)"], fixed)]
    median = statistics.median
    print(f"{'':<36} {'samples/s':>9}   ratio to limit: median of {args.repeats} paired rounds [min, max]")
    print(f"{'limit (2 masked forwards)':<36} {args.samples / median(limit):9.1f}   1.00")
    for name, seconds in times.items():
        ratios = [lim / t for lim, t in zip(limit, seconds)]
        print(
            f"{name:<36} {args.samples / median(seconds):9.1f}   {median(ratios):.2f} "
            f"[{min(ratios):.2f}, {max(ratios):.2f}]"
        )
    print(
        f"per-run fixed cost (checks, merge, summary.json, histogram): {median(fixed):.2f} s once per run, "
        f"i.e. {median(fixed) / median(limit) * args.samples:.0f} samples' worth at the limit"
    )


if __name__ == "__main__":
    main()
