"""`vdtrain select active`: pool-based active learning over embedding files, one round per labelling pass.

Each run trains the late-fusion learner on what is labelled, queries the next round and stops when the labels are
not there yet: the queried ids are in OUT/queries.jsonl, the answers go into OUT/labels.jsonl, and the same command
goes on. A labels file that already holds every label simulates the oracle (benchmarks).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from vdtrain.commands import options
from vdtrain.errors import InputError, UsageError

DESCRIPTION = """Multimodal active learning over a pool of embeddings (thesis ch. 3; CCMA).

  vdtrain select active --embeddings image=emb/image.npy --embeddings text=emb/text.npy --ids emb/ids.json \\
      --classes cat,dog,bird --strategy bmmal --initial 100 --budget 100 --rounds 5 --output-dir al

Round 0 labels a seeded random draw of --initial samples; each later round trains the late-fusion linear learner
(one head per modality and one on their concatenation, eq. 3.1) on every label so far and queries --budget more by
--strategy. Rounds are written to OUT/rounds/NNN/ (queried ids, labels, metrics, model.pt); OUT/queries.jsonl lists
what to label next, OUT/labels.jsonl ({"id": ..., "label": ...} per line, class name or index) is read back.
--strategy ccma needs the teacher: --teacher-probs (N, C), or a CLIP/SigLIP --teacher that classifies the image
embeddings (its own, from `vdtrain embed --encoder`) zero-shot. --dominance DATA writes
OUT/dominance/dominance.jsonl for `vdtrain filter select --strategy balanced`.
"""


def build_parser() -> argparse.ArgumentParser:
    """The `vdtrain select active` parser."""
    from vdtrain.selection.active.strategies import STRATEGIES

    parser = options.parser("vdtrain select active", DESCRIPTION)
    pool = parser.add_argument_group("pool")
    pool.add_argument(
        "--embeddings",
        action="append",
        required=True,
        metavar="MODALITY=FILE",
        help="MODALITY=FILE: an (N, D) embedding file (.npy, .pt, .safetensors; or a `vdtrain embed` directory) per "
        "modality, rows in --ids order, repeated; or one `vdtrain embed --encoder` directory (image and text)",
    )
    pool.add_argument(
        "--ids", default=None, help="sample ids of the rows (JSON list or JSONL with 'id'); default 0..N-1"
    )
    classes = pool.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", default=None, help="class names, comma-separated, in label-index order")
    classes.add_argument("--classes-file", default=None, help="class names, one per line")
    classes.add_argument("--num-classes", type=options.positive_int, default=None, help="labels are indices < N")
    loop = parser.add_argument_group("loop")
    loop.add_argument(
        "--strategy", required=True, choices=[*STRATEGIES, "ccma"], help="how each round picks its samples"
    )
    loop.add_argument("--budget", type=options.positive_int, required=True, help="samples queried per round")
    loop.add_argument("--rounds", type=int, required=True, help="query rounds after the initial set")
    loop.add_argument("--initial", type=int, default=None, help="size of the random initial set (default: --budget)")
    options.add_seed(loop, "the initial draw, the learner's initialisation and the strategy")
    loop.add_argument("--output-dir", required=True, help="rounds, queries and models; the same directory resumes")
    loop.add_argument("--labels", default=None, help="the answers file (default: OUTPUT_DIR/labels.jsonl)")
    loop.add_argument("--evaluation", default=None, help="held-out labelled ids ({'id', 'label'} JSONL), scored")
    loop.add_argument("--epochs", type=options.positive_int, default=300, help="full-batch AdamW steps per fit")
    loop.add_argument("--lr", type=float, default=0.01, help="the learner's learning rate")
    ccma = parser.add_argument_group("ccma")
    ccma.add_argument("--teacher-probs", default=None, help="(N, C) teacher class probabilities, rows as --ids")
    ccma.add_argument("--teacher", default=None, help="or a CLIP/SigLIP model: zero-shot probabilities of the classes")
    ccma.add_argument("--teacher-space", default="image", help="the modality holding --teacher's own image embeddings")
    ccma.add_argument("--prompt", default="a photo of a {}.", help="--teacher's prompt; {} is the class name")
    ccma.add_argument("--ccma-mode", default="conformal", choices=("conformal", "target-size"), help="set thresholds")
    ccma.add_argument("--alpha", type=float, default=0.1, help="miscoverage of the conformal mode")
    ccma.add_argument("--student", default=None, help="the modality whose head is the student (default: fusion)")
    ccma.add_argument("--kappa", type=options.positive_int, default=20, help="oversampling factor κ")
    parser.add_argument("--dominance", default=None, metavar="DATA", help="write per-sample dominance for DATA")
    return parser


def _read_ids(path: str) -> list[str]:
    """Ids from a JSON list / JSONL of ids, or of records (their `id`, else their index: embed's record order)."""
    from vdtrain.io import read_records

    rows = read_records(path)
    return [str(r.get("id", i)) if isinstance(r, dict) else str(r) for i, r in enumerate(rows)]


def _embeddings(items: list[str], load_matrix: Any) -> dict[str, Any]:
    """`{modality: (N, D)}` from `MODALITY=FILE`, `MODALITY=DIR` (DIR/MODALITY.npy, else DIR/embeddings.npy) or a bare
    `vdtrain embed --encoder` DIR (its image.npy and text.npy)."""
    matrices: dict[str, Any] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            folder = Path(item)
            if not (folder / "image.npy").is_file() or not (folder / "text.npy").is_file():
                raise UsageError(
                    f"--embeddings {item}: expected MODALITY=FILE, or a directory with image.npy and text.npy"
                )
            pairs = [("image", folder / "image.npy"), ("text", folder / "text.npy")]
        elif not name or not path:
            raise UsageError(f"--embeddings {item!r}: expected MODALITY=FILE")
        else:
            folder = Path(path)
            if folder.is_dir():
                path = folder / f"{name}.npy" if (folder / f"{name}.npy").is_file() else folder / "embeddings.npy"
            pairs = [(name, Path(path))]
        for modality, file in pairs:
            if modality in matrices:
                raise UsageError(f"--embeddings names modality {modality!r} twice")
            matrices[modality] = load_matrix(file)
    return matrices


def _classes(args: argparse.Namespace) -> tuple[list[str] | None, int]:
    if args.classes is not None:
        names = [c.strip() for c in args.classes.split(",") if c.strip()]
    elif args.classes_file is not None:
        names = [line.strip() for line in Path(args.classes_file).read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
    else:
        return None, args.num_classes
    if len(names) < 2 or len(set(names)) != len(names):
        raise UsageError(f"--classes needs at least two distinct names, got {names}")
    return names, len(names)


def _evaluation(path: str | None, classes: list[str] | None) -> tuple[list[str], list[int]] | None:
    if path is None:
        return None
    from vdtrain.selection.active import FileOracle

    oracle = FileOracle(Path(path).parent, classes, labels_file=path)
    known = oracle.known()  # the same parsing and checks as the answers file
    return list(known), list(known.values())


def _teacher_probs(
    args: argparse.Namespace, pool: Any, classes: list[str] | None, rows: int, finite: list[int]
) -> Any:
    """CCMA's teacher probabilities for the pool's rows: from --teacher-probs, or zero-shot from a CLIP/SigLIP
    --teacher over the --teacher-space embeddings (its own image embeddings, as `vdtrain embed --encoder` writes)."""
    from vdtrain.selection.active import load_matrix

    num_classes = len(classes) if classes else args.num_classes
    if args.teacher_probs is not None:
        probs = load_matrix(args.teacher_probs)
        if tuple(probs.shape) != (rows, num_classes):
            raise InputError(
                f"--teacher-probs {args.teacher_probs}: shape {tuple(probs.shape)}, expected ({rows}, {num_classes})"
            )
        return probs[finite]
    if args.teacher is None:
        raise UsageError("--strategy ccma needs --teacher-probs (an (N, C) file) or --teacher (a CLIP/SigLIP model)")
    if classes is None:
        raise UsageError("--teacher needs the class names (--classes or --classes-file) for its prompts")
    if args.teacher_space not in pool.modalities:
        raise UsageError(f"--teacher-space {args.teacher_space!r} is not a modality of --embeddings")
    from vdtrain.selection.active.teacher import ZeroShotTeacher

    teacher = ZeroShotTeacher.from_pretrained(options.check_model_path(args.teacher, "--teacher"), classes,
                                              template=args.prompt)  # fmt: skip
    return teacher.probs_from_embeddings(pool.embeddings[args.teacher_space])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run or resume the loop of `args`; returns the rounds done and the ids waiting for labels."""
    from vdtrain.selection.active import CCMA, FileOracle, LateFusionLinear, Pool, load_matrix, run_loop

    if args.rounds < 0:
        raise UsageError(f"--rounds must be >= 0, got {args.rounds}")
    matrices = _embeddings(args.embeddings, load_matrix)
    rows = len(next(iter(matrices.values())))
    ids = _read_ids(args.ids) if args.ids else [str(i) for i in range(rows)]
    if len(ids) != rows:
        raise InputError(f"--ids {args.ids} names {len(ids)} samples, the embeddings have {rows} rows")
    finite = [i for i in range(rows) if all(bool(m[i].isfinite().all()) for m in matrices.values())]
    if len(finite) < rows:  # `vdtrain embed` leaves NaN rows for samples it could not embed (its errors.jsonl)
        logging.getLogger(__name__).warning(
            "%d samples without embeddings are left out of the pool", rows - len(finite)
        )
        ids, matrices = [ids[i] for i in finite], {k: m[finite] for k, m in matrices.items()}
    pool = Pool(ids, matrices)
    classes, num_classes = _classes(args)
    output_dir = Path(args.output_dir)
    oracle = FileOracle(output_dir, classes, labels_file=args.labels)
    learner = LateFusionLinear(pool, num_classes, epochs=args.epochs, lr=args.lr)
    strategy: Any = args.strategy
    if args.strategy == "ccma":
        teacher = _teacher_probs(args, pool, classes, rows, finite)
        strategy = CCMA(teacher, mode=args.ccma_mode, alpha=args.alpha, student=args.student, kappa=args.kappa)
    result = run_loop(
        pool,
        learner,
        strategy,
        oracle,
        output_dir,
        budget=args.budget,
        rounds=args.rounds,
        initial=args.initial if args.initial is not None else args.budget,
        seed=args.seed,
        evaluation=_evaluation(args.evaluation, classes),
        strategy_name=args.strategy,
    )
    if not result.waiting and args.dominance:
        from vdtrain.selection.active import write_dominance

        last = output_dir / "rounds" / f"{len(result.rounds) - 1:03d}" / "model.pt"
        learner.load(last)
        write_dominance(output_dir / "dominance", pool.ids, learner.outputs(list(range(len(pool)))), args.dominance)
    return {"rounds": result.rounds, "waiting": result.waiting, "labels": str(oracle.labels_path)}


def report(summary: dict[str, Any], output_dir: str) -> None:
    """Print the rounds done and what to label next."""
    for record in summary["rounds"]:
        metrics = "  ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in record["metrics"].items()
        )
        print(f"round {record['round']}: {len(record['queried'])} queried  {metrics}")
    if summary["waiting"]:
        print(
            f"vdtrain select active: label the {len(summary['waiting'])} samples listed in "
            f'{Path(output_dir) / "queries.jsonl"} ({{"id": ..., "label": ...}} per line in {summary["labels"]}), '
            "then rerun this command"
        )
    else:
        print(f"vdtrain select active: done; rounds in {Path(output_dir) / 'rounds'}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain select active`."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    report(run(args), args.output_dir)
    return 0
