"""Multimodal active learning with vdtrain.selection.active: label a pool round by round with BMMAL, then use a
strategy on a model you trained yourself.

Runs offline in seconds: `python examples/active_learning.py [--strategy bmmal] [--rounds 3] [--output-dir al]`.
The pool here is synthetic (an image view that carries the class weakly, a text view that carries it strongly, as
captions often do); with real data, load the embedding files of `vdtrain embed` with `Pool.from_files`.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from vdtrain.selection.active import (
    STRATEGIES,
    ArrayOracle,
    LateFusionLinear,
    Outputs,
    Pool,
    Query,
    run_loop,
    sample_dominance,
)


def synthetic_pool(n: int = 600, classes: int = 5, seed: int = 0) -> tuple[Pool, list[int]]:
    """Ids, a weak 'image' and a strong 'text' embedding per sample, and the labels a person would give."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    image = torch.randn(n, 32, generator=g) + 0.35 * torch.randn(classes, 32, generator=g)[labels]
    named = torch.rand(n, generator=g) < 0.6  # 60% of the captions name the class
    text = torch.randn(n, 16, generator=g) + 2.5 * named[:, None] * torch.randn(classes, 16, generator=g)[labels]
    return Pool([f"sample-{i}" for i in range(n)], {"image": image, "text": text}), labels.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="bmmal", choices=sorted(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-dir", default=None, help="where rounds are written (default: a temporary folder)")
    args = parser.parse_args()

    pool, labels = synthetic_pool()
    test_ids, test_labels = pool.ids[-150:], labels[-150:]  # held out: never queried, scored every round
    learner = LateFusionLinear(pool, num_classes=5, epochs=150)  # eq. 3.1: image, text and fusion heads
    oracle = ArrayOracle(labels, pool.ids)  # a FileOracle asks a person through queries.jsonl / labels.jsonl
    with tempfile.TemporaryDirectory() as scratch:
        result = run_loop(
            pool,
            learner,
            args.strategy,
            oracle,
            args.output_dir or scratch,
            budget=30,
            rounds=args.rounds,
            initial=30,
            seed=0,
            evaluation=(test_ids, test_labels),
        )
    for record in result.rounds:
        m = record["metrics"]
        print(
            f"round {record['round']}: {m['labelled']} labels, accuracy {m['accuracy']:.3f} "
            f"(image {m['accuracy_image']:.3f}, text {m['accuracy_text']:.3f}), phi gap {m['phi_gap']:.3f}"
        )

    # A model trained elsewhere: any linear fusion head over per-modality features gives `Outputs`.
    unlabelled = [p for p in range(len(pool)) if pool.ids[p] not in set(result.labelled_ids) | set(test_ids)]
    features = learner.standardised(unlabelled)
    weight, bias = learner.fusion.weight.detach(), learner.fusion.bias.detach()
    probs = (torch.cat([features["image"], features["text"]], dim=1) @ weight.T + bias).softmax(dim=1)
    outputs = Outputs(probs=probs, features=features, fusion_weight=weight, fusion_bias=bias)
    picks = STRATEGIES["bmmal"](Query(candidates=outputs), 10, torch.Generator().manual_seed(0))
    print("next 10 to label by BMMAL:", [pool.ids[unlabelled[i]] for i in picks])
    rho, phi = sample_dominance(outputs)
    print(f"dominance rho of the pool: mean {rho.mean():.3f}, text dominates {int((phi[:, 1] > 0.5).sum())} samples")


if __name__ == "__main__":
    main()
