"""Time to the first optimizer step and peak memory of `vdtrain train` as the dataset grows (issue 21).

    python scripts/bench_data.py [--sizes 10000 100000 665000] [--procs 1 2] [--num-proc 2] [--workdir DIR]

Writes N conversations of the LLaVA-1.5 mix's shape (LLaVA JSON; 1-10 turns, mean about 2.2; answers of 20-400
words, log-uniform, mean about 127; questions of 5-30 words; 5% text-only: 0.85 KB of JSON per sample, as its
words are short; the real 665k file has about 1.6 KB) naming `--images` distinct 32-px PNGs (the mix reuses its
images too), saves a tiny LLaVA,
then runs `vdtrain train` (LoRA, batch 1, max_length 2048, one optimizer step) for each N: cold (empty
HF_DATASETS_CACHE: datasets' Arrow copy of the JSON and vdtrain's examples are built) and warm (the same cache
again), in one process and under `torchrun --nproc_per_node 2` (gloo). Each run reports the wall time from the
launch to the end of the first optimizer step, the CPU time of every process involved (the machine is shared), the
peak RSS of the training process(es) and of the map workers, and whether that rank built or reused the examples.
Prints a Markdown table and appends one JSON line per run to WORKDIR/results.jsonl.

    python scripts/bench_data.py --select 1200000

measures `vdtrain filter select` alone (peak RSS and CPU time of the command) on that many score rows and a data
file of the same shape (written once into WORKDIR/select_N).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS_PER_ANSWER = (20, 400)


def write_data(path: Path, count: int, images: int, seed: int = 0) -> None:
    """`count` LLaVA-format records of the mix's shape, streamed to a JSON list."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import WORDS

    rng = random.Random(seed)
    with open(path, "w") as out:
        out.write("[")
        for index in range(count):
            turns = []
            text_only = rng.random() < 0.05
            for turn in range(min(10, 1 + int(rng.expovariate(1 / 1.3)))):  # 1-10 turns, mean about 2.2
                question = " ".join(rng.choices(WORDS, k=rng.randint(5, 30))) + "?"
                if turn == 0 and not text_only:
                    question = "<image>\n" + question
                turns.append({"from": "human", "value": question})
                words = int(math.exp(rng.uniform(*map(math.log, WORDS_PER_ANSWER))))  # log-uniform, mean about 127
                answer = " ".join(rng.choices(WORDS, k=words)) + "."
                turns.append({"from": "gpt", "value": answer})
            record = {"id": f"{index:07d}", "conversations": turns}
            if not text_only:
                record["image"] = f"{index % images:06d}.png"
            out.write(("," if index else "") + json.dumps(record))
        out.write("]")


