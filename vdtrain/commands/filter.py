"""`vdtrain filter score | select | run`: score a dataset by visual dependence and remove a fraction of it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vdtrain.commands import options
from vdtrain.errors import InputError
from vdtrain.filtering.selection import STRATEGIES

SUBCOMMANDS = ("score", "select", "run")  # the error boundary names them: `vdtrain filter select: error: ...`

DESCRIPTION = """Offline data filtering by visual dependence (thesis section 5.4.5).

  score   one clean and one noised no-grad forward per sample; writes OUT/scores.jsonl (id, index, score = sum of
          d over the sample's supervised tokens, n_tokens, mean, frac_pos, frac_neg), OUT/errors.jsonl,
          OUT/summary.json and OUT/score_hist.png. Rerunning with the same OUT resumes. Runs under
          `accelerate launch -m vdtrain filter score ...` with one shard per process.
  select  removes the lowest / highest / a random fraction of the scored samples and writes the rest in the
          input's order and format, plus the removed records and selected_indices.json. With embeddings
          (score --save-embeddings, or --embeddings): stratified-lowest / stratified-highest remove the fraction
          within each k-means cluster, coverage keeps 1 - f by k-center inside clusters, dedup removes
          near-duplicates; summary.json then holds coverage metrics. --strategy balanced --scores
          DIR/dominance.jsonl (from `vdtrain select active --dominance DATA`) removes the most modality-dominated
          samples (BMMAL's dominance rho, thesis eq. 3.5).
  run     score, then select.
"""


def _add_score_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scoring")
    options.add_model_options(group, model_help="model directory or hub id (the fine-tuned scoring model)")
    group.add_argument(
        "--data",
        default=None,
        help="conversation data: a LLaVA JSON list or JSONL, or a folder of parquet/arrow/jsonl files (LLaVA/ShareGPT "
        "`conversations` or TRL `messages` + `images`), as vdtrain train reads",
    )
    group.add_argument("--dataset-name", default=None, help="a hub dataset id instead of --data (score only)")
    group.add_argument("--dataset-config", default=None, help="the hub dataset's configuration")
    group.add_argument("--split", default="train", help="the split of a folder or hub dataset")
    group.add_argument("--image-folder", default=None, help="folder the records' 'image' paths are relative to")
    group.add_argument("--output-dir", required=True, help="where scores go; the same directory again resumes")
    options.add_noise_step(group)
    options.add_batch_size(group, 8)
    options.add_seed(group, "the noise: sample i's noise is seeded from (seed, i)")
    group.add_argument("--max-length", type=int, default=2048, help="tokens per sequence after image expansion")
    group.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="DataLoader workers that tokenise and load images (default: 4 on GPU, 0 on CPU)",
    )
    group.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after scoring this many samples per process (time-limited jobs); rerun to continue",
    )
    group.add_argument(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="score in file order instead of batching samples of similar length together (longest first)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument(
        "--save-embeddings",
        choices=("answer-mean", "image-mean", "last-token"),
        default=None,
        help="also pool the clean pass' last hidden state into OUT/embeddings.npy (for the coverage strategies)",
    )
    group.add_argument(
        "--embedding-dim",
        type=options.positive_int,
        default=None,
        help="seeded random projection of the saved embeddings to this width (e.g. 256-1024)",
    )


def _add_select_options(parser: argparse.ArgumentParser, *, standalone: bool) -> None:
    group = parser.add_argument_group("selection")
    if standalone:
        group.add_argument("--scores", required=True, help="scores.jsonl of a finished `vdtrain filter score` run")
        group.add_argument("--data", required=True, help="the data file that was scored")
    group.add_argument("--strategy", required=True, choices=STRATEGIES, help="which samples to remove by score")
    group.add_argument("--fraction", type=float, required=True, help="share of the scored samples to remove, e.g. 0.1")
    options.add_seed(
        group,
        "the random strategy and k-means of the embeddings",
        flag="--seed" if standalone else "--select-seed",
        dest="select_seed",
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="select even when the scores' run.json (the data file's fingerprint) is missing or names another file",
    )
    group.add_argument("--output", required=True, help="filtered data file, written in the input's format")
    group.add_argument(
        "--removed", default=None, help="removed records (JSON list); default: removed.json beside --output"
    )
    coverage = parser.add_argument_group("coverage (stratified-lowest, stratified-highest, coverage, dedup)")
    coverage.add_argument(
        "--embeddings",
        default=None,
        help="(N, D) .npy in record order; default: embeddings.npy beside the scores (filter score --save-embeddings)",
    )
    coverage.add_argument(
        "--clusters", type=options.positive_int, default=None, help="k-means clusters (default: round(sqrt(N / 2)))"
    )
    coverage.add_argument(
        "--coverage-method",
        default="kcenter",
        choices=("kcenter", "kmeans++"),
        help="coverage keeps by k-center greedy or by k-means++ weighted by score rank, inside each cluster",
    )
    coverage.add_argument(
        "--dedup-threshold", type=float, default=0.95, help="cosine similarity at which dedup calls samples duplicates"
    )


def build_parser() -> argparse.ArgumentParser:
    """The `vdtrain filter` parser with its three subcommands."""
    parser = options.parser("vdtrain filter", DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{score,select,run}")
    score = commands.add_parser(
        "score",
        help="score every sample by visual dependence",
        description=DESCRIPTION,
        formatter_class=options.HelpFormatter,
    )
    _add_score_options(score)
    options.add_debug(score)
    select = commands.add_parser(
        "select",
        help="remove a fraction of the scored samples",
        description=DESCRIPTION,
        formatter_class=options.HelpFormatter,
    )
    _add_select_options(select, standalone=True)
    options.add_debug(select)
    run = commands.add_parser(
        "run", help="score, then select", description=DESCRIPTION, formatter_class=options.HelpFormatter
    )
    _add_score_options(run)
    options.add_debug(run)
    _add_select_options(run, standalone=False)
    return parser


def run_score(args: argparse.Namespace) -> dict | None:
    """Load the model on this process's device and score `args.data` into `args.output_dir`."""
    from vdtrain.filtering.scoring import score_dataset

    if (args.data is None) == (args.dataset_name is None):
        raise InputError("give the data as --data (a file or folder) or --dataset-name (a hub id)")
    if args.data is not None and not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data}: no such file or folder")
    if args.command == "run" and (args.data is None or not Path(args.data).is_file()):
        raise InputError("filter run selects from a JSON or JSONL --data file; score a folder or hub dataset alone")
    data = args.data
    if args.dataset_name is not None or (Path(args.data).is_dir() and args.split != "train"):
        from vdtrain.data.sources import load_source

        data = load_source(
            args.data, dataset_name=args.dataset_name, dataset_config=args.dataset_config, split=args.split
        )
    model, processor, adapter = options.load_model(args)
    device = model.device
    num_workers = args.num_workers if args.num_workers is not None else (4 if device.type == "cuda" else 0)
    if num_workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return score_dataset(
        model,
        processor,
        data,
        args.output_dir,
        image_folder=args.image_folder,
        adapter=adapter,
        noise_step=args.noise_step,
        batch_size=args.batch_size,
        seed=args.seed,
        max_length=args.max_length,
        num_workers=num_workers,
        model_name=_identity(args.model),
        adapter_name=_identity(args.adapter) if args.adapter else None,
        stop_after=args.stop_after,
        progress=not args.no_progress,
        group_by_length=args.group_by_length,
        save_embeddings=args.save_embeddings,
        embedding_dim=args.embedding_dim,
    )


def _identity(path: str) -> str:
    """A local directory as its absolute path (so `./m` and `/abs/m` are one model), a hub id as given."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def run_select(args: argparse.Namespace, scores: str) -> dict:
    """Apply the selection options of `args` to `scores`."""
    from vdtrain.filtering.selection import select_dataset

    return select_dataset(
        scores,
        args.data,
        args.output,
        strategy=args.strategy,
        fraction=args.fraction,
        seed=args.select_seed,
        removed=args.removed,
        force=args.force,
        embeddings=args.embeddings,
        clusters=args.clusters,
        coverage_method=args.coverage_method,
        dedup_threshold=args.dedup_threshold,
    )


def _print_summary(summary: dict) -> None:
    counts = ", ".join(f"{name} {value}" for name, value in summary["counts"].items())
    q = summary.get("score_quantiles") or {}
    print(f"vdtrain filter: {counts}")
    if q:
        print("  score " + "  ".join(f"{name} {value:.3f}" for name, value in q.items()))
    for group, lengths in (summary.get("lengths") or {}).items():
        if lengths["response_len_words"] is not None:
            print(
                f"  {group:<8} data length {lengths['data_len_words']:.1f} words, "
                f"response length {lengths['response_len_words']:.1f} words"
            )
    print(f"  histogram: {summary['histogram']}")


def on_interrupt(argv: list[str]) -> str:
    """What Ctrl-C leaves: the scores appended so far, which the same command resumes from."""
    output_dir = options.flag_value(argv, "--output-dir")
    if output_dir is None:
        return "nothing was written"
    return f"the scores written so far are kept in {output_dir}; rerun the same command to resume"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain filter`."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "select":
        _print_summary(run_select(args, args.scores))
        return 0
    from vdtrain.filtering.runs import end_distributed
    from vdtrain.locks import main_process, output_lock

    with output_lock(args.output_dir, f"vdtrain filter {args.command}", enabled=main_process()):
        summary = run_score(args)
        end_distributed()  # under torchrun/accelerate launch; the selection below runs on the main process only
        if summary is None:  # another process, or unfinished (stopped, or errors to retry)
            if main_process():
                print(f"vdtrain filter: scoring unfinished; rerun with --output-dir {args.output_dir} to resume")
            return 0
        if args.command == "run":
            summary = run_select(args, str(Path(args.output_dir) / "scores.jsonl"))
    _print_summary(summary)
    return 0
