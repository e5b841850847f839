"""Evaluating a demo model: greedy captions scored by CHAIR and the partner rate, POPE, length matching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vdtrain.demo.data import PAIRS
from vdtrain.demo.settings import EVAL_SPLITS, POPE_VARIANTS, Context, load_processor
from vdtrain.io import atomic_write_json, read_jsonl


def _caption_questions(ctx: Context, split: str, limit: int | None = None) -> list[dict]:
    questions = read_jsonl(ctx.paths.caption_questions[split])
    n = ctx.settings.caption_images if limit is None else limit
    return questions[:n] if n else questions


def generate_captions(
    ctx: Context, model: Any, split: str, out: Path, eos_bias: float = 0.0, limit: int | None = None
) -> list[dict]:
    """Greedy captions (`{"image_id", "caption", "question_id"}`) for one split, with an end-of-turn logit bias."""
    from vdtrain.evaluation.generate import DecodingOptions, generate_answers

    processor = load_processor(ctx)
    questions = _caption_questions(ctx, split, limit)
    eos = processor.tokenizer.eos_token_id
    model.generation_config.sequence_bias = {(eos,): float(eos_bias)} if eos_bias else None
    try:
        generate_answers(
            model,
            processor,
            questions,
            out,
            image_folder=ctx.paths.image_folder,
            fmt="chair",
            options=DecodingOptions(max_new_tokens=ctx.settings.max_new_tokens),
            batch_size=48,
            overwrite=True,
            progress=ctx.progress,
        )
    finally:
        model.generation_config.sequence_bias = None
    image_of = {q["question_id"]: q["image_id"] for q in questions}
    return [
        {"question_id": a["question_id"], "image_id": image_of[a["question_id"]], "caption": a["caption"]}
        for a in read_jsonl(out)
    ]


def caption_metrics(ctx: Context, split: str, captions: list[dict]) -> dict[str, float]:
    """CHAIR_s, CHAIR_i, Recall, mean length (words) and, where the split has eligible images, the partner rate."""
    from vdtrain.demo.data import partner_hallucination_rate
    from vdtrain.evaluation.chair import evaluate_chair, load_synonyms

    metrics = {f"{split}/length": mean_words(captions)}
    try:
        chair = evaluate_chair(captions, ctx.ground_truth[split], synonyms=load_synonyms(ctx.paths.synonyms))
    except ValueError:  # CHAIR_i undefined: no caption names an object (an undertrained model); leave CHAIR out
        chair = None
    if chair is not None:
        metrics |= {f"{split}/{k}": chair["overall_metrics"][k] for k in ("CHAIRs", "CHAIRi", "Recall")}
    try:
        partner = partner_hallucination_rate(captions, ctx.paths.instances[split], PAIRS, ctx.paths.synonyms)
    except ValueError:  # no image of this split shows an A without its partner
        return metrics
    metrics[f"{split}/partner_rate"] = partner["rate"]
    return metrics


def pope_metrics(ctx: Context, model: Any, split: str, out_dir: Path) -> dict[str, float]:
    """POPE on one split: each distinct question is answered once (greedy, two tokens), then scored per variant."""
    from vdtrain.evaluation.generate import DecodingOptions, generate_answers
    from vdtrain.evaluation.pope import average_metrics, evaluate_pope

    n = ctx.settings.pope_images
    images = [q["image"] for q in read_jsonl(ctx.paths.caption_questions[split])]
    keep = set(images[:n] if n else images)
    files = {v: [q for q in read_jsonl(ctx.paths.pope[split][v]) if q["image"] in keep] for v in POPE_VARIANTS}
    distinct = list(dict.fromkeys((q["image"], q["text"]) for qs in files.values() for q in qs))
    asked = [{"question_id": i, "image": image, "text": text} for i, (image, text) in enumerate(distinct)]
    out = out_dir / f"pope_{split}.jsonl"
    generate_answers(
        model,
        load_processor(ctx),
        asked,
        out,
        image_folder=ctx.paths.image_folder,
        fmt="pope",
        options=DecodingOptions(max_new_tokens=2),
        batch_size=96,
        overwrite=True,
        progress=ctx.progress,
    )
    answer_of = {(a["image"], a["prompt"]): a["answer"] for a in read_jsonl(out)}
    scored = {}
    for variant, questions in files.items():
        answers = [{"question_id": q["question_id"], "answer": answer_of[q["image"], q["text"]]} for q in questions]
        scored[variant] = evaluate_pope(questions, answers)
    metrics = {f"{split}/pope_{v}_{k}": s["metrics"][k] for v, s in scored.items() for k in ("accuracy", "f1")}
    average = average_metrics(scored)
    metrics |= {f"{split}/pope_accuracy": average["accuracy"], f"{split}/pope_f1": average["f1"]}
    metrics[f"{split}/pope_yes_ratio"] = average["yes_ratio"]
    return metrics


def evaluate_model(ctx: Context, model: Any, out_dir: Path, eos_bias: float = 0.0, pope: bool = True) -> dict:
    """Every metric of one model: captions (CHAIR, partner rate, length) and POPE on both eval splits."""
    metrics: dict[str, float] = {}
    for split in EVAL_SPLITS:
        captions = generate_captions(ctx, model, split, out_dir / f"captions_{split}.jsonl", eos_bias)
        metrics |= caption_metrics(ctx, split, captions)
        if pope:
            metrics |= pope_metrics(ctx, model, split, out_dir)
    return metrics


def mean_words(captions: list[dict]) -> float:
    return sum(len(c["caption"].split()) for c in captions) / max(len(captions), 1)


def match_length(ctx: Context, model: Any, target: float, work: Path) -> tuple[float, float]:
    """Bisect an end-of-turn logit bias so the model's mean caption length on a subset hits `target` words.

    Returns `(bias, length at that bias)`, the closest of the biases tried (0 included).
    """
    n = ctx.settings.length_images

    def length(bias: float) -> float:
        return mean_words(generate_captions(ctx, model, "counterfactual", work / "bisect.jsonl", bias, limit=n))

    tried = {0.0: length(0.0)}
    lo, hi = (0.0, 8.0) if tried[0.0] > target else (-8.0, 0.0)  # a larger bias ends captions sooner
    for _ in range(ctx.settings.length_iters):
        mid = (lo + hi) / 2
        tried[mid] = length(mid)
        lo, hi = (mid, hi) if tried[mid] > target else (lo, mid)
    bias = min(tried, key=lambda b: abs(tried[b] - target))
    return bias, tried[bias]


def analyze_captions(ctx: Context, model: Any, run_dir: Path, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Thesis Fig. 5.2 / 5.5 (`vdtrain analyze dependence`) on a model's counterfactual captions in `run_dir`:
    writes `dependence.json` and the two figures under `out_dir`; returns the totals and the figure paths."""

    from vdtrain.analysis.figures import plot_hallucination_distance, plot_objects_by_dependence
    from vdtrain.analysis.object_dependence import analyze_dependence
    from vdtrain.evaluation.chair import load_synonyms

    split = "counterfactual"
    image_of = {q["question_id"]: q["image_id"] for q in read_jsonl(ctx.paths.caption_questions[split])}
    captions = [a | {"image_id": image_of[a["question_id"]]} for a in read_jsonl(run_dir / f"captions_{split}.jsonl")]
    result = analyze_dependence(
        model,
        load_processor(ctx),
        captions,
        ctx.ground_truth[split],
        image_folder=ctx.paths.image_folder,
        synonyms=load_synonyms(ctx.paths.synonyms),
        noise_step=ctx.settings.noise_step,
        seed=seed,
        batch_size=32,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "dependence.json", result, indent=1)
    figures = [
        plot_objects_by_dependence(result["totals"], out_dir / "objects_by_dependence.png", "MLE, counterfactual"),
        plot_hallucination_distance(
            result["totals"]["hallucination_distance"], out_dir / "hallucination_distance.png", "MLE, counterfactual"
        ),
    ]
    return {"totals": result["totals"], "figures": [str(f) for f in figures], "errors": len(result["errors"])}
