"""Visual contrastive decoding (VCD, Leng et al. 2024): the decoding-time baseline the paper compares against.

At each step the next-token logits are `(1 + alpha) z_clean - alpha z_noisy`, from one forward with the clean image
and one with its diffusion-noised copy (each with its own KV cache), restricted to the tokens the clean model finds
plausible: `p_clean >= beta * max p_clean`. A self-contained loop over the model's own `prepare_inputs_for_generation`
and `forward`; transformers itself is not patched.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch

from vdtrain.compat import cache_keyword, output_cache
from vdtrain.method.noise import add_diffusion_noise, keep_coordinates, keep_padding, seeded_generator

# Per-token inputs that grow with the sequence (generate's `_update_model_kwargs_for_generation` does the same).
_REPEAT_LAST = ("token_type_ids",)
_APPEND_ZEROS = ("mm_token_type_ids",)


def vcd_logits(clean: torch.Tensor, noisy: torch.Tensor, alpha: float = 1.0, beta: float = 0.1) -> torch.Tensor:
    """Contrast clean and noisy next-token logits (B, V) and mask implausible tokens with -inf.

    Args:
        clean (`torch.Tensor`): logits with the clean image, `(B, V)`.
        noisy (`torch.Tensor`): logits with the noised image, `(B, V)`.
        alpha (`float`, defaults to 1.0): contrast strength; 0 gives the clean logits.
        beta (`float`, defaults to 0.1): adaptive plausibility cut-off in `[0, 1]`; 1 keeps only the clean argmax.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"VCD beta must be in [0, 1], got {beta}")
    clean, noisy = clean.float(), noisy.float()
    contrast = clean if alpha == 0 else (1.0 + alpha) * clean - alpha * noisy
    if beta == 0:
        return contrast
    # p_clean >= beta * max p_clean  <=>  z_clean >= log(beta) + max z_clean (softmax shares one normaliser).
    cutoff = clean.max(dim=-1, keepdim=True).values + math.log(beta)
    return contrast.masked_fill(clean < cutoff, float("-inf"))