def prepare(workdir: Path, sizes: list[int], images: int) -> None:
    """The tiny model, the images and one data file per size (kept between invocations)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import tiny_llava, write_images

    if not (workdir / "model" / "config.json").is_file():
        model, processor = tiny_llava()
        model.save_pretrained(workdir / "model")
        processor.save_pretrained(workdir / "model")
    folder = workdir / "images"
    existing = len(list(folder.glob("*.png"))) if folder.is_dir() else 0
    if existing < images:
        for index, name in enumerate(write_images(folder, images)):
            (folder / name).rename(folder / f"{index:06d}.png")
    for size in sizes:
        path = workdir / f"data_{size}.json"
        if not path.is_file():
            write_data(path, size, images)


def child(args: argparse.Namespace) -> None:
    """One training run up to its first optimizer step; writes its measurements as JSON."""
    import transformers

    from vdtrain.commands.train import load_config
    from vdtrain.training.run import build_trainer

    overrides = {
        "model_name_or_path": str(args.workdir / "model"),
        "data_path": str(args.workdir / f"data_{args.size}.json"),
        "image_folder": str(args.workdir / "images"),
        "output_dir": str(args.workdir / "out"),
        "dataset_cache_dir": str(args.cache / "vdtrain"),
        "dataset_num_proc": args.num_proc,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": 2048,
        "per_device_train_batch_size": 1,
        "max_steps": 1,
        "save_strategy": "no",
        "vd_start": 0.0,
    }
    stamps: dict[str, float] = {}

    class FirstStep(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps["step"] = time.time()
            control.should_training_stop = True
            return control

    trainer = build_trainer(*load_config(None, overrides))
    stamps["built"] = time.time()
    trainer.add_callback(FirstStep())
    trainer.train()
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "rank": int(os.environ.get("RANK", 0)),
        "first_step_s": stamps["step"] - args.t0,
        "data_and_model_s": stamps["built"] - args.t0,
        "cpu_s": own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime,
        "peak_rss_gb": own.ru_maxrss / 2**20,
        "worker_peak_rss_gb": workers.ru_maxrss / 2**20,
        "sequences": len(trainer.train_dataset),
        "reused_cache": bool(getattr(trainer.train_dataset, "reused_cache", False)),
    }
    (args.result.parent / f"{args.result.stem}.rank{result['rank']}.json").write_text(json.dumps(result))


def run(workdir: Path, size: int, procs: int, num_proc: int, cache: Path, label: str) -> dict:
    """Launch one child (or a 2-process torchrun of them) and gather what its ranks wrote."""
    result = workdir / f"result_{size}_{procs}_{label}.json"
    for old in workdir.glob(f"{result.stem}.rank*.json"):
        old.unlink()
    t0 = time.time()
    tail = [
        "--child",
        "--size",
        str(size),
        "--workdir",
        str(workdir),
        "--cache",
        str(cache),
        "--num-proc",
        str(num_proc),
        "--t0",
        str(t0),
        "--result",
        str(result),
    ]
    script = str(Path(__file__).resolve())
    if procs == 1:
        command = [sys.executable, script, *tail]
    else:
        port = str(29500 + random.Random().randint(0, 400))
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--master_port", port]
        command += [script, *tail]
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ranks = [json.loads(path.read_text()) for path in sorted(workdir.glob(f"{result.stem}.rank*.json"))]
    summary = {
        "size": size,
        "procs": procs,
        "num_proc": num_proc,
        "cache": label,
        "first_step_s": max(rank["first_step_s"] for rank in ranks),
        "cpu_s": sum(rank["cpu_s"] for rank in ranks),
        "peak_rss_gb": max(rank["peak_rss_gb"] for rank in ranks),
        "worker_peak_rss_gb": max(rank["worker_peak_rss_gb"] for rank in ranks),
        "built_by_ranks": [rank["rank"] for rank in ranks if not rank["reused_cache"]],
        "sequences": ranks[0]["sequences"],
        "load_average": os.getloadavg()[0],
    }
    with open(workdir / "results.jsonl", "a") as out:
        out.write(json.dumps(summary) + "\n")
    return summary


def bench_select(workdir: Path, count: int) -> dict:
    """Peak RSS and CPU time of `vdtrain filter select` on `count` score rows and their data file (the mix's shape)."""
    from vdtrain.filtering.runs import file_sha256

    folder = workdir / f"select_{count}"
    (folder / "scores").mkdir(parents=True, exist_ok=True)
    data = folder / "data.json"
    if not data.is_file():
        write_data(data, count, 10_000)
    scores = folder / "scores" / "scores.jsonl"
    if not scores.is_file():
        rng = random.Random(1)
        with open(scores, "w") as out:
            for index in range(count):
                tokens = rng.randint(20, 2000)
                score = rng.gauss(0, 5)
                row = {"id": f"{index:07d}", "index": index, "score": score, "n_tokens": tokens}
                row.update(mean=score / tokens, frac_pos=rng.random() / 2, frac_neg=rng.random() / 4)
                out.write(json.dumps(row) + "\n")
        (folder / "scores" / "run.json").write_text(json.dumps({"data_sha256": file_sha256(data)}))
    command = [sys.executable, "-m", "vdtrain", "filter", "select", "--scores", str(scores), "--data", str(data)]
    command += ["--strategy", "lowest", "--fraction", "0.1", "--output", str(folder / "kept.json")]
    start = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "select_rows": count,
        "data_gb": data.stat().st_size / 1e9,
        "wall_s": time.time() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gb": usage.ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 665_000])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-proc", type=int, default=2, help="dataset_num_proc of the runs")
    parser.add_argument("--images", type=int, default=10_000, help="distinct image files the samples name")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vdtrain_bench_data"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--select", type=int, default=None, help="measure `filter select` on this many scores alone")
    args = parser.parse_args()
    if args.select:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(bench_select(args.workdir, args.select)))
        return
    if args.child:
        child(args)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    prepare(args.workdir, args.sizes, args.images)
    print("| N | processes | cache | first step (wall s) | CPU s | peak RSS GB (workers) | built by ranks | load |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for procs in args.procs:
            cache = args.workdir / f"cache_{size}_{procs}"
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            for label in ("cold", "warm"):
                row = run(args.workdir, size, procs, args.num_proc, cache, label)
                print(
                    f"| {size:,} | {procs} | {label} | {row['first_step_s']:.0f} | {row['cpu_s']:.0f} | "
                    f"{row['peak_rss_gb']:.2f} ({row['worker_peak_rss_gb']:.2f}) | {row['built_by_ranks']} | "
                    f"{row['load_average']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
