"""Any `AutoModelForImageTextToText` whose processor has a chat template (Qwen2-VL, Gemma-3, ...)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from vdtrain.errors import ConversationError
from vdtrain.models.base import (
    PACKED_DIMS,
    Example,
    ModelAdapter,
    register_adapter,
    register_fallback_adapter,
    tokenizer_of,
)
from vdtrain.models.spans import answer_span, check_spans, label_tokens

_SENTINEL = "VDTRAINSENTINEL"
_TEXT_FIELDS = ("input_ids", "attention_mask", "labels", "cross_attention_mask")


def allow_processors_without_torchvision() -> None:
    """Let processors with a video slot (Qwen2-VL's) be built and loaded when torchvision is not installed.

    Call it before constructing or loading such a processor (`load_model_and_processor` does); it changes
    transformers' module state for the whole process, so it is never run as a side effect of an import.

    transformers exports `VideoProcessorMixin`, which `ProcessorMixin` checks every video processor against, only
    when torchvision imports; torchvision from PyPI does not import beside torch 2.13, so Qwen2-VL processors would
    fail to construct. Registering the (torchvision-free) mixin where the check looks for it is enough.
    """
    import transformers.processing_utils as processing_utils
    from transformers.utils import is_torchvision_available

    module = processing_utils.transformers_module
    if is_torchvision_available() or hasattr(module, "VideoProcessorMixin"):
        return
    from transformers.video_processing_utils import VideoProcessorMixin

    module.VideoProcessorMixin = VideoProcessorMixin


@register_fallback_adapter
class ChatTemplateAdapter(ModelAdapter):
    """The model's own chat template, with only assistant turns (and their closing token) supervised.

    Supervised characters come from the template's `{% generation %}` spans when it has them, otherwise from
    rendering the history before each assistant turn (with the generation prompt) and taking the difference. The
    token the template closes an assistant turn with (`<|im_end|>`, `<end_of_turn>`) is supervised and flagged; what
    follows it (a newline) is not. The image placeholder is expanded exactly as the processor expands it, measured
    once per image size, and per-token image type fields (`mm_token_type_ids`, `token_type_ids`) are added.
    """

    pixel_key = "pixel_values"

    def __init__(self) -> None:
        self._expansions: dict[int, str] = {}  # image token count -> the text the placeholder becomes
        self._type_keys: list[str] | None = None

    # ------------------------------------------------------------------ template probing
    def _render(self, processor: Any, chat: list[dict], add_generation_prompt: bool = False) -> str:
        owner = processor if getattr(processor, "chat_template", None) else tokenizer_of(processor)
        return owner.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _template(self, processor: Any) -> str:
        template = getattr(processor, "chat_template", None) or tokenizer_of(processor).chat_template
        if isinstance(template, dict):
            template = template.get("default", next(iter(template.values())))
        return template

    def _probe(self, processor: Any) -> dict[str, Any]:
        """Image placeholder text and turn-closing text of the template, found by rendering small conversations."""
        if "_probed" not in self.__dict__:
            tokenizer = tokenizer_of(processor)
            with_image = self._render(processor, [_user("Q", image=True)])
            without = self._render(processor, [_user("Q", image=False)])
            start, end = _placeholder_bounds(tokenizer, with_image, without)
            closer, closer_id = end_of_turn_token(processor)
            self.__dict__["_probed"] = {
                "image_text": with_image[start:end],
                "closer": closer,  # "" when the template closes a turn with nothing: EOS is appended instead
                "closer_id": closer_id,
            }
        return self.__dict__["_probed"]

    def end_of_turn_id(self, processor: Any) -> int:
        """The special token the template closes an assistant message with (e.g. `<|im_end|>`), else EOS."""
        return self._probe(processor)["closer_id"]

    def image_token_id(self, processor: Any) -> int | None:
        """The id the processor repeats per image: of the ids the tokenizer and processor name (Gemma-3's processor
        names `<boi>`, Aya Vision's tokenizer `<image>` where `<|IMG_PATCH|>` is repeated), the most repeated one."""
        if "_image_token_id" not in self.__dict__:
            tokenizer = tokenizer_of(processor)
            named = [getattr(owner, "image_token_id", None) for owner in (tokenizer, processor)]
            named.append(super().image_token_id(processor))
            candidates = list(dict.fromkeys(i for i in named if isinstance(i, int) and i != tokenizer.unk_token_id))
            if len(candidates) > 1:
                batch = processor(
                    text=self.image_placeholder(processor),
                    images=Image.new("RGB", (64, 64)),
                    add_special_tokens=False,
                    padding=False,
                    return_tensors="pt",
                )
                ids = batch["input_ids"][0]
                candidates.sort(key=lambda token_id: -int((ids == token_id).sum()))
            if not candidates:  # nothing named (PP-Chart2Table): the special token the placeholder repeats most
                candidates = _most_repeated_special(tokenizer, self.image_placeholder(processor))
            self.__dict__["_image_token_id"] = candidates[0] if candidates else None
        return self.__dict__["_image_token_id"]

    def image_placeholder(self, processor: Any) -> str:
        """What the template writes for an image part (e.g. `<|vision_start|><|image_pad|><|vision_end|>`)."""
        return self._probe(processor)["image_text"]

    def num_image_tokens(self, processor: Any, image_size: tuple[int, int]) -> int:
        """Image tokens of one image of `image_size` (w, h), and the exact text the processor expands it to."""
        cache = self.__dict__.setdefault("_num_image_tokens", {})
        if not self.image_tokens_depend_on_size:
            image_size = (64, 64) if not cache else next(iter(cache))
        if image_size not in cache:
            tokenizer = tokenizer_of(processor)
            batch = processor(
                text=self.image_placeholder(processor),
                images=Image.new("RGB", image_size),
                add_special_tokens=False,
                padding=False,  # one text: nothing to pad (Aya Vision's processor pads by default)
                return_tensors="pt",
                **declared_type_fields(processor),
            )
            ids = batch["input_ids"][0]
            count = int((ids == self.image_token_id(processor)).sum())
            cache[image_size] = count
            kept, extra = ids.tolist(), _empty_prompt_ids(processor)
            if extra and kept[-len(extra) :] == extra:  # what the processor adds to any text is no part of the image
                kept = kept[: -len(extra)]
            elif extra and kept[: len(extra)] == extra:
                kept = kept[len(extra) :]
            self._expansions[count] = tokenizer.decode(
                kept, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            self._type_keys = [key for key, value in batch.items() if _is_type_field(key, value, ids)]
        return cache[image_size]

    def _expansion(self, processor: Any, count: int, sample_id: str) -> str:
        if count not in self._expansions and not self.image_tokens_depend_on_size:
            self.num_image_tokens(processor, (64, 64))
        if count in self._expansions:
            return self._expansions[count]
        image_text = self.image_placeholder(processor)
        token = tokenizer_of(processor).convert_ids_to_tokens(self.image_token_id(processor))
        if token and token in image_text:
            return image_text.replace(token, token * count)
        raise ConversationError(
            f"sample {sample_id}: no image of the processor expands to {count} image tokens; get the count from "
            "adapter.num_image_tokens(processor, image.size)"
        )

    def _token_type_keys(self, processor: Any) -> list[str]:
        """Per-token image type fields the processor returns (`mm_token_type_ids`, `token_type_ids`)."""
        if self._type_keys is None:
            self.num_image_tokens(processor, (64, 64))
        return self._type_keys or []

    # ------------------------------------------------------------------ encoding
    def count_examples(self, messages: list[dict[str, str]]) -> int:
        """One example holds the whole conversation."""
        return 1

    def encode(
        self, messages: list[dict[str, str]], processor: Any, num_image_tokens: int, sample_id: str = "?"
    ) -> list[Example]:
        chat = _to_chat(messages, sample_id)
        has_image = any(part["type"] == "image" for message in chat for part in message["content"])
        probe = self._probe(processor)
        text, spans = self._supervised_spans(processor, chat, sample_id)
        if has_image:  # the image is in the first user turn, so every span lies after it
            at, expanded = text.index(probe["image_text"]), self._expansion(processor, num_image_tokens, sample_id)
            shift = len(expanded) - len(probe["image_text"])
            text = text[:at] + expanded + text[at + len(probe["image_text"]) :]
            spans = [(start + shift, end + shift) if start >= at else (start, end) for start, end in spans]
        tokenizer, eot_id, image_id = tokenizer_of(processor), probe["closer_id"], self.image_token_id(processor)
        input_ids, labels, eot, span_of = label_tokens(tokenizer, text, spans, eot_id, image_id)
        check_spans(tokenizer, text, spans, (input_ids, span_of), eot_id, sample_id)
        types = [int(token == image_id) for token in input_ids]
        return [Example(input_ids, labels, eot, {key: list(types) for key in self._token_type_keys(processor)})]

    def _supervised_spans(self, processor: Any, chat: list[dict], sample_id: str) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation (EOS inserted after each answer when the template closes turns with nothing)
        and the character span of each answer plus its end-of-turn token.

        Each assistant turn starts where the template's `{% generation %}` span starts when it has one, otherwise
        where the history before the turn, rendered with the generation prompt, ends; the answer is searched from
        there, so template text around it never enters the span.
        """
        template = self._template(processor)
        answers = [message["content"][0]["text"] for message in chat if message["role"] == "assistant"]
        if "{% generation %}" in template or "{%- generation %}" in template:
            from transformers.utils.chat_template_utils import render_jinja_template

            rendered, generation = render_jinja_template(
                conversations=[chat],
                chat_template=template,
                return_assistant_tokens_mask=True,
                **tokenizer_of(processor).special_tokens_map,
            )
            text, starts = rendered[0], [span[0] for span in generation[0]]
        else:
            text, starts = self._render(processor, chat), []
            for index, message in enumerate(chat):
                if message["role"] != "assistant":
                    continue
                prefix = self._render(processor, chat[:index], add_generation_prompt=True)
                upto = self._render(processor, chat[: index + 1])
                if not (text.startswith(upto) and upto.startswith(prefix)):
                    raise ConversationError(
                        f"sample {sample_id}: the chat template renders the history before assistant turn {index} "
                        "differently from the whole conversation, so the supervised span cannot be found; give the "
                        "template {% generation %} tags or register an adapter for this model"
                    )
                starts.append(len(prefix))
        if len(starts) != len(answers):
            raise ConversationError(
                f"sample {sample_id}: the chat template marks {len(starts)} assistant turn(s), the sample has "
                f"{len(answers)}"
            )
        closer, eos = self._probe(processor)["closer"], tokenizer_of(processor).eos_token
        spans: list[tuple[int, int]] = []
        shift = 0  # characters inserted so far (EOS tokens)
        for number, (start, answer) in enumerate(zip(starts, answers), 1):
            lo, hi, closed = answer_span(text, answer, start + shift, closer)
            if lo < 0:
                raise ConversationError(
                    f"sample {sample_id}: the chat template does not write assistant turn {number} as given"
                )
            if not closed:
                if eos is None:
                    raise ConversationError(
                        f"sample {sample_id}: the chat template closes assistant turns with nothing and the "
                        "tokenizer has no EOS token to end them with"
                    )
                text, hi, shift = text[:hi] + eos + text[hi:], hi + len(eos), shift + len(eos)
            spans.append((lo, hi))
        return text, spans

    # ------------------------------------------------------------------ inputs
    def prompt(self, question: str, processor: Any, has_image: bool = True) -> str:
        """The template's rendering of one user turn plus the generation prompt."""
        text = question.replace("<image>", "").strip()
        return self._render(processor, [_user(text, image=has_image)], add_generation_prompt=True)

    def image_inputs(self, processor: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The image inputs the full processor call gives (its own defaults, e.g. `crop_to_patches`, apply) that the
        model takes (`pixel_values`, `image_grid_thw`, `image_sizes`; not `num_crops` or the text fields): those the
        processor declares in `model_input_names`, and every `pixel_values*` tensor it returns (Unlimited-OCR's
        `pixel_values_local` crops are not declared, yet the model needs them)."""
        inputs = _model_image_inputs(processor, [self.image_placeholder(processor) * len(images)], images)
        packed = self._packed_dims(processor)
        return {**inputs, PACKED_DIMS: packed} if packed else inputs

    def _packed_dims(self, processor: Any) -> dict[str, int]:
        """`{key: dim}` of the image inputs the processor batches along a dim other than 0 (MiniCPM-V packs every
        image's patches into one `(1, C, P, L)` tensor), measured once on two rows of one image each."""
        if "_packed" not in self.__dict__:
            self.__dict__["_packed"] = {}
            images = [Image.new("RGB", (48, 32)), Image.new("RGB", (32, 48))]
            text = self.image_placeholder(processor)
            singles = [_model_image_inputs(processor, [text], [image]) for image in images]
            try:
                try:
                    both = _model_image_inputs(processor, [text, text], [[image] for image in images], "longest")
                except ValueError:  # processors that take one flat list of images (GOT-OCR2)
                    both = _model_image_inputs(processor, [text, text], images, "longest")
            except (ValueError, TypeError, KeyError, IndexError, RuntimeError):  # two rows it cannot batch: dim 0
                return {}
            for key, value in both.items():
                dim = _packed_dim(value, [single.get(key) for single in singles])
                if dim:
                    self.__dict__["_packed"][key] = dim
        return self.__dict__["_packed"]

    def generation_inputs(self, processor: Any, prompts: list[str], images: list[Image.Image]) -> dict:
        """Left-padded prompts (already holding the template's BOS, so none is added) and their images, one list per
        prompt where there is one image per prompt (Gemma-3's and Mllama's processors count images per prompt and
        refuse a flat list for a batch), else, or where the processor takes one flat list (GOT-OCR2), flat."""
        tokenizer_of(processor).padding_side = "left"

        def call(batch_images: list | None) -> dict:
            kwargs = {"return_tensors": "pt", "padding": True, "add_special_tokens": False}
            kwargs.update(declared_type_fields(processor))
            return current_input_names(processor(text=prompts, images=batch_images, **kwargs))

        if not images or len(images) != len(prompts):
            return call(images or None)
        try:
            return call([[image] for image in images])
        except (ValueError, TypeError):
            return call(images)


# processor outputs transformers 5 renamed, the models taking the new name (the old one only through a deprecation
# shim): Video-LLaVA's image processor still returns `pixel_values_images` unless called with
# `return_legacy_image_output=False`, which no published checkpoint's config sets
_RENAMED_INPUTS = {"pixel_values_images": "pixel_values"}


def current_input_names(outputs: Any) -> dict:
    """The processor's outputs (a dict) with deprecated input names (`_RENAMED_INPUTS`) under their current ones."""
    outputs = dict(outputs)
    for old, new in _RENAMED_INPUTS.items():
        if old in outputs and new not in outputs:
            outputs[new] = outputs.pop(old)
    return outputs


def declared_type_fields(processor: Any) -> dict[str, bool]:
    """`{"return_mm_token_type_ids": True}` when the processor declares `mm_token_type_ids` a model input, else {}.

    Processors return them only when asked unless their kwargs default says so (Qwen2-VL's does, Cosmos3-Edge's
    does not, yet its model refuses image inputs without them), and no checkpoint file can change that default.
    """
    names = getattr(processor, "model_input_names", None) or ()
    return {"return_mm_token_type_ids": True} if "mm_token_type_ids" in names else {}


def _model_image_inputs(processor: Any, text: list[str], images: list, padding: bool | str = False) -> dict:
    """The image inputs of a processor call that the model takes: those the processor declares in
    `model_input_names`, and every `pixel_values*` tensor it returns (Unlimited-OCR's `pixel_values_local` crops are
    not declared, yet the model needs them); not the text fields or per-token type fields."""
    outputs = dict(processor(text=text, images=images, return_tensors="pt", add_special_tokens=False, padding=padding))
    outputs = current_input_names(outputs)
    ids = outputs["input_ids"][0]
    accepted = set(getattr(processor, "model_input_names", None) or outputs)
    return {
        key: value
        for key, value in outputs.items()
        if (key in accepted or key.startswith("pixel_values"))
        and key not in _TEXT_FIELDS
        and not _is_type_field(key, value, ids)
    }


def _packed_dim(batched: Any, singles: list[Any]) -> int:
    """The dim other than 0 along which `batched` (one leading row) joins `singles` (one leading row each), else 0."""
    if not (isinstance(batched, torch.Tensor) and all(isinstance(single, torch.Tensor) for single in singles)):
        return 0
    if any(single.dim() != batched.dim() or single.shape[0] != 1 for single in singles) or batched.shape[0] != 1:
        return 0
    joined = [d for d in range(1, batched.dim()) if batched.shape[d] == sum(single.shape[d] for single in singles)]
    others = all(
        single.shape[d] == batched.shape[d] for single in singles for d in range(1, batched.dim()) if d not in joined
    )
    return joined[0] if len(joined) == 1 and others else 0


def end_of_turn_token(processor: Any) -> tuple[str, int]:
    """`(text, id)` of the special token a chat template closes an assistant turn with (`<|im_end|>`,
    `<end_of_turn>`, `</s>`), read from a rendered one-turn conversation (`_closing_token`); `("", eos)` when the
    template writes no special token there or there is no template. The one probe the chat-template adapter and
    `VDSFTTrainer` both use."""
    tokenizer = tokenizer_of(processor)
    owner = processor if getattr(processor, "chat_template", None) else tokenizer
    for content in ([{"type": "text", "text": _SENTINEL}], _SENTINEL):  # processors want parts, some templates text
        chat = [{"role": "user", "content": content}, {"role": "assistant", "content": content}]
        try:
            text = owner.apply_chat_template(chat, tokenize=False)
        except Exception:  # no template, or one that wants the other content format
            continue
        text = text[0] if isinstance(text, list) else text
        if _SENTINEL in text:
            closer, closer_id = _closing_token(tokenizer, text[text.rindex(_SENTINEL) + len(_SENTINEL) :])
            return closer, tokenizer.eos_token_id if closer_id is None else closer_id
    return "", tokenizer.eos_token_id


def _user(text: str, image: bool = False) -> dict:
    parts = [{"type": "image"}] if image else []
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _to_chat(messages: list[dict[str, str]], sample_id: str) -> list[dict]:
    """vdtrain messages (`<image>` in the text) as chat-template messages with an image content part."""
    if not messages or messages[0]["role"] not in ("user", "system"):
        raise ConversationError(f"sample {sample_id}: the conversation must start with a user turn")
    chat = []
    for message in messages:
        content = message["content"]
        if message["role"] == "assistant":
            chat.append(_assistant(content.strip()))
        elif message["role"] == "system":
            chat.append({"role": "system", "content": [{"type": "text", "text": content}]})
        else:
            chat.append(_user(content.replace("<image>", "").strip(), image="<image>" in content))
    return chat


def _empty_prompt_ids(processor: Any) -> list[int]:
    """The ids the processor makes of an empty text (Chameleon appends its `sep_token` to every prompt), so that
    they are not taken for part of an image's expansion; [] if it adds nothing or refuses an empty text."""
    try:
        ids = processor(text=[""], add_special_tokens=False, padding=False)["input_ids"][0]
    except (TypeError, ValueError, KeyError, IndexError):
        return []
    return list(ids.tolist() if hasattr(ids, "tolist") else ids)


def _placeholder_bounds(tokenizer: Any, with_image: str, without: str) -> tuple[int, int]:
    """`(start, end)` of the text an image part adds to a rendered turn, widened to whole tokens of `with_image`
    (the character difference alone cuts `<image>` to `<image` when the text before it also ends in `>`)."""
    start = _common_prefix(with_image, without)
    end = max(len(with_image) - _common_prefix(with_image[::-1], without[::-1]), start)
    offsets = tokenizer(with_image, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for lo, hi in offsets:
        if lo < start < hi:
            start = lo
        if lo < end < hi:
            end = hi
    return start, end


def _closing_token(tokenizer: Any, after: str) -> tuple[str, int | None]:
    """`(text, id)` of the special token a template writes right after an answer (`<|im_end|>`, `</s>`), or
    `("", None)` when it writes nothing there, or only spaces and ordinary text (the next turn's `USER:`)."""
    stripped = after.lstrip()
    if not stripped:
        return "", None
    encoded = tokenizer(stripped, add_special_tokens=False, return_offsets_mapping=True)
    token, (start, end) = encoded["input_ids"][0], encoded["offset_mapping"][0]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    if token not in special or token == tokenizer.bos_token_id or end <= start:
        return "", None
    return stripped[start:end], token


def _most_repeated_special(tokenizer: Any, text: str) -> list[int]:
    """The special (added) token ids of `text`, the most repeated first: `[]` when it holds none."""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    ids = [token for token in tokenizer(text, add_special_tokens=False)["input_ids"] if token in special]
    return sorted(dict.fromkeys(ids), key=lambda token_id: -ids.count(token_id))


def _common_prefix(a: str, b: str) -> int:
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    return length


def _is_type_field(key: str, value: Any, ids: torch.Tensor) -> bool:
    """A per-token field beside `input_ids` that marks image tokens (`token_type_ids`, `mm_token_type_ids`)."""
    if key in ("input_ids", "attention_mask", "labels") or not isinstance(value, torch.Tensor):
        return False
    return value.dim() == 2 and value.shape[1] == ids.shape[0] and "type" in key


@register_adapter("qwen2_vl")
class Qwen2VLAdapter(ChatTemplateAdapter):
    """Qwen2-VL: the chat template, with the merger as projector and image token counts that grow with image size."""

    projector_modules = ("visual.merger",)
    vision_modules = ("visual.patch_embed", "visual.blocks")  # not "visual": that would catch the merger
    image_tokens_depend_on_size = True


@register_adapter("qwen2_5_vl")
class Qwen25VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: laid out as Qwen2-VL."""


@register_adapter("gemma3")
class Gemma3Adapter(ChatTemplateAdapter):
    """Gemma-3: the chat template, with one 896-px crop per image (pan-and-scan off), so one token count."""

    projector_modules = ("multi_modal_projector",)
    vision_modules = ("vision_tower",)
    image_tokens_depend_on_size = False
