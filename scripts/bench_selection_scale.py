"""Scale check of the selection building blocks at LLaVA-665K size (issue 24; numbers in docs/selection.md).

    python scripts/bench_selection_scale.py [--rows 665000] [--dim 768] [--keep 0.2]

Synthetic embeddings (a seeded mixture of 1,000 Gaussian blobs, float32, ~2 GB at full size). Times k-means (fit
on a seeded subsample, then every row labelled), stratified removal, coverage keeping (k-center inside clusters),
the coverage metrics, and the cost of one exact global k-center pick; reports the peak resident memory. Each step
prints wall time and the process' CPU time (all threads): on a shared machine the wall time depends on the other
jobs, the CPU time much less.
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
    parser.add_argument("--picks", type=int, default=20, help="global k-center picks to time")
    parser.add_argument("--iters", type=int, default=10, help="Lloyd iterations of the k-means")
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
    timings: dict[str, tuple[float, float]] = {}

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def since(start: tuple[float, float]) -> tuple[float, float]:
        wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
        print(f"  ... {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        return wall, cpu

    k = default_clusters(args.rows)
    t = clock()
    labels = kmeans(x, k, seed=0, iters=args.iters, sample_size=max(64 * k, 20000)).labels
    timings[f"k-means (K={k}, fit on {max(64 * k, 20000)} rows, label all)"] = since(t)

    remove = args.rows - round(args.keep * args.rows)
    t = clock()
    removed = stratified_remove(labels, scores, remove)
    timings[f"stratified removal of {remove}"] = since(t)

    t = clock()
    kept = clustered_keep(x, labels, args.rows - remove, method="kcenter")
    timings[f"coverage: k-center inside clusters, keep {len(kept)}"] = since(t)

    t = clock()
    metrics = coverage_metrics(x, labels, kept)
    timings["coverage metrics (radius on 4,096 sampled rows)"] = since(t)

    t = clock()
    kcenter_greedy(x, args.picks)
    wall, cpu = since(t)
    timings[f"global k-center, per pick over all {args.rows} rows"] = (wall / args.picks, cpu / args.picks)

    print("    wall s     cpu s")
    for name, (wall, cpu) in timings.items():
        print(f"{wall:10.2f} {cpu:9.2f}  {name}", flush=True)
    per_pick = timings[f"global k-center, per pick over all {args.rows} rows"][1]
    print(f"global k-center for {args.rows - remove} picks: ~{per_pick * (args.rows - remove) / 3600:.1f} CPU hours")
    print(f"removed {len(removed)}, coverage radius {metrics['kcenter_radius']:.2f}, peak memory {peak_gb():.2f} GB")


if __name__ == "__main__":
    main()
