"""`vdtrain demo`: the whole pipeline on a CPU in minutes: synthetic data, a tiny LLaVA trained with and without
visual-dependence weighting from one shared checkpoint, greedy captions and POPE answers, CHAIR, POPE, a report.

Protocol, per seed: plain MLE to half of `--steps` (one checkpoint), then each variant resumes from that checkpoint
with the same batch order and learning-rate schedule to the end (`vd_start=0.5`: re-weighting starts at the branch
point). The data are drawn once (data seed 0); seeds change the model's initialisation, batch order and VD noise.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from vdtrain.demo import resume
from vdtrain.demo.data import PAIRS, build_demo_dataset
from vdtrain.demo.evaluate import evaluate_model, match_length, mean_words
from vdtrain.demo.model import (
    count_parameters,
    demo_corpus,
    demo_model,
    demo_processor,
    demo_tokenizer,
    load_checkpoint_model,
    pretrain_vision_tower,
    train_demo_model,
)
from vdtrain.demo.settings import (
    CAPTION_PROMPT,
    CLASS_INDEX,
    EVAL_SPLITS,
    LENGTH_MATCHED,
    VARIANTS,
    Context,
    DemoSettings,
    length_row,
    load_processor,
)
from vdtrain.io import atomic_write_json, read_json, read_jsonl


def init_process(threads: int, nltk_data: str | None) -> None:
    """Per-process setup of the demo (the command's process and each worker): thread count, quiet libraries, NLTK
    path."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    # each variant resumes the MLE trunk's checkpoint with its own vd_* settings by design: not news to report
    logging.getLogger("vdtrain.training.identity").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if nltk_data:
        from vdtrain.evaluation.nltk_check import add_nltk_data_path

        add_nltk_data_path(nltk_data)


# ------------------------------------------------------------------------------------------------------ training


def train_trunk(ctx: Context, seed: int) -> str:
    """Plain MLE from a random initialisation to the branch point; returns the checkpoint directory."""
    s, out, branch = ctx.settings, ctx.run_dir(seed, "trunk"), ctx.settings.steps // 2
    model = demo_model(load_processor(ctx), s.model, seed=seed)
    train = read_json(ctx.paths.meta)["images"]["train"]
    labels = [sorted({CLASS_INDEX[o["name"]] for o in r["objects"]}) for r in train]
    images = [ctx.paths.image_folder / r["file_name"] for r in train]
    pretrain_vision_tower(
        model, load_processor(ctx), images, labels, steps=s.vision_steps, seed=seed, progress=ctx.progress
    )
    _train(ctx, model, out, seed, stop_at=branch, label=f"seed{seed} trunk")
    return str(out / f"checkpoint-{branch}")


def _train(ctx: Context, model: Any, out: Any, seed: int, **kwargs: Any) -> Any:
    """`train_demo_model` on the demo's training set with the run's settings (the trunk and every variant)."""
    s = ctx.settings
    return train_demo_model(
        model,
        load_processor(ctx),
        ctx.paths.train_json,
        ctx.paths.image_folder,
        out,
        seed=seed,
        steps=s.steps,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        progress=ctx.progress,
        **kwargs,
    )


def train_variant(ctx: Context, seed: int, variant: str, checkpoint: str) -> tuple[Any, dict[str, Any]]:
    """Resume `checkpoint` with `variant`'s loss to the end; returns the model and its training log summary."""
    s, out = ctx.settings, ctx.run_dir(seed, variant)
    options = {"vd_temperature": s.temperature, "vd_noise_step": s.noise_step, **VARIANTS[variant]}
    model = demo_model(load_processor(ctx), s.model, seed=seed)  # its weights come from `checkpoint` on resume
    trainer = _train(ctx, model, out, seed, resume_from=checkpoint, label=f"seed{seed} {variant}", **options)
    logs = [e for e in trainer.state.log_history if "loss" in e and e["step"] > s.steps // 2]  # after the branch
    summary: dict[str, Any] = {"final_loss": logs[-1]["loss"], "losses": [[e["step"], e["loss"]] for e in logs]}
    summary |= {k: v for k, v in logs[-1].items() if k.startswith("vd_")}
    trainer.model.save_pretrained(out / "model")
    load_processor(ctx).save_pretrained(out / "model")  # a whole model folder for `eval generate --model`
    return trainer.model.eval(), summary


# ------------------------------------------------------------------------------------------------------ jobs


def variant_job(ctx: Context, seed: int, variant: str, checkpoint: str) -> dict[str, Any]:
    """Train one variant from the seed's branch checkpoint and evaluate it."""
    start = time.time()
    model, training = train_variant(ctx, seed, variant, checkpoint)
    out, trained = ctx.run_dir(seed, variant), time.time()
    metrics = evaluate_model(ctx, model, out)
    subset = mean_words(read_jsonl(out / "captions_counterfactual.jsonl")[: ctx.settings.length_images])
    seconds = {"train_s": trained - start, "eval_s": time.time() - trained}
    return {"metrics": metrics, "training": training, "subset_length": subset, "seconds": seconds}


def length_job(ctx: Context, seed: int, variant: str, target: float) -> dict[str, Any]:
    """Decode the seed's MLE model with the end-of-turn bias that matches `variant`'s caption length."""
    start = time.time()
    model = load_checkpoint_model(ctx.run_dir(seed, "mle") / "model").eval()
    out = ctx.run_dir(seed, length_row(variant))
    out.mkdir(parents=True, exist_ok=True)
    bias, subset_length = match_length(ctx, model, target, out)
    metrics = evaluate_model(ctx, model, out, eos_bias=bias, pope=False)
    result = {"metrics": metrics, "eos_bias": bias, "subset_length": subset_length, "target_length": target}
    return result | {"seconds": {"eval_s": time.time() - start}}


def _run_jobs(ctx: Context, fn: Any, jobs: list[tuple], names: list[str], desc: str) -> list[Any]:
    """Run `fn(ctx, *job)` for every job not finished by an earlier invocation, in this process or in
    `settings.workers` spawned processes; `names[k]` is job k's folder under `runs/seed<N>/`."""
    from tqdm.auto import tqdm

    folders = [ctx.run_dir(job[0], name) for job, name in zip(jobs, names)]
    results: list[Any] = [resume.finished(folder) for folder in folders]
    todo = [k for k, result in enumerate(results) if result is None]
    if len(todo) < len(jobs):
        print(f"{desc}: {len(jobs) - len(todo)} of {len(jobs)} jobs done by an earlier run, kept", file=sys.stderr)
    for k in todo:
        resume.start_afresh(folders[k])

    def done(k: int, result: Any) -> None:
        resume.mark_finished(folders[k], result)
        results[k] = result

    # one bar per phase on a terminal (the jobs' own bars stay off), one plain line per finished job elsewhere
    tty, quiet, start = sys.stderr.isatty(), replace(ctx, progress=False), time.time()
    bar = tqdm(total=len(todo), desc=desc, unit="job", leave=True, disable=not todo or not tty)

    def finish(k: int, result: Any) -> None:
        done(k, result)
        bar.update(1)
        if not tty:
            count = sum(results[j] is not None for j in todo)
            print(f"{desc}: {names[k]} (seed {jobs[k][0]}) done, {count}/{len(todo)} in {time.time() - start:.0f} s")

    workers = min(ctx.settings.workers, len(todo))
    if workers <= 1:
        for k in todo:
            finish(k, fn(quiet, *jobs[k]))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, get_context("spawn"), init_process, (threads, ctx.nltk_data)) as pool:
            futures = {pool.submit(fn, quiet, *jobs[k]): k for k in todo}
            for future in as_completed(futures):
                finish(futures[future], future.result())
    bar.close()
    return results
    threads = max(1, (os.cpu_count() or 1) // workers)
    quiet = replace(ctx, progress=False)
    with ProcessPoolExecutor(workers, get_context("spawn"), init_process, (threads, ctx.nltk_data)) as pool:
        futures = {pool.submit(fn, quiet, *jobs[k]): k for k in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="job"):
            done(futures[future], future.result())
    return results


# ------------------------------------------------------------------------------------------------------ orchestration


def prepare(root: Path, settings: DemoSettings, nltk_data: str | None, overwrite: bool = False) -> Context:
    """Check NLTK, open the output folder (resumed when it holds this run, refused when it holds another one unless
    `overwrite`), draw the data, train the tokenizer, save the processor, build the CHAIR ground truth."""
    from vdtrain.evaluation.chair import load_synonyms
    from vdtrain.evaluation.chair_truth import build_ground_truth
    from vdtrain.evaluation.nltk_check import require_nltk_data

    require_nltk_data(nltk_data, fetch=True)  # before minutes of training, not after; fetched on first use
    state = resume.open_run(root, settings, overwrite)
    paths = resume.load_paths(root, state) if (root / "processor").is_dir() else None
    if paths is None:  # the data and the processor, once per run folder
        paths = build_demo_dataset(root / "data", settings.data)
        questions = {q["text"] for f in paths.pope.values() for p in f.values() for q in read_jsonl(p)}
        prompts = [CAPTION_PROMPT, *questions]
        tokenizer = demo_tokenizer(demo_corpus(paths.train_json, prompts), settings.model.vocab_size)
        demo_processor(tokenizer, settings.model).save_pretrained(root / "processor")
        resume.save_paths(root, state, paths)
    synonyms = load_synonyms(paths.synonyms)
    ground_truth = {
        split: build_ground_truth(
            [paths.instances[split]],
            [paths.captions[split]],
            synonyms=synonyms,
            cache_dir=root / "cache",
            nltk_data=nltk_data,
        )
        for split in EVAL_SPLITS
    }
    return Context(str(root), settings, paths, ground_truth, nltk_data)


def _inspect_example(ctx: Context, seed: int) -> tuple[Any, Path, str] | None:
    """Seed's MLE model and its first counterfactual caption that names an absent partner (else the first one)."""
    captions = read_jsonl(ctx.run_dir(seed, "mle") / "captions_counterfactual.jsonl")
    images = read_json(ctx.paths.meta)["images"]["counterfactual"]
    objects = {r["file_name"]: {o["name"] for o in r["objects"]} for r in images}
    absent = {name: {b for a, b in PAIRS if a in objs and b not in objs} for name, objs in objects.items()}
    named = [c for c in captions if any(b in c["caption"].lower() for b in absent[c["image"]])]
    chosen = (named or captions or [None])[0]
    if chosen is None:
        return None
    model = load_checkpoint_model(ctx.run_dir(seed, "mle") / "model").eval()
    return model, ctx.paths.image_folder / chosen["image"], chosen["caption"]


def _analysis(ctx: Context, root: Path, seed: int) -> dict[str, Any] | None:
    """Fig. 5.2 / 5.5 of the seed's MLE model on its counterfactual captions; a failure is reported, never raised."""
    from vdtrain.demo.evaluate import analyze_captions

    try:
        model = load_checkpoint_model(ctx.run_dir(seed, "mle") / "model").eval()
        analysis = analyze_captions(ctx, model, ctx.run_dir(seed, "mle"), root / "figures" / "analysis", seed)
    except Exception as error:  # an analysis must not cost the whole run
        return {"note": f"_The dependence analysis failed: {type(error).__name__}: {error}_", "totals": None}
    analysis["figures"] = [Path(f).relative_to(root).as_posix() for f in analysis["figures"]]  # relocatable
    analysis["note"] = (
        f"Seed {seed}'s MLE captions of the counterfactual images teacher-forced with the clean and the noised image "
        f"(noise step {ctx.settings.noise_step}); each CHAIR object mention is mapped to the tokens that spell it "
        "and counted by their d (`vdtrain analyze dependence`; `figures/analysis/dependence.json`)."
    )
    return analysis


def run_demo(
    root: str | Path,
    settings: DemoSettings,
    nltk_data: str | None = None,
    command: str = "vdtrain demo",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the protocol for every seed (going on from the jobs an earlier invocation finished in `root`), write
    `results.json`, `report.md` and the figures; return the results."""
    from vdtrain.demo.report import inspect_figure, machine_description, write_report

    start, load_start = time.time(), _load()
    root = Path(root)
    ctx = prepare(root, settings, nltk_data, overwrite)
    seeds = list(range(settings.seeds))
    _run_jobs(ctx, train_trunk, [(s,) for s in seeds], ["trunk"] * len(seeds), "MLE to the branch point")
    branch = f"checkpoint-{settings.steps // 2}"
    jobs = [(s, v, str(ctx.run_dir(s, "trunk") / branch)) for s in seeds for v in VARIANTS]
    runs: dict[str, dict[str, Any]] = {str(s): {} for s in seeds}
    variants = _run_jobs(ctx, variant_job, jobs, [v for _, v, _ in jobs], "variants: train + evaluate")
    for (s, v, _), result in zip(jobs, variants):
        runs[str(s)][v] = result
    length_jobs = [(s, v, runs[str(s)][v]["subset_length"]) for s in seeds for v in LENGTH_MATCHED]
    names = [length_row(v) for _, v, _ in length_jobs]
    for (s, v, _), result in zip(length_jobs, _run_jobs(ctx, length_job, length_jobs, names, "length-matched MLE")):
        runs[str(s)][length_row(v)] = result
    n_pope = {s: len(read_jsonl(ctx.paths.pope[s]["random"])) for s in EVAL_SPLITS}
    results: dict[str, Any] = {
        "settings": asdict(settings),
        "rows": [*VARIANTS, *(length_row(v) for v in LENGTH_MATCHED)],
        "pairs": [*((v, "mle") for v in VARIANTS if v != "mle"), *((v, length_row(v)) for v in LENGTH_MATCHED)],
        "setup": {
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine_description(),
            "workers": settings.workers,
            "load_start": load_start,
            "pairs": ", ".join(f"{a}→{b}" for a, b in PAIRS),
            "caption_images": settings.caption_images or "all",
            "pope_images": settings.pope_images or "all",
            "pope_questions": ", ".join(f"{s}: {n} per type before the image cut" for s, n in n_pope.items()),
            "model": settings.model.describe(),
            "parameters": count_parameters(demo_model(load_processor(ctx), settings.model)),
            "epochs": settings.steps * settings.batch_size / settings.data.n_train,
            "data_stats": read_json(ctx.paths.meta)["stats"],
        },
        "runs": runs,
    }
    results["analysis"] = _analysis(ctx, root, seeds[0])
    example = _inspect_example(ctx, seeds[0])
    figure, note = inspect_figure(root / "figures" / "inspect.png", load_processor(ctx), example, settings.noise_step)
    results["setup"] |= {"wall_time_s": time.time() - start, "load_end": _load()}
    atomic_write_json(root / "results.json", results, indent=1, default=str)
    results["table"] = write_report(root, results, figure, note)
    return results


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
