"""The adapter interface: everything vdtrain needs to know about one model family, and a registry by model_type.

The registry is filled by the adapter modules themselves (`register_adapter`, `register_fallback_adapter`), which
`vdtrain/models/__init__.py` imports; this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from vdtrain.errors import ConversationError as ConversationError  # re-exported: it lives in vdtrain.errors
from vdtrain.method.dependence import IGNORE_INDEX

_ADAPTERS: dict[str, type[ModelAdapter]] = {}
_FALLBACK: list[type[ModelAdapter]] = []  # the adapter for processors with a chat template (models/generic.py)
_PLAIN: list[type[ModelAdapter]] = []  # the adapter for image processors without one (models/plain.py)
_ENCODER_DECODER: list[type[ModelAdapter]] = []  # the adapter for encoder-decoder models (models/encdec.py)


# entry of an adapter's image inputs: `{key: dim}` of the inputs the processor packs along a dim other than the batch
# dim (MiniCPM-V: every image's patches side by side in one `(1, C, P, L)` row), which the collator concatenates there
PACKED_DIMS = "vd_packed_dims"
# entry of an adapter's image inputs: `{key: n}` of the inputs whose leading `n` entries of the last dim are
# coordinates, not pixels (Kosmos-2.5's flattened patches: row, column), which the collator passes on per row as
# `vdtrain.keys.COORDINATE_CHANNELS` and the noise keeps as they are
COORDINATE_DIMS = "vd_coordinate_dims"


@dataclass
class FieldGroup:
    """Fields of one example with a length of their own, not its tokens' (InstructBLIP's Q-Former text:
    `qformer_input_ids`, `qformer_attention_mask`): `VDDataCollator` right-pads them together to the longest field of
    the group in the batch, each with its pad value, one batch row per example that carries the group, in order."""

    fields: dict[str, list[int]]
    pads: dict[str, int]  # the pad value of every field


@dataclass
class Example:
    """One tokenised training sequence; image tokens already expanded to what the model expects."""

    input_ids: list[int]
    labels: list[int]
    end_of_turn_mask: list[bool]
    extra: dict[str, list[int]] = field(default_factory=dict)  # per-token fields such as token_type_ids
    groups: dict[str, FieldGroup] = field(default_factory=dict)  # fields of their own length, by group name

    @property
    def num_supervised(self) -> int:
        return len(self.labels) - list(self.labels).count(IGNORE_INDEX)

    def truncate(self, max_length: int) -> Example:
        """Cut every token field to `max_length` tokens (right side); an encoder-decoder model's labels have a length
        of their own, and field groups are no token fields (kept as they are)."""
        if max(len(self.input_ids), len(self.labels)) <= max_length:
            return self
        cut = {key: values[:max_length] for key, values in self.extra.items()}
        ids, labels, eot = self.input_ids[:max_length], self.labels[:max_length], self.end_of_turn_mask[:max_length]
        return Example(ids, labels, eot, cut, dict(self.groups))


def register_adapter(*model_types: str, override: bool = False) -> Callable[[type[ModelAdapter]], type[ModelAdapter]]:
    """Class decorator: use this adapter for models whose `config.model_type` is one of `model_types`.

    A model type that already has an adapter is refused unless `override=True` (replacing a built-in on purpose).
    """

    def decorator(cls: type[ModelAdapter]) -> type[ModelAdapter]:
        name = (cls.__module__, cls.__qualname__)  # the same class again (a module reloaded) is no duplicate
        taken = [
            t for t in model_types if t in _ADAPTERS and (_ADAPTERS[t].__module__, _ADAPTERS[t].__qualname__) != name
        ]
        if taken and not override:
            owners = ", ".join(f"{t!r} ({_ADAPTERS[t].__module__}.{_ADAPTERS[t].__qualname__})" for t in taken)
            raise ValueError(f"model type {owners} already has an adapter; pass override=True to replace it")
        for model_type in model_types:
            _ADAPTERS[model_type] = cls
        return cls

    return decorator


def register_fallback_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: use this adapter for unregistered model types whose processor has a chat template (one
    fallback: a later one replaces the earlier)."""
    _FALLBACK[:] = [cls]
    return cls


def register_plain_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: use this adapter for unregistered model types whose processor has images but no template."""
    _PLAIN[:] = [cls]
    return cls


def register_encoder_decoder_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: use this adapter for unregistered model types whose config says `is_encoder_decoder`."""
    _ENCODER_DECODER[:] = [cls]
    return cls


