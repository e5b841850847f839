"""Frozen encoders for selection embeddings: a dual encoder's towers (`CLIPModel`, `SiglipModel` through
`AutoModel`) or any sentence encoder (mean of its last hidden state over real tokens; CLIP's text tower stops at 77
tokens, a sentence encoder reads long answers). Also the pooling of a generative model's hidden states."""

from __future__ import annotations

from typing import Any

import torch

DUAL_ENCODERS = ("clip", "siglip", "siglip2")
POOLINGS = ("answer-mean", "image-mean", "last-token")


def load_encoder(path: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """`(model, processor or tokenizer, is_dual)` for a dual encoder or a sentence encoder directory."""
    from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    dual = config.model_type in DUAL_ENCODERS
    model = AutoModel.from_pretrained(path, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(path) if dual else AutoTokenizer.from_pretrained(path)
    return model, processor, dual


def _features(output: Any) -> torch.Tensor:
    """`get_*_features` returns a tensor in some versions and an output with `pooler_output` in others."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def encode_texts(model, processor, texts: list[str], *, dual: bool, max_length: int = 256) -> torch.Tensor:
    """`(len(texts), D)` float32 text embeddings: the dual encoder's text tower, or a masked mean of the sentence
    encoder's last hidden state."""
    device = next(model.parameters()).device
    tokenizer = getattr(processor, "tokenizer", processor)
    text_config = getattr(model.config, "text_config", model.config)
    limit = min(max_length, getattr(text_config, "max_position_embeddings", 512))
    padding = "max_length" if dual and "siglip" in model.config.model_type else True
    batch = tokenizer(texts, padding=padding, truncation=True, max_length=limit, return_tensors="pt").to(device)
    if dual:
        return _features(model.get_text_features(**batch)).float()
    hidden = model(**batch).last_hidden_state  # (B, L, H)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return ((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).float()


@torch.no_grad()
def encode_images(model, processor, images: list[Any]) -> torch.Tensor:
    """`(len(images), D)` float32 image embeddings from a dual encoder's image tower."""
    device = next(model.parameters()).device
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device, model.dtype)
    return _features(model.get_image_features(pixel_values=pixels)).float()


def pool_hidden(
    hidden: torch.Tensor,
    pooling: str,
    *,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None = None,
    image_mask: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """`(B, H)` float32 pooled rows of a `(B, L, H)` hidden state: the mean over the answer tokens (supervised
    labels), over the image tokens, or the last real token. A row with nothing to pool (no answer, no image) is NaN."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    hidden = hidden.float()
    if pooling == "last-token":
        positions = attention_mask.long().cumsum(1).argmax(1)  # last position with a real token (left or right pad)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]
    mask = (labels != ignore_index) if pooling == "answer-mean" else image_mask
    if mask is None:
        raise ValueError(f"{pooling} pooling needs {'labels' if pooling == 'answer-mean' else 'the image token mask'}")
    mask = mask.to(hidden.device).unsqueeze(-1).float()  # (B, L, 1)
    count = mask.sum(1)
    return torch.where(count > 0, (hidden * mask).sum(1) / count.clamp_min(1), torch.nan)


class HiddenCapture:
    """Keeps the last hidden state `(B, L, H)` of the next forward of `model`'s decoder (the clean scoring pass),
    through a forward hook, so embeddings cost no extra forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        if decoder is None:
            raise ValueError(f"{type(model).__name__} exposes no decoder (get_decoder) to take hidden states from")
        self.hidden: torch.Tensor | None = None
        self.armed = False
        self.handle = decoder.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        if self.armed:
            self.hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
            self.armed = False

    def arm(self) -> None:
        """Take the next forward's hidden state (and only that one: the noised pass that follows is not kept)."""
        self.hidden, self.armed = None, True

    def close(self) -> None:
        """Remove the hook."""
        self.handle.remove()