def noise_like(
    pixel_values: torch.Tensor, keys: Sequence[Any], seed: int = 0, rows_per_sample: Sequence[int] | None = None
) -> torch.Tensor:
    """Standard normal noise shaped like `pixel_values`, each sample's rows drawn from `seeded_generator("vcd", seed,
    key)` of its own id, so batching and resuming change nothing (the trainer's noise is keyed the same way).

    `rows_per_sample`: how many leading rows of `pixel_values` each sample has (`noise.image_rows`, for models that
    flatten images of different sizes into patches); default: an equal share each.
    """
    keys = list(keys)
    if rows_per_sample is None:
        if pixel_values.shape[0] % len(keys):
            raise ValueError(f"{pixel_values.shape[0]} pixel rows cannot be split over {len(keys)} samples")
        rows_per_sample = [pixel_values.shape[0] // len(keys)] * len(keys)
    if len(rows_per_sample) != len(keys) or sum(rows_per_sample) != pixel_values.shape[0]:
        raise ValueError(f"rows per sample {list(rows_per_sample)} do not cover {pixel_values.shape[0]} pixel rows")
    parts = []
    for key, rows in zip(keys, rows_per_sample):
        generator = seeded_generator("vcd", seed, key)
        parts.append(torch.randn((rows, *pixel_values.shape[1:]), generator=generator, dtype=torch.float32))
    return torch.cat(parts).to(pixel_values.device)


def _next_token(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Greedy argmax, or temperature + nucleus sampling, over already-masked logits (B, V)."""
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits / max(temperature, 1e-5)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    source = probs.cpu() if generator is not None and generator.device.type == "cpu" else probs
    return torch.multinomial(source, 1, generator=generator).squeeze(-1).to(logits.device)


class _Stream:
    """One conditioning (clean or noisy image): its inputs, its KV cache, and a forward for the next logits."""

    def __init__(self, model: Any, inputs: dict[str, Any], use_cache: bool):
        from transformers import DynamicCache, GenerationMixin

        self.model, self.use_cache = model, use_cache
        self.kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        self.attention_mask = inputs["attention_mask"]
        self.cache = DynamicCache(config=model.config) if use_cache else None
        parameters = inspect.signature(model.forward).parameters
        if "position_ids" in parameters and "position_ids" not in self.kwargs:
            self.kwargs["position_ids"] = (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if "logits_to_keep" in parameters:
            self.kwargs["logits_to_keep"] = 1
        self.cache_keyword = cache_keyword(GenerationMixin.prepare_inputs_for_generation)  # models may wrap it
        self.first = True

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, V) for `input_ids` (the full sequence so far, prompt included)."""
        model_inputs = self.model.prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=1 if (self.use_cache and not self.first) else None,
            attention_mask=self.attention_mask,
            is_first_iteration=self.first,
            use_cache=self.use_cache,
            **{self.cache_keyword: self.cache},
            **self.kwargs,
        )
        outputs = self.model(**model_inputs, return_dict=True)
        if self.use_cache:
            self.cache = output_cache(outputs)
        self.first = False
        return outputs.logits[:, -1].float()

    def extend(self) -> None:
        """Account for one appended token: mask, positions and per-token type ids grow by one."""
        ones = self.attention_mask.new_ones((self.attention_mask.shape[0], 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        if (positions := self.kwargs.get("position_ids")) is not None:
            self.kwargs["position_ids"] = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
        for key in _REPEAT_LAST:
            if (values := self.kwargs.get(key)) is not None:
                self.kwargs[key] = torch.cat([values, values[:, -1:]], dim=-1)
        for key in _APPEND_ZEROS:
            if (values := self.kwargs.get(key)) is not None:
                self.kwargs[key] = torch.cat([values, values.new_zeros((values.shape[0], 1))], dim=-1)


@torch.no_grad()
def vcd_generate(
    model: Any,
    inputs: dict[str, Any],
    *,
    pixel_key: str = "pixel_values",
    alpha: float = 1.0,
    beta: float = 0.1,
    noise_step: int = 500,
    max_new_tokens: int = 512,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    coordinate_channels: int = 0,
) -> torch.Tensor:
    """Decode with VCD; returns the new tokens only, `(B, T)`, rows that stopped early padded with `pad_token_id`.

    Args:
        model: a vision-language `PreTrainedModel` (a PEFT wrapper is unwrapped; its LoRA layers stay active).
        inputs (`dict`): a left-padded generation batch (`input_ids`, `attention_mask`, the pixel tensor, ...).
        pixel_key (`str`, defaults to `"pixel_values"`): the input the noise goes into (the adapter's `pixel_key`).
        alpha, beta (`float`): contrast strength and plausibility cut-off (VCD's defaults 1.0 and 0.1).
        noise_step (`int`, defaults to 500): diffusion step of the noised image (VCD uses 500; `[0, 999]`).
        max_new_tokens (`int`, defaults to 512): most tokens generated per row.
        eos_token_id (`int` or list, *optional*): stop tokens; defaults to the model's generation config.
        pad_token_id (`int`, *optional*): filler after a row stopped; defaults to the first EOS id.
        do_sample, temperature, top_p: sampling instead of greedy, as in `generate`.
        noise (`torch.Tensor`, *optional*): the diffusion `eps`, shaped like the pixel tensor (see `noise_like`).
        generator (`torch.Generator`, *optional*): source of the noise when `noise` is not given, and of sampling.
        use_cache (`bool`, defaults to True): False recomputes the whole sequence every step (slow; a reference).
        coordinate_channels (`int`, defaults to 0): leading entries of the pixel tensor's last dim that are
            coordinates, not pixels (the adapter's `coordinate_channels`); the noised image keeps them.
    """
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    if pixel_key not in inputs:
        raise ValueError(f"VCD needs the image input {pixel_key!r}; the batch has {sorted(inputs)}")
    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id
    eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or []))
    pad = int(pad_token_id if pad_token_id is not None else (eos[0] if len(eos) else 0))
    device = inputs["input_ids"].device
    eos = eos.to(device)

    pixels = inputs[pixel_key]
    noisy_inputs = dict(inputs)
    noised = keep_padding(pixels, add_diffusion_noise(pixels, noise_step, generator=generator, noise=noise))
    noisy_inputs[pixel_key] = keep_coordinates(pixels, noised, coordinate_channels)
    clean, noisy = _Stream(model, inputs, use_cache), _Stream(model, noisy_inputs, use_cache)

    sequence = inputs["input_ids"]
    prompt_length = sequence.shape[1]
    unfinished = torch.ones(sequence.shape[0], dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        scores = vcd_logits(clean.logits(sequence), noisy.logits(sequence), alpha, beta)
        token = _next_token(scores, do_sample, temperature, top_p, generator)
        token = torch.where(unfinished, token, torch.full_like(token, pad))
        sequence = torch.cat([sequence, token[:, None]], dim=-1)
        unfinished &= ~torch.isin(token, eos)
        if not unfinished.any():
            break
        clean.extend()
        noisy.extend()
    return sequence[:, prompt_length:]
