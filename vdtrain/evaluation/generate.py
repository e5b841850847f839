"""Batched, resumable answer generation for the CHAIR and POPE protocols (the library behind `vdtrain eval generate`).

Questions come as POPE jsonl, the CHAIR image list (same keys, no `label`) or plain images plus one `--prompt`.
Answers are appended to a jsonl file batch by batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vdtrain.data.conversations import load_image
from vdtrain.errors import DataError, RunMismatchError
from vdtrain.evaluation.decoding import DecodingOptions
from vdtrain.evaluation.questions import answer_record, read_answers, resolve_image
from vdtrain.io import append_jsonl, atomic_write_json
from vdtrain.method.noise import image_rows
from vdtrain.method.passes import label_shift
from vdtrain.models.base import ModelAdapter, get_adapter, tokenizer_of, unwrap_model


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
    from vdtrain.evaluation.vcd import noise_like, vcd_generate

    model = unwrap_model(model)
    tokenizer = tokenizer_of(processor, ensure_pad=True)
    prompts = [adapter.prompt(question, processor, has_image=True) for question in questions]
    batch = adapter.generation_inputs(processor, prompts, list(images))
    dtype = next(model.parameters()).dtype
    inputs = {
        k: (v.to(model.device, dtype) if v.is_floating_point() else v.to(model.device)) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }
    if options.decoding != "vcd":
        groups = _prefix_groups(model, inputs)
        return [text for group in groups for text in _generate(model, group, tokenizer, options)]
    if label_shift(model) == 0:
        raise ValueError(f"VCD decoding steps a causal LM; {type(model).__name__} is an encoder-decoder model")
    pixels = inputs[adapter.pixel_key]
    rows = image_rows(inputs, pixels)  # one image per prompt: each prompt's pixel rows
    ids = keys if keys is not None else range(len(prompts))
    noise = noise_like(pixels, ids, options.seed, rows if len(rows) == len(prompts) else None)
    generator = torch.Generator().manual_seed(options.seed) if options.do_sample else None
    new_tokens = vcd_generate(
        model,
        inputs,
        pixel_key=adapter.pixel_key,
        alpha=options.vcd_alpha,
        beta=options.vcd_beta,
        noise_step=options.vcd_noise_step,
        max_new_tokens=options.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=options.do_sample,
        temperature=options.temperature,
        top_p=options.top_p,
        noise=noise,
        generator=generator,
        coordinate_channels=adapter.coordinate_channels,
    )
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _generate(model: Any, inputs: dict[str, Any], tokenizer: Any, options: DecodingOptions) -> list[str]:
    """`model.generate` on one batch, decoded from the new tokens only. The settings go in a copy of the model's
    generation config (BLIP's `generate` passes `pad_token_id` itself, so a keyword would be given twice), and a
    mixture-of-experts model that returns its router logits for the load-balancing loss does not while generating
    (GLM-4.5V's loss then fails on the cache's shapes)."""
    config = copy.deepcopy(model.generation_config)
    sampling = {"temperature": options.temperature, "top_p": options.top_p} if options.do_sample else {}
    config.update(
        max_new_tokens=options.max_new_tokens,
        do_sample=options.do_sample,
        num_beams=options.num_beams,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    configs = (model.config, model.config.get_text_config())
    routed = any(getattr(c, "output_router_logits", False) for c in configs)
    routers = {"output_router_logits": False} if routed else {}
    if "mm_token_type_ids" in inputs and "mm_token_type_ids" not in inspect.signature(model.forward).parameters:
        # asked of every processor that declares them (`declared_type_fields`); a forward that takes them only through
        # `**kwargs` (MiniMax-M3-VL) trains with them, but `generate` refuses a keyword the forward does not name
        inputs = {key: value for key, value in inputs.items() if key != "mm_token_type_ids"}
    output = model.generate(**inputs, generation_config=config, **routers)
    # a causal LM returns the prompt first; an encoder-decoder model its decoder's prefix (start token, a prompt)
    prefix = inputs.get("decoder_input_ids") if label_shift(model) == 0 else inputs["input_ids"]
    new_tokens = output[:, 0 if prefix is None else prefix.shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _prefix_groups(model: Any, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """`inputs` as consecutive groups whose decoder prompts have one length, unpadded: a decoder with learned
    positions (Donut's, TrOCR's) would read a left-padded prompt at shifted positions. One group, `inputs` itself,
    where nothing is padded or the prompt goes to the encoder."""
    mask = inputs.get("decoder_attention_mask")
    if label_shift(model) != 0 or mask is None or bool(mask.all()):
        return [inputs]
    lengths, rows = mask.sum(dim=1).tolist(), mask.shape[0]
    groups, start = [], 0
    for end in range(1, rows + 1):
        if end == rows or lengths[end] != lengths[start]:
            group = {
                key: value[start:end] if torch.is_tensor(value) and value.dim() and value.shape[0] == rows else value
                for key, value in inputs.items()
            }
            for key in ("decoder_input_ids", "decoder_attention_mask"):
                group[key] = group[key][:, -lengths[start] :]
            groups.append(group)
            start = end
    return groups


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
            raise RunMismatchError(
                f"{output} was started with other settings ({details}); pass another --output, or --overwrite"
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta, settings, indent=1, sort_keys=True, default=str)


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
    run = generation_settings(options, fmt, prompt_suffix, settings)
    todo = remaining_questions(questions, output, run, overwrite)
    done = {str(q["question_id"]) for q in questions} - {str(q["question_id"]) for q in todo}
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
            records = [answer_record(q, fmt, t, a) for q, t, a in zip(chunk, texts, answers)]
            append_jsonl(handle, records, fsync=True, ensure_ascii=False)
            written += len(chunk)
            bar.update(len(chunk))
    bar.close()
    return written


def generation_settings(
    options: DecodingOptions, fmt: str, prompt_suffix: str = "", settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything an answers file's resume check compares: the decoding, the format, the suffix, `settings`."""
    return {**asdict(options), "format": fmt, "prompt_suffix": prompt_suffix, **(settings or {})}


def remaining_questions(
    questions: Sequence[dict], output: str | os.PathLike, settings: Mapping[str, Any], overwrite: bool = False
) -> list[dict]:
    """The questions `output` does not answer yet, after checking it was started with the same `settings`
    (`generation_settings`); cheap, so a command can stop before loading a model when nothing is left."""
    output = Path(output)
    _check_settings(output, dict(settings), overwrite)
    known = {str(q["question_id"]) for q in questions}
    done = set()
    for record in read_answers(output):
        key = str(record.get("question_id"))
        if key not in known:
            raise DataError(f"{output} answers question_id {key!r}, which is not among the questions: wrong --output?")
        done.add(key)
    return [q for q in questions if str(q["question_id"]) not in done]


def run_settings(
    model: str, adapter: str | None, questions: str | os.PathLike, prompt: str | None, dtype: str
) -> dict[str, Any]:
    """What identifies a generation run besides its decoding, with paths made absolute so a resume matches."""

    def where(path: str | os.PathLike | None) -> str | None:
        return str(Path(path).resolve()) if path is not None and Path(path).exists() else path

    return {
        "model": where(model),
        "adapter": where(adapter),
        "questions": where(questions),
        "prompt": prompt,
        "dtype": dtype,
    }
