"""`vdtrain eval generate`: batched, resumable answer generation for the CHAIR and POPE protocols.

Questions come as POPE jsonl, the CHAIR image list (same keys, no `label`) or plain images plus one `--prompt`.
Answers are appended to a jsonl file batch by batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vdtrain.data.conversations import load_image
from vdtrain.evaluation.chair import read_records
from vdtrain.models.base import ConversationError, ModelAdapter, get_adapter

FORMATS = ("pope", "chair", "images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_COCO_NAME = re.compile(r"^(?:COCO_[A-Za-z]+\d{4}_)?(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


@dataclass
class DecodingOptions:
    """How answers are decoded; part of a run's identity (a resumed run must use the same)."""

    decoding: str = "greedy"  # "greedy": `model.generate` (sampling / beams via the flags below); "vcd"
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 1
    vcd_alpha: float = 1.0
    vcd_beta: float = 0.1
    vcd_noise_step: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.decoding not in ("greedy", "vcd"):
            raise ValueError(f"decoding must be 'greedy' or 'vcd', got {self.decoding!r}")
        if self.decoding == "vcd" and self.num_beams != 1:
            raise ValueError("VCD decodes greedily or by sampling; it does not support --num-beams > 1")


def coco_image_id(name: str) -> int | None:
    """The COCO image id in `COCO_val2014_000000012345.jpg` or `000000012345.jpg`, else None."""
    match = _COCO_NAME.match(Path(str(name)).name)
    return int(match.group(1)) if match else None


def load_questions(
    path: str | os.PathLike, fmt: str | None = None, prompt: str | None = None
) -> tuple[list[dict], str]:
    """`(questions, format)`: records `{"question_id", "image", "text", ...}` from a question file or image list.

    Args:
        path: POPE jsonl (has `label`), CHAIR list (`question_id`, `image`, `text`), a folder of images or a `.txt`
            list of image names.
        fmt (`str`, *optional*): `pope`, `chair` or `images`; guessed from the file when not given.
        prompt (`str`, *optional*): replaces every question's text; required for plain image lists.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"question file {path} does not exist")
    if path.is_dir() or path.suffix == ".txt":
        if path.is_dir():
            names = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise ValueError(f"{path}: no images listed")
        records = [{"question_id": name, "image": name} for name in names]
        fmt = fmt or "images"
    else:
        records = read_records(path)
        fmt = fmt or ("pope" if any("label" in record for record in records) else "chair")
    if fmt not in FORMATS:
        raise ValueError(f"question format must be one of {FORMATS}, got {fmt!r}")
    seen: set[str] = set()
    for number, record in enumerate(records, 1):
        if not record.get("image"):
            raise ValueError(f"{path}: record {number} has no 'image'")
        record.setdefault("question_id", record["image"])
        if prompt is not None:
            record["text"] = prompt
        if not isinstance(record.get("text"), str):
            raise ValueError(f"{path}: question_id {record['question_id']!r} has no 'text'; pass --prompt")
        key = str(record["question_id"])
        if key in seen:
            raise ValueError(f"{path}: question_id {key!r} appears twice; answers are matched and resumed by id")
        seen.add(key)
    return records, fmt


def resolve_image(image_folder: str | os.PathLike, name: str) -> Path:
    """The image file for `name`, also trying the other COCO naming (`COCO_val2014_` prefix added or dropped)."""
    folder = Path(image_folder)
    path = folder / name
    if path.is_file():
        return path
    image_id = coco_image_id(name)
    if image_id is not None:
        for candidate in (
            f"COCO_val2014_{image_id:012d}.jpg",
            f"COCO_train2014_{image_id:012d}.jpg",
            f"{image_id:012d}.jpg",
        ):
            if (folder / candidate).is_file():
                return folder / candidate
    return path


def read_answers(path: str | os.PathLike) -> list[dict]:
    """Answers already in `path`; a truncated last line (a run killed mid-write) is cut off the file."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records, offset = [], 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        complete = number < len(lines)  # the last piece has no newline after it
        try:
            record = json.loads(line) if line.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = ...
        if record is ... or (record is not None and not complete):
            if complete and any(rest.strip() for rest in lines[number:]):
                raise ValueError(f"{path}:{number}: not a JSON line; the answers file is damaged before its end")
            with open(path, "r+b") as handle:  # drop the unfinished record; it is generated again
                handle.truncate(offset)
            break
        if record is not None:
            records.append(record)
        offset += len(line) + 1
    return records


def answer_record(question: Mapping[str, Any], fmt: str, question_text: str, text: str) -> dict:
    """One output line: the ids the scorers match on, the question as asked, and the answer."""
    record = {"question_id": question["question_id"], "image": question["image"]}
    image_id = coco_image_id(question["image"])
    if image_id is not None:
        record["image_id"] = image_id
    record |= {"prompt": question_text, "text": text}
    if fmt == "pope":
        record["answer"] = text
    elif fmt in ("chair", "images"):
        record["caption"] = text
    return record


