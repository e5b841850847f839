"""A zero-shot CLIP or SigLIP teacher built from `transformers`: class probabilities from image–prompt similarity
(CCMA's teacher). transformers is imported only here, and only when a teacher is built."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def zero_shot_probs(
    image_embeds: torch.Tensor, class_embeds: torch.Tensor, logit_scale: float, logit_bias: float = 0.0
) -> torch.Tensor:
    """`(n, C)` softmax over classes of `scale · cos(image, class prompt) + bias` (CLIP's logits_per_image; SigLIP's
    logits normalised over the classes)."""
    image = torch.nn.functional.normalize(image_embeds.double(), dim=-1)
    text = torch.nn.functional.normalize(class_embeds.double(), dim=-1)
    return (logit_scale * image @ text.T + logit_bias).softmax(dim=-1)


def _pooled(output: Any) -> torch.Tensor:
    """The projected embedding of a `get_*_features` call (a tensor, or `pooler_output` in transformers 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ZeroShotTeacher:
    """Zero-shot class probabilities of a `CLIPModel`/`SiglipModel` (any model with `get_image_features`,
    `get_text_features`, `logit_scale`) for prompts `template.format(class_name)`.

    Args:
        model: the dual encoder (eval mode is set).
        processor: its processor (tokenizer + image processor).
        class_names (`Sequence[str]`): one name per class, in label order.
        template (`str`, defaults to `"a photo of a {}."`): the prompt.
    """

    def __init__(self, model: Any, processor: Any, class_names: Sequence[str], template: str = "a photo of a {}."):
        self.model, self.processor = model.eval(), processor
        self.prompts = [template.format(name) for name in class_names]
        self.logit_scale = float(model.logit_scale.detach().exp())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach()) if bias is not None else 0.0
        self._class_embeds: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, path: str, class_names: Sequence[str], **kwargs: Any) -> ZeroShotTeacher:
        """Load a CLIP/SigLIP checkpoint and its processor by `AutoModel`/`AutoProcessor` (local path or hub id)."""
        from transformers import AutoModel, AutoProcessor

        return cls(AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path), class_names, **kwargs)

    @torch.no_grad()
    def class_embeddings(self) -> torch.Tensor:
        """`(C, D)` projected text embeddings of the class prompts (computed once)."""
        if self._class_embeds is None:
            tokens = self.processor(text=self.prompts, return_tensors="pt", padding=True)
            self._class_embeds = _pooled(self.model.get_text_features(**tokens)).float()
        return self._class_embeds

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """`(n, D)` projected image embeddings (the teacher space CCMA's subpool clusters in)."""
        rows = []
        for start in range(0, len(images), batch_size):
            pixels = self.processor(images=list(images[start : start + batch_size]), return_tensors="pt")
            rows.append(_pooled(self.model.get_image_features(pixel_values=pixels["pixel_values"])).float())
        return torch.cat(rows)

    def probs_from_embeddings(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """`(n, C)` class probabilities of precomputed image embeddings."""
        return zero_shot_probs(image_embeds, self.class_embeddings(), self.logit_scale, self.logit_bias).float()

    def probs(self, images: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """`(n, C)` class probabilities of PIL images."""
        return self.probs_from_embeddings(self.image_embeddings(images, batch_size))
