"""Where grounded and hallucinated objects fall by visual dependence (thesis Fig. 5.2) and what sits near
hallucinations (Fig. 5.5): captions teacher-forced with the clean and the noised image, d per caption token, CHAIR's
object mentions mapped to the tokens that spell them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vdtrain.analysis.prompts import DEFAULT_PROMPT
from vdtrain.analysis.spans import mention_tokens, object_mentions, token_char_spans
from vdtrain.data.samples import collate_samples, prepare_sample
from vdtrain.errors import DataError
from vdtrain.evaluation.chair import Synonyms, load_synonyms
from vdtrain.evaluation.questions import caption_image_id
from vdtrain.io import read_objects
from vdtrain.method.dependence import token_group
from vdtrain.method.passes import batch_dependence, label_shift, supervised_mask
from vdtrain.models.base import ModelAdapter, accepts_logits_mask, get_adapter, pad_token_id, tokenizer_of

GROUPS = ("pos", "inv", "neg")
BINS = 20  # width 0.1 over [-1, 1]
MAX_DISTANCE = 10


def load_caption_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Captions from `vdtrain eval generate` / `eval run` (or any records with `image` and `caption` or `text`),
    each with an integer `image_id` (given, or read from a COCO file name)."""
    out = []
    for number, record in enumerate(read_objects(path), 1):
        where = f"{path}: record {number}"
        if not record.get("image"):
            raise DataError(f"{where} has no 'image': the analysis teacher-forces each caption with its image")
        caption = record.get("caption", record.get("text"))
        if not isinstance(caption, str):
            raise DataError(f"{where} has no caption text ('caption' or 'text')")
        image_id = caption_image_id(record.get("image_id", record["image"]), where)
        out.append({**record, "caption": caption, "image_id": image_id})
    return out


def dependence_bin(d: float) -> int:
    """Index of `d`'s bin among 20 of width 0.1 over [-1, 1] (d = 1 falls in the last)."""
    return min(BINS - 1, max(0, math.floor(round((d + 1.0) * BINS / 2, 9))))


def caption_record(caption: Mapping[str, Any], index: int, prompt: str) -> dict[str, Any]:
    """A caption as the one-turn LLaVA conversation the filter's teacher forcing reads."""
    return {
        "id": str(caption.get("question_id", index)),
        "image": caption["image"],
        "conversations": [
            {"from": "human", "value": "<image>\n" + str(caption.get("prompt") or prompt)},
            {"from": "gpt", "value": caption["caption"]},
        ],
    }


def teacher_forced_dependence(
    model: torch.nn.Module, batch: dict[str, Any], *, noise_step: int, pixel_key: str
) -> list[dict[str, list]]:
    """Per example of a collated batch (`collate_samples`): its supervised target positions and ids, their d and
    end-of-turn flags, from the filter scorer's clean and noised passes (the batch's per-sample `eps`)."""
    d, labels = batch_dependence(
        model, batch, noise_step=noise_step, pixel_key=pixel_key, logits_mask=accepts_logits_mask(model)
    )
    labels = labels.cpu()
    supervised = supervised_mask(labels, label_shift(model))  # (B, L): the target positions
    per_example = d.cpu().split(supervised.sum(dim=1).tolist())  # row-major: example by example
    out = []
    examples = [example for sample in batch["samples"] for example in sample["examples"]]
    for row, example in enumerate(examples):
        positions = supervised[row].nonzero().squeeze(-1).tolist()  # target positions
        out.append(
            {
                "positions": positions,
                "ids": labels[row, positions].tolist(),
                "d": per_example[row].tolist(),
                "end_of_turn": [bool(example.end_of_turn_mask[p]) for p in positions],
            }
        )
    return out