def _unwrap(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: LoRA layers stay active


def _tokenizer(processor: Any) -> Any:
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token is None:  # Llama-style tokenizers: padding needs a token, and left padding masks it
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


@torch.no_grad()
def generate_batch(
    model: Any,
    processor: Any,
    adapter: ModelAdapter,
    questions: Sequence[str],
    images: Sequence[Any],
    options: DecodingOptions,
    keys: Sequence[Any] | None = None,
) -> list[str]:
    """Answers to one batch of questions about images, decoded from the new tokens only and stripped.

    Args:
        keys (`Sequence`, *optional*): one id per sample; VCD seeds each sample's noise from it and `options.seed`,
            so an answer does not depend on its batch.
    """
    from vdtrain.evaluation.vcd import noise_like, sample_seeds, vcd_generate

    model = _unwrap(model)
    tokenizer = _tokenizer(processor)
    prompts = [adapter.prompt(question, processor, has_image=True) for question in questions]
    batch = adapter.generation_inputs(processor, prompts, list(images))
    dtype = next(model.parameters()).dtype
    inputs = {
        k: (v.to(model.device, dtype) if v.is_floating_point() else v.to(model.device)) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }
    if options.decoding == "vcd":
        pixels = inputs[adapter.pixel_key]
        noise = noise_like(pixels, sample_seeds(options.seed, keys if keys is not None else range(len(prompts))))
        generator = torch.Generator().manual_seed(options.seed) if options.do_sample else None
        new_tokens = vcd_generate(
            model, inputs, pixel_key=adapter.pixel_key, alpha=options.vcd_alpha, beta=options.vcd_beta,
            noise_step=options.vcd_noise_step, max_new_tokens=options.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, do_sample=options.do_sample, temperature=options.temperature,
            top_p=options.top_p, noise=noise, generator=generator,
        )  # fmt: skip
    else:
        sampling = {"temperature": options.temperature, "top_p": options.top_p} if options.do_sample else {}
        output = model.generate(
            **inputs, max_new_tokens=options.max_new_tokens, do_sample=options.do_sample,
            num_beams=options.num_beams, pad_token_id=tokenizer.pad_token_id, **sampling,
        )  # fmt: skip
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _check_settings(output: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to resume an answers file that was started with other settings (the answers would mix)."""
    meta = output.with_name(output.name + ".meta")
    if overwrite:
        output.unlink(missing_ok=True)
    elif meta.exists() and output.exists():
        before = json.loads(meta.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            details = ", ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"{output} was started with other settings ({details}); pass another --output, or --overwrite"
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(settings, indent=1, sort_keys=True, default=str))


def _batches(
    todo: list[dict], image_folder: str | os.PathLike, batch_size: int
) -> Iterator[tuple[list[dict], list[Any]]]:
    """Batches of questions with their images, the next batch's images loading while this one generates."""

    def load(batch: list[dict]) -> list[Any]:
        return [load_image(resolve_image(image_folder, q["image"]), str(q["question_id"])) for q in batch]

    chunks = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            images = pending.result()
            if index + 1 < len(chunks):
                pending = pool.submit(load, chunks[index + 1])
            yield chunk, images


def generate_answers(
    model: Any,
    processor: Any,
    questions: Sequence[dict],
    output: str | os.PathLike,
    *,
    image_folder: str | os.PathLike,
    fmt: str = "chair",
    options: DecodingOptions | None = None,
    adapter: ModelAdapter | None = None,
    prompt_suffix: str = "",
    batch_size: int = 8,
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> int:
    """Answer every question not yet answered in `output` (jsonl, appended and flushed per batch); returns how many.

    Args:
        questions (`Sequence[dict]`): from `load_questions`.
        output: answers file; answers already there are kept and their questions skipped.
        image_folder: where the question's `image` names are resolved (see `resolve_image`).
        fmt (`str`, defaults to `"chair"`): adds `answer` (pope) or `caption` (chair, images) beside `text`.
        prompt_suffix (`str`): appended to each question, e.g. LLaVA-1.5's POPE instruction.
        settings (`Mapping`, *optional*): what else identifies the run (model, adapter, ...) for the resume check.
        stop_after (`int`, *optional*): stop after this many batches (for tests and smoke runs).
    """
    options = options or DecodingOptions()
    adapter = adapter or get_adapter(model, processor)
    output = Path(output)
    _check_settings(output, {**asdict(options), "format": fmt, "prompt_suffix": prompt_suffix, **(settings or {})},
                    overwrite)  # fmt: skip
    known = {str(q["question_id"]) for q in questions}
    done = set()
    for record in read_answers(output):
        key = str(record.get("question_id"))
        if key not in known:
            raise ValueError(
                f"{output} answers question_id {key!r}, which is not among the questions: wrong --output?"
            )
        done.add(key)
    todo = [q for q in questions if str(q["question_id"]) not in done]
    missing = [q for q in todo if not resolve_image(image_folder, q["image"]).is_file()]
    if missing:
        listed = ", ".join(f"{q['question_id']!r} ({q['image']})" for q in missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} of {len(todo)} images are missing in {image_folder}: {listed}"
            + (" ..." if len(missing) > 5 else "")
        )
    torch.manual_seed(options.seed)
    written = 0
    bar = tqdm(total=len(questions), initial=len(done), desc="generating", unit="q", disable=not progress)
    with open(output, "a", encoding="utf-8") as handle:
        for number, (chunk, images) in enumerate(_batches(todo, image_folder, batch_size)):
            if stop_after is not None and number >= stop_after:
                break
            texts = [q["text"] + prompt_suffix for q in chunk]
            keys = [q["question_id"] for q in chunk]
            answers = generate_batch(model, processor, adapter, texts, images, options, keys)
            lines = [
                json.dumps(answer_record(q, fmt, t, a), ensure_ascii=False) for q, t, a in zip(chunk, texts, answers)
            ]
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(chunk)
            bar.update(len(chunk))
    bar.close()
    return written


def run_settings(
    model: str, adapter: str | None, questions: str | os.PathLike, prompt: str | None, dtype: str
) -> dict[str, Any]:
    """What identifies a generation run besides its decoding, with paths made absolute so a resume matches."""

    def where(path: str | os.PathLike | None) -> str | None:
        return str(Path(path).resolve()) if path is not None and Path(path).exists() else path

    return {"model": where(model), "adapter": where(adapter), "questions": where(questions), "prompt": prompt,
            "dtype": dtype}  # fmt: skip


def load_model(model_path: str, adapter_path: str | None = None, dtype: str = "auto") -> tuple[Any, Any, Any]:
    """`(model, processor, adapter)` for inference on the GPU when there is one; `auto` is bf16 there, else fp32."""
    from vdtrain.modeling import load_for_inference

    cuda = torch.cuda.is_available()
    if dtype == "auto":
        dtype = "bfloat16" if cuda else "float32"
    model, processor, adapter = load_for_inference(model_path, adapter_path, dtype=dtype)
    return model.to("cuda" if cuda else "cpu"), processor, adapter


def add_decoding_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """The decoding flags shared by `generate` and `run` (`defaults` None leaves them unset, for config overrides)."""
    base = asdict(DecodingOptions()) if defaults is None else dict(defaults)
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
    flag("--seed", type=int, default=base.get("seed"), help="seed of the VCD noise and of sampling (0)")
    batch_size = 8 if defaults is None else defaults.get("batch_size")
    flag("--batch-size", type=int, default=batch_size, help="prompts per batch (8)")
    dtypes = ("auto", "bfloat16", "float16", "float32")
    flag("--dtype", choices=dtypes, default="auto", help="auto: bf16 on a GPU, fp32 on CPU")


def decoding_options(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> DecodingOptions:
    """`DecodingOptions` from `base` (a config's values) overridden by the flags that were given."""
    values = dict(base or {})
    for name in asdict(DecodingOptions()):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return DecodingOptions(**values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vdtrain eval generate",
        description="Generate answers (POPE), captions (CHAIR) or descriptions for a question file; resumable.",
    )
    p.add_argument("--model", required=True, help="model directory (or a LoRA adapter's base model)")
    p.add_argument("--adapter", help="LoRA adapter directory, applied without merging")
    p.add_argument("--questions", required=True, help="POPE/CHAIR jsonl, an image folder or a .txt image list")
    p.add_argument("--image-folder", help="where the images are (default: the --questions folder)")
    p.add_argument("--output", required=True, help="answers .jsonl (resumed if it exists)")
    p.add_argument("--format", choices=FORMATS, help="question format (default: guessed)")
    p.add_argument("--prompt", help="question asked about every image (replaces the file's text)")
    p.add_argument("--prompt-suffix", default="", help="appended to every question")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    add_decoding_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """`vdtrain eval generate`: answer a question file with a model (and LoRA adapter) into a jsonl file."""
    args = build_parser().parse_args(argv)
    try:
        options = decoding_options(args)
        questions, fmt = load_questions(args.questions, args.format, args.prompt)
        questions = questions[: args.limit] if args.limit else questions
        image_folder = args.image_folder or (args.questions if Path(args.questions).is_dir() else ".")
        model, processor, adapter = load_model(args.model, args.adapter, args.dtype)
        settings = run_settings(args.model, args.adapter, args.questions, args.prompt, args.dtype)
        written = generate_answers(
            model, processor, questions, args.output, image_folder=image_folder, fmt=fmt, options=options,
            adapter=adapter, prompt_suffix=args.prompt_suffix, batch_size=args.batch_size, settings=settings,
            overwrite=args.overwrite, progress=not args.no_progress,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, ConversationError) as error:
        print(f"vdtrain eval generate: error: {error}", file=sys.stderr)
        return 1
    print(f"{written} new answers ({len(questions)} questions) -> {args.output}")
    return 0