def get_adapter(model_or_config: Any, processor: Any = None) -> ModelAdapter:
    """The adapter of a model (or config, or model_type string); for other models, the encoder-decoder one when the
    config says `is_encoder_decoder`, else the generic chat-template one, else the plain prompt/answer one for a
    processor with an image processor but no chat template.

    The built-in adapters are registered by the time this runs: importing `vdtrain.models.base` imports the
    `vdtrain.models` package first, and that imports every adapter module.
    """
    adapter = _adapter_class(model_or_config, processor)()
    if isinstance(model_or_config, torch.nn.Module):
        adapter.read_layout(model_or_config)
    return adapter


def _adapter_class(model_or_config: Any, processor: Any) -> type[ModelAdapter]:
    """The adapter class `get_adapter` picks (see there)."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    if model_type in _ADAPTERS:
        return _ADAPTERS[model_type]
    if getattr(config, "is_encoder_decoder", False) and _ENCODER_DECODER:
        return _ENCODER_DECODER[0]
    template = getattr(processor, "chat_template", None) or getattr(
        getattr(processor, "tokenizer", None), "chat_template", None
    )
    if processor is not None and template and _FALLBACK:
        return _FALLBACK[0]
    if processor is not None and hasattr(processor, "image_processor") and _PLAIN:
        return _PLAIN[0]
    raise ValueError(
        f"vdtrain has no adapter for model_type {model_type!r} and its processor has no chat template. "
        "Register one: subclass vdtrain.models.ModelAdapter and decorate it with "
        f"@register_adapter({model_type!r}) (see vdtrain/models/llava.py for a 100-line example)."
    )


class ModelAdapter:
    """How one model family turns conversations into training tensors; knows nothing about training.

    Subclasses set the class attributes and implement `encode` and `prompt`.
    """

    pixel_key: str = "pixel_values"
    # leading entries of the last dim of `pixel_key` that are coordinates, not pixels (Kosmos-2.5's flattened patches
    # start with the patch's row and column); `image_inputs` carries them as `COORDINATE_DIMS`, noise keeps them
    coordinate_channels: int = 0
    # LoRA targets (a PEFT regex or module names), the projector's and the vision side's parameter-name fragments.
    # None: read from the model's module tree when `get_adapter` is given the model (`vdtrain.models.layout`): the
    # language model's linear layers, the outermost projector and vision modules. `()`: the family has none.
    lora_target_modules: str | tuple[str, ...] | None = None
    projector_modules: tuple[str, ...] | None = None
    vision_modules: tuple[str, ...] | None = None
    # False when the processor resizes every image to one size, so one measurement serves all images.
    image_tokens_depend_on_size: bool = True
    # image inputs the processor batches one entry per row (IDEFICS's `pixel_values`), text-only rows zero-filled
    row_image_keys: tuple[str, ...] = ()

    def read_layout(self, model: torch.nn.Module) -> None:
        """Fill the LoRA targets, projector and vision parts the adapter leaves None from `model`'s module tree."""
        from vdtrain.models.layout import read_layout

        layout = read_layout(model)
        if self.lora_target_modules is None:
            self.lora_target_modules = layout.lora_targets
        if self.projector_modules is None:
            self.projector_modules = layout.projector
        if self.vision_modules is None:
            self.vision_modules = layout.vision

    def build_processor(self, path: str, config: Any) -> Any | None:
        """A processor for checkpoints that ship none (None: the family always ships one)."""
        return None

    def end_of_turn_id(self, processor: Any) -> int:
        """Token id that closes an assistant turn (supervised and flagged)."""
        return tokenizer_of(processor).eos_token_id

    def trainer_kwargs(self, processor: Any) -> dict[str, Any]:
        """The adapter's wiring of `VDTrainer` / `VDSFTTrainer` / any `VDLossMixin` host, to pass as `**kwargs`:
        the projector's parameter names (`vd_projector_lr`), the end-of-turn token and the batch key of the pixels."""
        return {
            "projector_modules": tuple(self.projector_modules or ()),
            "end_of_turn_id": self.end_of_turn_id(processor),
            "pixel_key": self.pixel_key,
        }

    def image_token_id(self, processor: Any) -> int | None:
        tokenizer = tokenizer_of(processor)
        token = getattr(processor, "image_token", None) or getattr(tokenizer, "image_token", None) or "<image>"
        token_id = tokenizer.convert_tokens_to_ids(str(getattr(token, "content", token)))  # BLIP-2: an AddedToken
        return None if token_id == tokenizer.unk_token_id else token_id

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """How many placeholder tokens one image of `image_size` (w, h) becomes, measured on the processor."""
        cache = self.__dict__.setdefault("_num_image_tokens", {})
        if not self.image_tokens_depend_on_size:
            image_size = (64, 64) if not cache else next(iter(cache))
        if image_size not in cache:
            image = Image.new("RGB", image_size)
            batch = processor(text=self.image_placeholder(processor), images=image, return_tensors="pt")
            cache[image_size] = int((batch["input_ids"] == self.image_token_id(processor)).sum())
        return cache[image_size]

    def image_placeholder(self, processor: Any) -> str:
        return getattr(processor, "image_token", None) or "<image>"

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        """Tokenise a conversation (`[{"role": "user"|"assistant", "content": str}]`, the image marked by
        `<image>` in the text) into training examples: only assistant tokens supervised, end-of-turn flagged."""
        raise NotImplementedError

    def count_examples(self, messages: list[dict[str, str]]) -> int | None:
        """How many examples `encode` makes of `messages`, known without tokenising; None when only encoding can
        tell (`lazy_preprocess` then tokenises the sample while checking it)."""
        return None

    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        """The generation prompt for one user question, in the family's training format."""
        raise NotImplementedError

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of images (pixel tensor plus e.g. `image_sizes`, `image_grid_thw`)."""
        return dict(processor.image_processor(images=images, return_tensors="pt"))

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """Left-padded generation batch of prompts (from `prompt`) and their images."""
        tokenizer = tokenizer_of(processor, ensure_pad=True)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            return dict(processor(text=prompts, images=images or None, return_tensors="pt", padding=True))
        finally:
            tokenizer.padding_side = side


def tokenizer_of(processor: Any, *, ensure_pad: bool = False) -> Any:
    """The tokenizer inside a processor (or the tokenizer itself).

    Args:
        ensure_pad (`bool`, defaults to `False`): give a tokenizer without a pad token its unk (else eos) token as
            one, as batched generation needs (Llama-style tokenizers ship none; left padding masks it anyway).
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if ensure_pad and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def pad_token_id(processor: Any) -> int:
    """The id batches are right-padded with: the pad token's, else eos (attention masks come from lengths)."""
    tokenizer = tokenizer_of(processor)
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def tokenize_spans(
    tokenizer: Any, pieces: list[tuple[str, bool]], *, add_bos: bool = True
) -> tuple[list[int], list[bool]]:
    """Tokenise the concatenation of `(text, supervised)` pieces once, and mark the tokens whose first character
    lies in a supervised piece. One tokenizer call keeps merges across piece boundaries exactly as at inference."""
    text = "".join(piece for piece, _ in pieces)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    ends = np.cumsum([len(piece) for piece, _ in pieces])  # piece i holds the characters [ends[i-1], ends[i])
    supervised = np.array([sup for _, sup in pieces] + [False], dtype=bool)  # past the last piece: not supervised
    offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    char = np.where(offsets[:, 1] > offsets[:, 0], offsets[:, 0], np.maximum(offsets[:, 0] - 1, 0))
    flags = supervised[np.searchsorted(ends, char, side="right")].tolist()  # the piece a token's character is in
    if add_bos and tokenizer.bos_token_id is not None:
        ids, flags = [tokenizer.bos_token_id, *ids], [False, *flags]
    return ids, flags


