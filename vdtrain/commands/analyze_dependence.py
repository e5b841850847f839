"""`vdtrain analyze dependence`: objects of generated captions by visual dependence (thesis Fig. 5.2 and 5.5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vdtrain.commands import options
from vdtrain.errors import UsageError

DESCRIPTION = (
    "Teacher-force generated captions with the clean and the noised image, compute d of every caption token, map "
    "CHAIR's object mentions to their tokens and count grounded and hallucinated object tokens by d (thesis Fig. "
    "5.2) and the token groups near hallucinations (Fig. 5.5). Writes OUT/dependence.json and "
    "OUT/figures/{objects_by_dependence,hallucination_distance}.png."
)


def build_parser() -> argparse.ArgumentParser:
    from vdtrain.analysis.prompts import DEFAULT_PROMPT
    from vdtrain.evaluation.lemmatize import LEMMATIZERS
    from vdtrain.evaluation.reports import default_cache_dir

    p = options.parser("vdtrain analyze dependence", DESCRIPTION)
    options.add_teacher_forcing_options(p)
    options.add_batch_size(p, 8, "captions")
    p.add_argument("--captions", required=True, help="captions .jsonl/.json (from vdtrain eval generate / eval run)")
    p.add_argument("--image-folder", required=True, help="folder of the captions' images (COCO val2014)")
    p.add_argument("--coco-dir", help="folder with instances_val2014.json and captions_val2014.json (+ train2014)")
    p.add_argument("--instances", action="append", default=[], help="a COCO-format instances file (repeatable)")
    p.add_argument("--coco-captions", action="append", default=[], help="a COCO-format captions file (repeatable)")
    p.add_argument("--output-dir", required=True, help="dependence.json and figures/ go here")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt of captions that carry none")
    p.add_argument("--lemmatizer", choices=LEMMATIZERS, default="nltk", help="CHAIR's lemmatizer (nltk: OPERA's)")
    p.add_argument("--synonyms", help="synonyms file (default: the 80 COCO categories)")
    p.add_argument("--nltk-data", help="NLTK data directory to search first")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="CHAIR ground-truth cache")
    return p


def main(argv: list[str]) -> int:
    """`vdtrain analyze dependence`: write dependence.json and the Fig. 5.2 / 5.5 figures."""
    args = build_parser().parse_args(argv)
    from vdtrain.analysis.figures import plot_hallucination_distance, plot_objects_by_dependence
    from vdtrain.analysis.object_dependence import analyze_dependence, load_caption_records
    from vdtrain.evaluation.chair import load_synonyms
    from vdtrain.evaluation.chair_truth import build_ground_truth, coco_annotation_files
    from vdtrain.evaluation.nltk_check import require_nltk_data
    from vdtrain.io import atomic_write_json

    instances, references = coco_annotation_files(args.coco_dir) if args.coco_dir else ([], [])
    instances += [Path(p) for p in args.instances]
    references += [Path(p) for p in args.coco_captions]
    if not instances and not references:
        raise UsageError("give --coco-dir, or --instances / --coco-captions files (CHAIR's ground truth)")
    require_nltk_data(args.nltk_data, args.lemmatizer, fetch=True)
    captions = load_caption_records(args.captions)
    synonyms = load_synonyms(args.synonyms)
    ground_truth = build_ground_truth(
        instances, references, synonyms, args.lemmatizer, cache_dir=args.cache_dir, nltk_data=args.nltk_data
    )
    model, processor, adapter = options.load_model(args)
    result = analyze_dependence(
        model,
        processor,
        captions,
        ground_truth,
        image_folder=args.image_folder,
        synonyms=synonyms,
        lemmatizer=args.lemmatizer,
        adapter=adapter,
        noise_step=args.noise_step,
        seed=args.seed,
        batch_size=args.batch_size,
        max_length=args.max_length,
        prompt=args.prompt,
        progress=not args.no_progress,
    )
    out = Path(args.output_dir)
    result["settings"] |= {"model": args.model, "adapter": args.adapter, "captions": str(args.captions)}
    atomic_write_json(out / "dependence.json", result, indent=1)
    totals = result["totals"]
    plot_objects_by_dependence(totals, out / "figures" / "objects_by_dependence.png")
    plot_hallucination_distance(totals["hallucination_distance"], out / "figures" / "hallucination_distance.png")
    for kind in ("grounded", "hallucinated"):
        groups = ", ".join(f"{group} {count}" for group, count in totals["object_tokens_by_group"][kind].items())
        print(f"{kind}: {totals['mentions'][kind]} mentions, object tokens {groups}")
    if result["errors"]:
        print(f"{len(result['errors'])} captions could not be analysed (see dependence.json 'errors')")
    print(f"-> {out / 'dependence.json'}")
    return 0
