"""`vdtrain eval generate`: the command line that loads a model and answers a question file (resumable)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vdtrain.commands import options

FORMATS = ("pope", "chair", "images")  # vdtrain.evaluation.questions.FORMATS (not imported: --help stays instant)
# vdtrain.evaluation.generate.DecodingOptions' defaults, for the help text without importing torch
DECODING_DEFAULTS = {
    "decoding": "greedy", "max_new_tokens": 512, "do_sample": False, "temperature": 1.0, "top_p": 1.0,
    "num_beams": 1, "vcd_alpha": 1.0, "vcd_beta": 0.1, "vcd_noise_step": 500, "seed": 0,
}  # fmt: skip


def load_model(
    model_path: str, adapter_path: str | None = None, dtype: str = "auto", device: str = "auto"
) -> tuple[Any, Any, Any]:
    """`(model, processor, adapter)` for inference; `--dtype`/`--device` as every command reads them."""
    return options.load_model(argparse.Namespace(model=model_path, adapter=adapter_path, dtype=dtype, device=device))


def add_decoding_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """The decoding flags shared by `generate` and `run` (`defaults` None leaves them unset, for config overrides)."""
    base = DECODING_DEFAULTS if defaults is None else dict(defaults)
    group = parser.add_argument_group("decoding (defaults: the protocol config's, else greedy, 512 tokens)")
    flag = group.add_argument
    flag(
        "--decoding",
        choices=("greedy", "vcd"),
        default=base.get("decoding"),
        help="greedy: transformers generate (sampling / beams by the flags below); vcd: visual contrastive decoding",
    )
    flag("--max-new-tokens", type=int, default=base.get("max_new_tokens"), help="most tokens per answer")
    flag("--do-sample", action="store_true", default=base.get("do_sample"), help="sample instead of greedy")
    flag("--temperature", type=float, default=base.get("temperature"), help="sampling temperature")
    flag("--top-p", type=float, default=base.get("top_p"), help="nucleus sampling mass")
    flag("--num-beams", type=int, default=base.get("num_beams"), help="beam search (greedy decoding only)")
    flag("--vcd-alpha", type=float, default=base.get("vcd_alpha"), help="VCD contrast strength (1.0)")
    flag("--vcd-beta", type=float, default=base.get("vcd_beta"), help="VCD plausibility cut-off (0.1)")
    flag("--vcd-noise-step", type=int, default=base.get("vcd_noise_step"), help="VCD diffusion noise step (500)")
    options.add_seed(group, base.get("seed"), "the VCD noise and sampling; 0 when unset")
    options.add_batch_size(group, 8 if defaults is None else defaults.get("batch_size"), "prompts (8 when unset)")


def decoding_options(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> Any:
    """`DecodingOptions` from `base` (a config's values) overridden by the flags that were given."""
    from vdtrain.evaluation.generate import DecodingOptions

    values = dict(base or {})
    for name in asdict(DecodingOptions()):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return DecodingOptions(**values)


def build_parser() -> argparse.ArgumentParser:
    p = options.parser(
        "vdtrain eval generate",
        "Generate answers (POPE), captions (CHAIR) or descriptions for a question file; resumable.",
    )
    options.add_model_options(p)
    p.add_argument("--questions", required=True, help="POPE/CHAIR jsonl, an image folder or a .txt image list")
    p.add_argument(
        "--image-folder",
        help="where the images are (default: --questions when it is a folder of images, else the current folder)",
    )
    p.add_argument("--output", required=True, help="answers .jsonl (resumed if it exists)")
    p.add_argument("--format", choices=FORMATS, help="question format (default: guessed)")
    p.add_argument("--prompt", help="question asked about every image (replaces the file's text)")
    p.add_argument("--prompt-suffix", default="", help="appended to every question")
    p.add_argument("--limit", type=options.positive_int, help="only the first N questions")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    add_decoding_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval generate`: answer a question file with a model (and LoRA adapter) into a jsonl file."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from vdtrain.evaluation.generate import generate_answers, generation_settings, remaining_questions, run_settings
    from vdtrain.evaluation.questions import load_questions

    decoding = decoding_options(args)
    questions, fmt = load_questions(args.questions, args.format, args.prompt)
    questions = questions[: args.limit] if args.limit else questions
    image_folder = args.image_folder or (args.questions if Path(args.questions).is_dir() else ".")
    settings = run_settings(args.model, args.adapter, args.questions, args.prompt, args.dtype)
    run = generation_settings(decoding, fmt, args.prompt_suffix, settings)
    if not args.overwrite and not remaining_questions(questions, args.output, run):  # before minutes of loading
        print(f"0 new answers ({len(questions)} questions, all answered in {args.output} already) -> {args.output}")
        return 0
    model, processor, adapter = load_model(args.model, args.adapter, args.dtype, args.device)
    written = generate_answers(
        model,
        processor,
        questions,
        args.output,
        image_folder=image_folder,
        fmt=fmt,
        options=decoding,
        adapter=adapter,
        prompt_suffix=args.prompt_suffix,
        batch_size=args.batch_size,
        settings=settings,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"{written} new answers ({len(questions)} questions) -> {args.output}")
    return 0


def on_interrupt(argv: list[str]) -> str:
    """What Ctrl-C leaves: every answer written so far; the same command resumes after them."""
    output = options.flag_value(argv, "--output") or "the output file"
    return f"the answers written so far are kept in {output}; rerun the same command to resume"
