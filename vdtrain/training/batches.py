"""What the VD loss reads off a model and a training batch: whether it applies at all, where the images are.

A model without a language-model head (a classifier) has no token labels; one whose forward takes no image input (a
text-only LM) has `d = 0` everywhere. For both, `VDLossMixin` leaves every step to the host trainer. A batch whose
samples have images must carry them: a column filter or a collator that lost the pixels is refused, never trained on
silently as text.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from vdtrain.data.dataset import IMAGE_INPUTS
from vdtrain.errors import InputError
from vdtrain.method.noise import image_rows
from vdtrain.models.base import unwrap_model

PIXEL_KEYS = ("pixel_values", "images", "pixel_values_images")  # tried only when no pixel key was given


def vd_applicability(model: Any, pixel_key: str | None, vd: SimpleNamespace) -> tuple[bool, str | None]:
    """`(labels are tokens, why the VD loss cannot apply or None)` for `model`; raises where the options ask for
    something the model cannot do (`vd_eos_selective`/`vd_masked_logits` without an LM head, an absent pixel input)."""
    model = unwrap_model(model)
    name = type(model).__name__
    if language_model_head(model) is None:
        asked = [option for option in ("vd_eos_selective", "vd_masked_logits") if getattr(vd, option)]
        if asked:
            raise InputError(f"{asked[0]}=True re-weights token labels; {name} has no language-model head")
        return False, f"{name} has no language-model head, so its labels are not tokens"
    forward = inspect.signature(model.forward).parameters
    if pixel_key is not None and pixel_key not in forward:
        raise InputError(f"the pixel key {pixel_key!r} (vd_pixel_key / pixel_key=) is not an input of {name}.forward")
    if pixel_key is None and not any(key in forward for key in PIXEL_KEYS):
        return True, (
            f"{name}.forward takes no image input ({', '.join(PIXEL_KEYS)}; a model that does under another name: "
            "pass pixel_key=), so d = 0 everywhere"
        )
    return True, None


def language_model_head(model: Any) -> Any:
    """The model's output embeddings, else those of the first module inside it that has some (BLIP's head lives in
    its `text_decoder`); None for a model without a language-model head (a classifier, an action expert)."""
    for module in model.modules():
        head = getattr(module, "get_output_embeddings", None)
        head = head() if callable(head) else None
        if head is not None:
            return head
    return None


def has_token_labels(inputs: dict, aligned: bool = True) -> bool:
    """Whether the batch has per-token `labels` `(B, L)`: aligned with `input_ids` for a causal LM (`aligned`), of the
    decoder's own length (and `decoder_input_ids`' where given) for an encoder-decoder model."""
    labels = inputs.get("labels")
    if not (isinstance(labels, torch.Tensor) and labels.dim() == 2):
        return False
    ids = inputs.get("input_ids" if aligned else "decoder_input_ids")
    return ids is None or labels.shape == ids.shape


def find_pixel_key(pixel_key: str | None, inputs: dict) -> str | None:
    """The given pixel key, else the first of `PIXEL_KEYS` in the batch (it may be absent from the batch)."""
    return pixel_key or next((name for name in PIXEL_KEYS if name in inputs), None)


def image_token_id(model: Any) -> int | None:
    """The config's image placeholder token (`image_token_id`, or the older `image_token_index`), if it names one."""
    config = getattr(unwrap_model(model), "config", None)
    token = getattr(config, "image_token_id", None)
    return getattr(config, "image_token_index", None) if token is None else token


def image_token_rows(model: Any, inputs: dict) -> torch.Tensor | None:
    """`(B,)` rows holding the config's image token (None: the config names none, or the batch has no ids)."""
    token = image_token_id(model)
    if token is None or "input_ids" not in inputs:
        return None
    return (inputs["input_ids"] == token).any(dim=-1)