def analyze_caption(
    caption: Mapping[str, Any],
    forced: Mapping[str, list],
    tokenizer: Any,
    ground_truth: set[str] | None,
    synonyms: Synonyms,
    lemmatizer: str = "nltk",
) -> dict[str, Any]:
    """The `dependence.json` entry of one caption from its teacher-forced targets (`teacher_forced_dependence`).

    Caption tokens are the supervised targets without the end-of-turn token; each mention gets the token span
    `[first, last + 1)` of the tokens that overlap its characters and is hallucinated when its category is not in
    `ground_truth` (CHAIR's rule; a missing ground truth makes every mention a hallucination).
    """
    keep = [k for k, flag in enumerate(forced["end_of_turn"]) if not flag]
    ids = [forced["ids"][k] for k in keep]
    ds = [forced["d"][k] for k in keep]
    text = caption["caption"].strip()
    spans = token_char_spans(tokenizer, ids, text)
    tokens = [
        {"text": tokenizer.decode([token], clean_up_tokenization_spaces=False), "d": d, "group": token_group(d)}
        for token, d in zip(ids, ds)
    ]
    truth = ground_truth or set()
    mentions = []
    for mention in object_mentions(text, synonyms, lemmatizer):
        span = mention_tokens(mention, spans) if mention.start >= 0 else None
        mentions.append(
            {
                "word": mention.word,
                "text": text[mention.start : mention.end],
                "category": mention.category,
                "hallucinated": mention.category not in truth,
                "chars": [mention.start, mention.end],
                "tokens": list(span) if span else None,
            }
        )
    entry = {key: caption[key] for key in ("question_id", "image_id", "image") if key in caption}
    return entry | {"caption": text, "tokens": tokens, "mentions": mentions}


def distance_shares(captions: Sequence[Mapping[str, Any]], max_distance: int = MAX_DISTANCE) -> dict[str, Any]:
    """For k = 1..max_distance, the share of hallucinated mentions with a token of each group within k tokens of
    the mention (before its first or after its last token; its own tokens excluded). Fig. 5.5."""
    hits = {group: [0] * max_distance for group in GROUPS}
    count = 0
    for caption in captions:
        groups = [token["group"] for token in caption["tokens"]]
        for mention in caption["mentions"]:
            if not mention["hallucinated"] or not mention["tokens"]:
                continue
            count += 1
            first, stop = mention["tokens"]
            for k in range(1, max_distance + 1):
                near = set(groups[max(0, first - k) : first]) | set(groups[stop : stop + k])
                for group in GROUPS:
                    hits[group][k - 1] += group in near
    shares = {group: [h / count if count else 0.0 for h in hits[group]] for group in GROUPS}
    return {"k": list(range(1, max_distance + 1)), "mentions": count, **shares}