def unwrap_model(model: Any) -> Any:
    """The transformers model under DDP/DeepSpeed (`.module`) and PEFT wrappers (its LoRA layers stay active)."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def accepts_logits_mask(model: Any) -> bool:
    """Whether the model's forward takes `logits_to_keep`, so its lm_head can run at chosen positions only."""
    import inspect

    return "logits_to_keep" in inspect.signature(unwrap_model(model).forward).parameters


def batch_image_field(values: list[Any], dim: int = 0) -> Any:
    """One image input of several samples batched as the processor batches it: tensors concatenated along dim 0,
    zero-padded at the end of every other dim where they differ (the any-resolution tile counts of LLaVA-NeXT and
    Idefics, which the processor pads and the model drops by `image_sizes`/`pixel_attention_mask`), or along `dim`
    where the processor packs them there (`PACKED_DIMS`); lists (images of per-image sizes) joined."""
    if not all(isinstance(value, torch.Tensor) for value in values):
        return [item for value in values for item in (value if isinstance(value, (list, tuple)) else [value])]
    if dim:
        return torch.cat(values, dim=dim)
    if len({value.dim() for value in values}) != 1:
        raise ValueError(f"image inputs of {sorted({value.dim() for value in values})} dims cannot be batched")
    shape = [max(sizes) for sizes in zip(*(value.shape[1:] for value in values))]
    padded = []
    for value in values:
        pad: list[int] = []
        for have, want in zip(reversed(value.shape[1:]), reversed(shape)):
            pad += [0, want - have]
        padded.append(torch.nn.functional.pad(value, pad) if any(pad) else value)
    return torch.cat(padded, dim=0)
