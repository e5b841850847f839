"""Forward diffusion on the model's normalized pixels (VCD's noised image v*, thesis section 5.2.1)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from vdtrain.method.schedule import NUM_TRAIN_TIMESTEPS

IMAGE_GRID = "image_grid_thw"  # (images, 3) input of flattened-patch models (Qwen2-VL): t x h x w patches each


@functools.lru_cache(maxsize=1)
def _scheduler():
    # VCD's schedule: sigmoid(linspace(-6, 6, 1000)) * (5e-3 - 1e-5) + 1e-5.
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="sigmoid", beta_start=1e-5, beta_end=5e-3
    )


def noise_scales(step: int) -> tuple[float, float]:
    """Return `(sqrt(abar[step]), sqrt(1 - abar[step]))`, the signal and noise scales at `step`."""
    abar = _scheduler().alphas_cumprod[_check_step(step)].item()
    return abar**0.5, (1.0 - abar) ** 0.5


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not float(step).is_integer():
        raise ValueError(f"noise step must be an integer, got {step!r}")
    if not 0 <= int(step) < NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"noise step must be in [0, {NUM_TRAIN_TIMESTEPS - 1}], got {step}")
    return int(step)


def add_diffusion_noise(
    pixel_values: torch.Tensor,
    step: int,
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise `pixel_values` to diffusion step `step`: `sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`.

    The arithmetic runs in float32 (bf16 schedules drift) and the result is cast back to the input dtype.

    Args:
        pixel_values (`torch.Tensor`): normalized pixels as the model receives them, any shape.
        step (`int`): 0-based diffusion step in `[0, 999]`; the paper uses 900.
        generator (`torch.Generator`, *optional*): source of `eps` when `noise` is not given. Must live on the
            device of `pixel_values` (a CPU generator is accepted for GPU tensors: eps is drawn on CPU and moved).
        noise (`torch.Tensor`, *optional*): `eps` itself, same shape as `pixel_values`.
    """
    step = _check_step(step)
    x0 = pixel_values.float()
    if noise is None:
        gen_device = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=torch.float32).to(x0.device)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, pixel_values {tuple(x0.shape)}")
    if x0.dim() == 0:
        raise ValueError("pixel_values must have at least one dimension")
    timesteps = torch.full((x0.shape[0],), step, dtype=torch.long, device=x0.device)
    noised = _scheduler().add_noise(x0, noise.float().to(x0.device), timesteps)
    return noised.to(pixel_values.dtype)


def keep_padding(pixels: torch.Tensor, noised: torch.Tensor) -> torch.Tensor:
    """`noised` with every image or tile (a slice of the last three dims) that is all zero in `pixels` put back to
    zero: the padding a processor adds where samples of a batch have fewer images or tiles than others. Idefics tells
    padding from images by its being zero (noised, it counts as an image: "image features and image tokens do not
    match"), and Mllama's text-only rows attend to it; noise must not make it content. Flattened patches (`(N, D)`,
    Qwen2-VL) carry no padding and are returned as noised."""
    if pixels.dim() < 4 or noised.shape != pixels.shape:
        return noised
    content = pixels.flatten(-3).ne(0).any(dim=-1)[..., None, None, None]
    return torch.where(content, noised, pixels.to(noised.dtype))


def keep_coordinates(pixels: torch.Tensor, noised: torch.Tensor, channels: int | torch.Tensor | None) -> torch.Tensor:
    """`noised` with the leading `channels` entries of its last dim put back from `pixels`: coordinates the model
    reads as indices (Kosmos-2.5's flattened patches start with the patch's row and column), which noise must not
    change; and every all-zero vector of the last dim (a padding patch, which such models mask out by its being zero)
    put back to zero. `noised` itself when there are no coordinates."""
    channels = int(channels.max()) if isinstance(channels, torch.Tensor) and channels.numel() else int(channels or 0)
    if channels <= 0:
        return noised
    if noised.shape != pixels.shape or channels > pixels.shape[-1]:
        raise ValueError(f"{channels} coordinate channels do not fit pixels of shape {tuple(pixels.shape)}")
    kept = torch.cat([pixels[..., :channels].to(noised.dtype), noised[..., channels:]], dim=-1)
    return torch.where(pixels.ne(0).any(dim=-1, keepdim=True), kept, pixels.to(noised.dtype))


def seeded_generator(*key: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from a hash of `key` (its parts joined by ':'): a draw depends on what it is for (seed,
    step, sample), not on how many draws came before it, so batching, sharding and resuming cannot change it."""
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def image_rows(inputs: Mapping[str, Any], pixels: torch.Tensor) -> list[int]:
    """The leading rows of `pixels` that hold each image: one per image, or each image's patch count for models that
    flatten every image into patches (`image_grid_thw`, Qwen2-VL style), so each image gets its own noise draw."""
    grid = inputs.get(IMAGE_GRID)
    if isinstance(grid, torch.Tensor) and grid.dim() == 2:
        patches = grid.prod(dim=-1).tolist()
        if sum(patches) == pixels.shape[0]:
            return patches
    return [1] * pixels.shape[0]
