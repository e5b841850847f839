"""`vdtrain analyze dependence`: objects of generated captions by visual dependence (thesis Fig. 5.2 and 5.5)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from vdtrain.analysis.dependence import DEFAULT_PROMPT, analyze_dependence
from vdtrain.evaluation.lemmatize import LEMMATIZERS
from vdtrain.evaluation.questions import _image_id

try:  # the JSON/JSONL readers are moving to vdtrain.io
    from vdtrain.io import read_objects as read_records
except ImportError:
    from vdtrain.evaluation.questions import read_records


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model`, `--adapter`, `--dtype`, `--device`, `--seed`, `--noise-step`, `--max-length`, as elsewhere."""
    parser.add_argument("--model", required=True, help="model directory (or a LoRA adapter's base model)")
    parser.add_argument("--adapter", help="LoRA adapter directory, applied without merging")
    parser.add_argument("--dtype", choices=("auto", "bfloat16", "float16", "float32"), default="auto",
                        help="auto: bf16 on a GPU, fp32 on CPU")  # fmt: skip
    parser.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda when there is one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-sample noise (sample i: (seed, i))")
    parser.add_argument("--noise-step", type=int, default=900, help="diffusion step of the noised image (0-999)")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per sequence after image expansion")


def load_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """`(model, processor, adapter)` in eval mode on `--device` in `--dtype`."""
    import torch

    from vdtrain.modeling import load_for_inference

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    model, processor, adapter = load_for_inference(args.model, args.adapter, dtype=dtype)
    return model.to(device), processor, adapter


def load_caption_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Captions from `vdtrain eval generate` / `eval run` (or any records with `image` and `caption` or `text`),
    each with an integer `image_id` (given, or read from a COCO file name)."""
    out = []
    for number, record in enumerate(read_records(path), 1):
        where = f"{path}: record {number}"
        if not record.get("image"):
            raise ValueError(f"{where} has no 'image': the analysis teacher-forces each caption with its image")
        caption = record.get("caption", record.get("text"))
        if not isinstance(caption, str):
            raise ValueError(f"{where} has no caption text ('caption' or 'text')")
        image_id = _image_id(record.get("image_id", record["image"]), where)
        out.append({**record, "caption": caption, "image_id": image_id})
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vdtrain analyze dependence",
        description="Teacher-force generated captions with the clean and the noised image, compute d of every "
        "caption token, map CHAIR's object mentions to their tokens and count grounded and hallucinated object "
        "tokens by d (thesis Fig. 5.2) and the token groups near hallucinations (Fig. 5.5). Writes "
        "OUT/dependence.json and OUT/figures/{objects_by_dependence,hallucination_distance}.png.",
    )
    add_model_arguments(p)
    p.add_argument("--captions", required=True, help="captions .jsonl/.json (from vdtrain eval generate / eval run)")
    p.add_argument("--image-folder", required=True, help="folder of the captions' images (COCO val2014)")
    p.add_argument("--coco-dir", help="folder with instances_val2014.json and captions_val2014.json (+ train2014)")
    p.add_argument("--instances", action="append", default=[], help="a COCO-format instances file (repeatable)")
    p.add_argument("--coco-captions", action="append", default=[], help="a COCO-format captions file (repeatable)")
    p.add_argument("--output-dir", required=True, help="dependence.json and figures/ go here")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt of captions that carry none (%(default)r)")
    p.add_argument("--lemmatizer", choices=LEMMATIZERS, default="nltk", help="CHAIR's lemmatizer (nltk: OPERA's)")
    p.add_argument("--synonyms", help="synonyms file (default: the 80 COCO categories)")
    p.add_argument("--nltk-data", help="NLTK data directory to search first")
    p.add_argument("--cache-dir", help="CHAIR ground-truth cache (default: vdtrain eval chair's)")
    p.add_argument("--batch-size", type=int, default=8, help="captions per forward (8)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain analyze dependence`: write dependence.json and the Fig. 5.2 / 5.5 figures."""
    from vdtrain.analysis.figures import plot_hallucination_distance, plot_objects_by_dependence
    from vdtrain.evaluation.chair import load_synonyms
    from vdtrain.evaluation.chair_cli import _default_cache_dir
    from vdtrain.evaluation.chair_truth import build_ground_truth, coco_annotation_files
    from vdtrain.evaluation.nltk_check import MissingNLTKDataError, require_nltk_data

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        instances, references = coco_annotation_files(args.coco_dir) if args.coco_dir else ([], [])
        instances += [Path(p) for p in args.instances]
        references += [Path(p) for p in args.coco_captions]
        if not instances and not references:
            parser.error("give --coco-dir, or --instances / --coco-captions files (CHAIR's ground truth)")
        require_nltk_data(args.nltk_data, args.lemmatizer)
        captions = load_caption_records(args.captions)
        synonyms = load_synonyms(args.synonyms)
        ground_truth = build_ground_truth(
            instances, references, synonyms, args.lemmatizer, cache_dir=args.cache_dir or _default_cache_dir(),
            nltk_data=args.nltk_data,
        )  # fmt: skip
        model, processor, adapter = load_model(args)
        result = analyze_dependence(
            model, processor, captions, ground_truth, image_folder=args.image_folder, synonyms=synonyms,
            lemmatizer=args.lemmatizer, adapter=adapter, noise_step=args.noise_step, seed=args.seed,
            batch_size=args.batch_size, max_length=args.max_length, prompt=args.prompt,
            progress=not args.no_progress,
        )  # fmt: skip
    except (MissingNLTKDataError, ValueError, FileNotFoundError) as error:
        print(f"vdtrain analyze dependence: error: {error}", file=sys.stderr)
        return 1
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["settings"] |= {"model": args.model, "adapter": args.adapter, "captions": str(args.captions)}
    tmp = out / "dependence.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out / "dependence.json")
    totals = result["totals"]
    plot_objects_by_dependence(totals, out / "figures" / "objects_by_dependence.png")
    plot_hallucination_distance(totals["hallucination_distance"], out / "figures" / "hallucination_distance.png")
    groups = totals["object_tokens_by_group"]
    for kind in ("grounded", "hallucinated"):
        print(f"{kind}: {totals['mentions'][kind]} mentions, object tokens " + ", ".join(
            f"{group} {count}" for group, count in groups[kind].items()))  # fmt: skip
    if result["errors"]:
        print(f"{len(result['errors'])} captions could not be analysed (see dependence.json 'errors')")
    print(f"-> {out / 'dependence.json'}")
    return 0