def images_per_row(model: Any, inputs: dict, pixel_key: str | None) -> torch.Tensor | None:
    """`(B,)` images per row: the runs of the config's image token (each image expands to one run), if they account
    for every image in the batch (several images in a sample too); else one per row holding the token, if that does
    (an image split into tiles, one pixel row per sample); else None."""
    token = image_token_id(model)
    if token is None or "input_ids" not in inputs:
        return None
    is_image = inputs["input_ids"] == token
    counts = (is_image & ~F.pad(is_image[:, :-1], (1, 0), value=False)).sum(dim=-1)  # run starts per row
    key = find_pixel_key(pixel_key, inputs)
    images = len(image_rows(inputs, inputs[key])) if key in inputs else 0
    if int(counts.sum()) == images:
        return counts
    rows = is_image.any(dim=-1).long()
    return rows if int(rows.sum()) == images else None


def rows_with_images(model: Any, inputs: dict, per_row: torch.Tensor | None) -> torch.Tensor | None:
    """`(B,)` rows with an image: those `images_per_row` gives one or more, else (pixel rows that do not split per
    image, e.g. every image's patches concatenated without a grid) the rows holding the config's image token; a row
    without it has no image, so its `d` is 0. None when the config names no image token."""
    return per_row > 0 if per_row is not None else image_token_rows(model, inputs)


def image_owners(has_image: torch.Tensor | None, per_row: torch.Tensor | None, images: int) -> list[int] | None:
    """The batch row of each of the `images` images, in order: the rows with an image when there is one image per
    such row, else from the image counts per row (`images_per_row`); None when neither accounts for every image."""
    if has_image is not None and int(has_image.sum()) == images:
        return has_image.nonzero().flatten().tolist()
    if per_row is not None and int(per_row.sum()) == images:
        return torch.repeat_interleave(torch.arange(len(per_row)), per_row.cpu()).tolist()
    return None


def check_pixels(model: Any, inputs: dict, has_image: torch.Tensor | None, pixel_key: str | None) -> None:
    """Refuse a batch whose samples have images but which carries no image tensor: never a silent text-only run (a
    column filter, or a collator of the user's own, that dropped the pixels). Image rows are the collator's
    `has_image` and the rows holding the config's image token (a collator whose input lost the images flags none)."""
    if find_pixel_key(pixel_key, inputs) in inputs:
        return
    rows = image_token_rows(model, inputs)
    if has_image is not None:
        rows = has_image.to(torch.bool) if rows is None else rows | has_image.to(rows.device, torch.bool)
    if rows is None or not bool(rows.any()):
        return
    raise KeyError(
        f"vdtrain: {int(rows.sum())} sample(s) of this batch have an image, but the batch carries no image tensor "
        f"(keys: {sorted(inputs)}; looked for {[pixel_key] if pixel_key else list(PIXEL_KEYS)}). Something between "
        "the dataset and the model dropped it: Trainer's remove_unused_columns=True removes the columns the model's "
        f"forward does not name (vdtrain keeps {IMAGE_INPUTS!r} of SupervisedDataset; set "
        "remove_unused_columns=False for a dataset or collator of your own), or set `vd_pixel_key` (or pixel_key=) "
        "to the model's image input."
    )


def check_not_packed(inputs: dict) -> None:
    """Refuse a batch that packs several samples in one row: the softmax of Eq. 5.5 is per sample."""
    positions = inputs.get("position_ids")
    restarts = (
        positions is not None
        and positions.dim() == 2
        and bool(((positions[:, 1:] == 0) & (positions[:, :-1] != 0)).any())
    )
    if restarts or "cu_seq_lens_q" in inputs or "cu_seq_lens_k" in inputs:
        raise InputError(
            "vdtrain: this batch packs several samples into one row (position_ids restart inside a row, or "
            "cu_seq_lens are given); the visual-dependence weights are a softmax over each sample's tokens and "
            "would mix samples. Train without packing/padding-free batches while the VD loss is active "
            "(TRL: packing=False, padding_free=False), or set vd_start=1.0."
        )
