"""Tiny random-weight models of the older image-text families and of the non-text ones transformers maps as
image-text-to-text (IDEFICS, Kosmos-2, GIT, BLIP, InstructBLIP, Evolla, DiffusionGemma, PI0), built like tests/zoo.py.

`build(family)` returns `(model, processor)` of a zoo family; `LEFT` says why each other family is not in the zoo.
`DROP_IN` builds `(model, dataset)` of the families the VD loss cannot apply to but vanilla `Trainer` trains: they
must train through `VDTrainer` exactly as through `Trainer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo import IMAGE, PATCH, _seeded, siglip, tokenizer


def _bert_like(tok: Any, hidden: int = 64, **extra: Any) -> dict[str, Any]:
    """A two-layer BERT-style text decoder config over `tok`'s vocabulary (BLIP's, GIT's)."""
    return {
        "vocab_size": len(tok),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else 0,
        **extra,
    }


def _vision(hidden: int = 32, **extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
        **extra,
    }


def blip() -> tuple[Any, Any]:
    """BLIP captioning: a BERT-style decoder cross-attending to every row's image; no image token in the text."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    tok = tokenizer("llama2")  # BLIP's BERT tokenizer has no npm twin; BOS opens a caption as its [DEC] token does
    image_processor = BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tok)
    config = BlipConfig(
        text_config=_bert_like(tok, encoder_hidden_size=32, sep_token_id=tok.eos_token_id),
        vision_config=_vision(initializer_range=0.02),  # the default 1e-10 makes every image look the same
    )
    return _seeded(BlipForConditionalGeneration, config), processor


def git() -> tuple[Any, Any]:
    """GIT: the image's patch embeddings put in front of the text inside the model (its logits cover them too)."""
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    tok = tokenizer("llama2")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    processor = GitProcessor(image_processor=image_processor, tokenizer=tok)
    config = GitConfig(vision_config=_vision(), **_bert_like(tok))
    return _seeded(GitForCausalLM, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "blip": blip,
    "git": git,
}
FAMILIES = list(BUILDERS)

LEFT: dict[str, str] = {}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