def dependence_totals(captions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Object tokens per d bin and per group, grounded and hallucinated apart (Fig. 5.2), and the distance shares."""
    kinds = ("grounded", "hallucinated")
    bins = {kind: [0] * BINS for kind in kinds}
    groups = {kind: dict.fromkeys(GROUPS, 0) for kind in kinds}
    mentions = dict.fromkeys(kinds, 0)
    unmapped = 0
    for caption in captions:
        for mention in caption["mentions"]:
            kind = "hallucinated" if mention["hallucinated"] else "grounded"
            mentions[kind] += 1
            if not mention["tokens"]:
                unmapped += 1
                continue
            for token in caption["tokens"][slice(*mention["tokens"])]:
                bins[kind][dependence_bin(token["d"])] += 1
                groups[kind][token["group"]] += 1
    all_tokens = [token for caption in captions for token in caption["tokens"]]
    return {
        "captions": len(captions),
        "caption_tokens": {group: sum(t["group"] == group for t in all_tokens) for group in GROUPS},
        "mentions": mentions,
        "unmapped_mentions": unmapped,
        "bin_edges": [round(-1 + 2 * k / BINS, 2) for k in range(BINS + 1)],
        "object_tokens_by_bin": bins,
        "object_tokens_by_group": groups,
        "hallucination_distance": distance_shares(captions),
    }


def analyze_dependence(
    model: torch.nn.Module,
    processor: Any,
    captions: Sequence[Mapping[str, Any]],
    ground_truth: Mapping[int, set[str]],
    *,
    image_folder: str | os.PathLike,
    synonyms: Synonyms | None = None,
    lemmatizer: str = "nltk",
    adapter: ModelAdapter | None = None,
    noise_step: int = 900,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int = 2048,
    prompt: str = DEFAULT_PROMPT,
    progress: bool = False,
) -> dict[str, Any]:
    """`dependence.json`'s content for captions (records with `image`, `caption`, `image_id`, optional `prompt`).

    Each caption is teacher-forced under its own prompt (else `prompt`) with the clean image and with the image
    noised to `noise_step`; caption `i`'s noise comes from the filter's per-sample generator `(seed, i)`.

    Args:
        ground_truth (`Mapping[int, set[str]]`): CHAIR's categories per image id (`build_ground_truth`); a caption
            whose image id is not in it is not analysed but listed in `errors` (CHAIR errs on such ids too).
        image_folder (`str`): where the captions' `image` names resolve (COCO naming variants are tried).
    """
    from tqdm.auto import tqdm

    from vdtrain.evaluation.questions import resolve_image

    synonyms = synonyms or load_synonyms()
    adapter = adapter or get_adapter(model, processor)
    tokenizer = tokenizer_of(processor)
    pad = pad_token_id(processor)
    entries, errors = [], []
    for start in tqdm(range(0, len(captions), batch_size), desc="analyze dependence", disable=not progress):
        chunk = list(enumerate(captions[start : start + batch_size], start))
        samples = []
        for index, caption in chunk:
            if int(caption["image_id"]) not in ground_truth:  # CHAIR's default: an error, not all-hallucinated
                error = f"image id {caption['image_id']} is not in the annotations (CHAIR's ground truth)"
                errors.append({"index": index, "id": str(caption.get("question_id", index)), "error": error})
                continue
            record = caption_record(caption, index, prompt)
            record["image"] = str(resolve_image(image_folder, caption["image"]))
            samples.append(
                prepare_sample(
                    record, index, adapter, processor, None, max_length=max_length, seed=seed, source="captions"
                )
            )
        if not samples:
            continue
        batch = collate_samples(samples, pad)
        errors += [{"index": s["index"], "id": s["id"], "error": s["error"]} for s in batch["errors"]]
        if not batch["samples"]:
            continue
        forced = teacher_forced_dependence(model, batch, noise_step=noise_step, pixel_key=adapter.pixel_key)
        for sample, targets in zip(batch["samples"], forced):  # one example per one-turn sample
            caption = captions[sample["index"]]
            try:
                truth = ground_truth.get(int(caption["image_id"]))
                entries.append(analyze_caption(caption, targets, tokenizer, truth, synonyms, lemmatizer))
            except ValueError as error:
                errors.append({"index": sample["index"], "id": sample["id"], "error": str(error)})
    settings = {"noise_step": noise_step, "seed": seed, "lemmatizer": lemmatizer, "prompt": prompt}
    return {"settings": settings, "totals": dependence_totals(entries), "captions": entries, "errors": errors}


def summary_lines(totals: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the totals: object tokens per group (Fig. 5.2) and the distance shares (Fig. 5.5)."""
    groups, mentions = totals["object_tokens_by_group"], totals["mentions"]

    def shares(kind: str) -> str:
        n = sum(groups[kind].values())
        cells = [f"{groups[kind][g]} ({100 * groups[kind][g] / n:.0f}%)" if n else "0" for g in GROUPS]
        return f"| {kind} ({mentions[kind]} mentions) | " + " | ".join(cells) + " |"

    distance = totals["hallucination_distance"]
    picks = [k for k in (1, 2, 3, 5, 10) if k <= len(distance["k"])]
    lines = [
        "| object tokens | image-positive | image-invariant | image-negative |",
        "|---|---|---|---|",
        shares("grounded"),
        shares("hallucinated"),
        "",
        f"Share of the {distance['mentions']} hallucinated mentions with a token of each group within k tokens "
        "(the mention's own tokens excluded):",
        "",
        "| k | " + " | ".join(str(k) for k in picks) + " |",
        "|---|" + "---|" * len(picks),
    ]
    for group, name in (("pos", "image-positive"), ("inv", "image-invariant"), ("neg", "image-negative")):
        lines.append(f"| {name} | " + " | ".join(f"{100 * distance[group][k - 1]:.0f}%" for k in picks) + " |")
    if totals.get("unmapped_mentions"):
        lines += ["", f"{totals['unmapped_mentions']} mentions could not be mapped to tokens and are not counted."]
    return lines
