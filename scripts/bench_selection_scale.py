"""Scale check of the selection building blocks at LLaVA-665K size (issue 24; numbers in docs/selection.md).

    python scripts/bench_selection_scale.py [--rows 665000] [--dim 768] [--keep 0.2]

Synthetic embeddings (a seeded mixture of 1,000 Gaussian blobs, float32, ~2 GB at full size). Times k-means (fit
on a seeded subsample, then every row labelled), stratified removal, coverage keeping (k-center inside clusters),
the coverage metrics, and the cost of one exact global k-center pick; reports the peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from vdtrain.selection.cluster import kcenter_greedy, kmeans, stratified_remove
from vdtrain.selection.coverage import clustered_keep, coverage_metrics, default_clusters


def peak_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=665_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--keep", type=float, default=0.2, help="share kept by stratified and coverage selection")
    parser.add_argument("--picks", type=int, default=50, help="global k-center picks to time")
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, {args.rows} x {args.dim}")
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(1000, args.dim, generator=generator) * 2
    x = torch.empty(args.rows, args.dim)
    for start in range(0, args.rows, 65536):  # built in chunks: no second full-size temporary
        rows = min(65536, args.rows - start)
        owner = torch.randint(1000, (rows,), generator=generator)
        x[start : start + rows] = centres[owner] + torch.randn(rows, args.dim, generator=generator)
    scores = torch.randn(args.rows, generator=generator, dtype=torch.float64)
    print(f"embeddings built: {x.numel() * 4 / 1e9:.2f} GB, peak {peak_gb():.2f} GB")
    timings = {}

    k = default_clusters(args.rows)
    t = time.perf_counter()
    labels = kmeans(x, k, seed=0, iters=20, sample_size=max(64 * k, 20000)).labels
    timings[f"k-means (K={k}, fit on {max(64 * k, 20000)} rows, label all)"] = time.perf_counter() - t

    remove = args.rows - round(args.keep * args.rows)
    t = time.perf_counter()
    removed = stratified_remove(labels, scores, remove)
    timings[f"stratified removal of {remove}"] = time.perf_counter() - t

    t = time.perf_counter()
    kept = clustered_keep(x, labels, args.rows - remove, method="kcenter")
    timings[f"coverage: k-center inside clusters, keep {len(kept)}"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics = coverage_metrics(x, labels, kept)
    timings["coverage metrics (radius on 4,096 sampled rows)"] = time.perf_counter() - t

    t = time.perf_counter()
    kcenter_greedy(x, args.picks)
    per_pick = (time.perf_counter() - t) / args.picks
    timings[f"global k-center, per pick over all {args.rows} rows"] = per_pick

    for name, seconds in timings.items():
        print(f"{seconds:10.2f} s  {name}")
    print(f"global k-center for {args.rows - remove} picks would take ~{per_pick * (args.rows - remove) / 3600:.1f} h")
    print(f"removed {len(removed)}, coverage radius {metrics['kcenter_radius']:.2f}, peak memory {peak_gb():.2f} GB")


if __name__ == "__main__":
    main()
