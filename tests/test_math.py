"""The method's math against hand-computed values and diffusers (thesis Eq. 5.1-5.5)."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from vdtrain import add_diffusion_noise, register_weighting, target_logprobs, token_weights, visual_dependence
from vdtrain.method.dependence import dependence_stats_tensor, row_logprobs
from vdtrain.method.losses import per_token_nll
from vdtrain.method.noise import keep_coordinates, keep_padding
from vdtrain.method.weighting import get_weighting


def test_noise_matches_vcd_formula_and_diffusers():
    x0, eps = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000)) * (5e-3 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, dim=0)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="sigmoid", beta_start=1e-5, beta_end=5e-3)
    for step in (200, 500, 900, 999):
        expected = abar[step].sqrt() * x0 + (1 - abar[step]).sqrt() * eps
        got = add_diffusion_noise(x0, step, noise=eps)
        assert torch.allclose(got, expected, atol=1e-6)
        assert torch.equal(got, scheduler.add_noise(x0, eps, torch.full((3,), step)))
    # the paper's default step: signal x0.365, noise x0.931
    assert math.isclose(abar[900].sqrt().item(), 0.3649, abs_tol=1e-3)


def test_keep_padding_leaves_zero_images_and_tiles_zero():
    """A processor's padding (an all-zero image or tile, which Idefics tells from images by its being zero) stays
    zero under the VD noise; every other image and tile is the noised one, and flattened patches are untouched."""
    pixels = torch.randn(2, 3, 3, 4, 4)  # (samples, tiles, C, H, W)
    pixels[0, 2] = 0  # a sample with fewer tiles
    pixels[1] = 0  # a text-only sample's padding image
    pixels[0, 1, 0] = 0  # one zero channel of a real tile is content
    noised = add_diffusion_noise(pixels, 900, generator=torch.Generator().manual_seed(0))
    kept = keep_padding(pixels, noised)
    assert kept[0, 2].eq(0).all() and kept[1].eq(0).all()
    assert torch.equal(kept[0, :2], noised[0, :2]) and not kept[0, 1, 0].eq(0).all()
    patches = torch.zeros(6, 12)  # Qwen2-VL's (patches, dim): no padding images, all noised
    assert torch.equal(keep_padding(patches, patches + 1), patches + 1)


def test_keep_coordinates_puts_the_leading_channels_back_exactly():
    """Coordinates in the leading entries of the last dim (Kosmos-2.5's flattened patches: row, column) come back
    from the clean pixels bit for bit, padding patches (all zero, masked out by being zero) stay zero, every other
    entry is the noised one; none named leaves the noised tensor."""
    pixels = torch.randn(2, 5, 2 + 12)  # (samples, patches, 2 + p*p*C)
    pixels[..., 0], pixels[..., 1] = torch.arange(5.0) // 2 + 1, torch.arange(5.0) % 2 + 1
    pixels[1, 3:] = 0  # the second sample's image has 3 patches, then padding
    noised = add_diffusion_noise(pixels, 900, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noised[..., :2], pixels[..., :2])  # what the model would read as out-of-range indices
    for channels in (2, torch.tensor([2, 0])):  # an int, or the collator's per-row counts (0: a text-only row)
        kept = keep_coordinates(pixels, noised, channels)
        assert torch.equal(kept[..., :2], pixels[..., :2]) and kept[1, 3:].eq(0).all()
        assert torch.equal(kept[0, :, 2:], noised[0, :, 2:]) and torch.equal(kept[1, :3, 2:], noised[1, :3, 2:])
    for none in (0, None, torch.tensor([0, 0])):
        assert keep_coordinates(pixels, noised, none) is noised
    half = keep_coordinates(pixels.bfloat16(), noised.bfloat16(), 1)
    assert half.dtype == torch.bfloat16 and torch.equal(half[..., 0], pixels[..., 0].bfloat16())
    with pytest.raises(ValueError, match="15 coordinate channels"):
        keep_coordinates(pixels, noised, 15)


def test_noise_generator_and_dtype():
    x0 = torch.randn(2, 3, 4, 4)
    a = add_diffusion_noise(x0, 900, generator=torch.Generator().manual_seed(1))
    b = add_diffusion_noise(x0, 900, generator=torch.Generator().manual_seed(1))
    c = add_diffusion_noise(x0, 900, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    half = add_diffusion_noise(x0.bfloat16(), 900, generator=torch.Generator().manual_seed(1))
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), a, atol=0.03)  # computed in float32, then cast
    with pytest.raises(ValueError, match="noise step"):
        add_diffusion_noise(x0, 1000)
    with pytest.raises(ValueError, match="noise step must be an integer, got 900.5"):
        add_diffusion_noise(x0, 900.5)
    with pytest.raises(ValueError, match="shape"):
        add_diffusion_noise(x0, 10, noise=torch.randn(3))


def test_target_logprobs_aligned_and_chunked():
    torch.manual_seed(0)
    logits = torch.randn(2, 300, 50)
    labels = torch.randint(0, 50, (2, 300))
    labels[:, :7] = -100
    labels[1, 200:] = -100
    full = torch.log_softmax(logits, dim=-1)
    out = target_logprobs(logits, labels, chunk_size=64)
    for b in range(2):
        for t in (7, 8, 150, 199, 299):
            expected = full[b, t - 1, labels[b, t]].item() if labels[b, t] != -100 else 0.0
            assert math.isclose(out[b, t].item(), expected, abs_tol=1e-5)
    assert out[:, 0].abs().max() == 0 and out[1, 200:].abs().max() == 0
    assert target_logprobs(logits.bfloat16(), labels).dtype == torch.float32


def test_row_logprobs_chunking_does_not_change_values():
    torch.manual_seed(0)
    logits, targets = torch.randn(70, 4000), torch.randint(0, 4000, (70,))
    expected = torch.log_softmax(logits, dim=-1)[torch.arange(70), targets]
    assert row_logprobs(logits, targets).shape == (70,)  # default: 2**20 // 4000 = 262 rows per chunk on CPU
    for chunk in (None, 1, 3, 64, 1000):
        assert torch.allclose(row_logprobs(logits, targets, chunk_size=chunk), expected, atol=1e-5)
    wide = torch.randn(5, 2**20 + 7)  # wider than the CPU budget: one row per chunk, still exact
    wide_targets = torch.tensor([0, 1, 2, 3, 2**20 + 6])
    assert torch.allclose(
        row_logprobs(wide, wide_targets), torch.log_softmax(wide, dim=-1)[torch.arange(5), wide_targets], atol=1e-5
    )


def test_visual_dependence_hand_values():
    p_clean = torch.tensor([0.8, 0.2, 0.5, 1e-30, 0.9])
    p_noisy = torch.tensor([0.4, 0.4, 0.5, 0.9, 1e-30])
    d = visual_dependence(p_clean.log(), p_noisy.log())
    # (pc - pn) / max(pc, pn)
    assert torch.allclose(d, torch.tensor([0.5, -0.5, 0.0, -1.0, 1.0]), atol=1e-6)
    d_random = visual_dependence(torch.randn(1000) * 20, torch.randn(1000) * 20)
    assert d_random.min() >= -1 and d_random.max() <= 1


def test_dependence_stats_hand_values():
    d = torch.tensor([[0.5, -0.5, 0.1, 0.9], [0.3, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    mean, pos, neg, inv = dependence_stats_tensor(d, mask).tolist()  # supervised: 0.5, -0.5, 0.1, 0.3
    assert math.isclose(mean, 0.1, abs_tol=1e-6)
    assert (pos, neg, inv) == (0.5, 0.25, 0.25)
    assert dependence_stats_tensor(d, torch.zeros_like(mask)).tolist() == [0.0] * 4  # nothing supervised: no NaN


def test_token_weights_hand_values():
    d = torch.tensor([[0.5, -0.5, 0.0, -1.0, 0.3]])
    mask = torch.tensor([[True, True, True, True, False]])
    w = token_weights(d, mask, scheme="neg", temperature=0.5)
    scores = torch.tensor([0.0, 0.25, 0.0, 0.5])  # 0.5 * max(-d, 0)
    expected = 4 * torch.softmax(scores, 0)
    assert torch.allclose(w[0, :4], expected, atol=1e-6) and w[0, 4] == 0
    assert math.isclose(w[0, :4].mean().item(), 1.0, rel_tol=1e-6)
    w_pos = token_weights(d, mask, scheme="pos", temperature=2.0)
    assert torch.allclose(w_pos[0, :4], 4 * torch.softmax(torch.tensor([1.0, 0, 0, 0]), 0), atol=1e-6)


def test_token_weights_properties():
    torch.manual_seed(0)
    d = torch.rand(4, 20) * 2 - 1
    mask = torch.rand(4, 20) > 0.3
    mask[3] = False  # nothing supervised
    eos = torch.zeros_like(mask)
    eos[0, 5] = eos[1, 7] = True
    mask[0, 5] = mask[1, 7] = True
    plain = token_weights(d, mask, scheme="neg", temperature=3.0)
    for b in range(3):
        assert math.isclose(plain[b][mask[b]].mean().item(), 1.0, rel_tol=1e-5)  # a sample's weights average 1
    assert (plain[~mask] == 0).all() and (plain[3] == 0).all() and not plain.isnan().any()
    floored = token_weights(d, mask, scheme="neg", temperature=3.0, end_of_turn_mask=eos, eos_min_weight=1.0)
    assert floored[0, 5] >= 1.0 and floored[1, 7] >= 1.0
    assert torch.equal(floored[~eos], plain[~eos])
    assert torch.equal(token_weights(d, mask, temperature=0.0), mask.float())  # tau = 0: vanilla
    assert torch.equal(token_weights(d, mask, scheme="none"), mask.float())
    d.requires_grad_(True)
    assert not token_weights(d, mask).requires_grad


def test_weighting_registry():
    @register_weighting("abs-test")
    def _abs(d):
        return d.abs()

    d = torch.tensor([[0.9, 0.0]])
    w = token_weights(d, torch.ones(1, 2, dtype=torch.bool), scheme="abs-test", temperature=1.0)
    assert w[0, 0] > 1 > w[0, 1]
    with pytest.raises(ValueError, match="unknown weighting"):
        token_weights(d, torch.ones(1, 2, dtype=torch.bool), scheme="missing")
    with pytest.raises(ValueError, match="'neg' is already registered; pass override=True"):
        register_weighting("neg")(lambda d: d)  # a duplicate name never replaces a scheme silently
    assert torch.equal(get_weighting("neg")(torch.tensor([-0.5, 0.5])), torch.tensor([0.5, 0.0]))  # Eq. 5.3 still

    @register_weighting("abs-test", override=True)
    def _negated_abs(d):
        return -d.abs()

    w = token_weights(d, torch.ones(1, 2, dtype=torch.bool), scheme="abs-test", temperature=1.0)
    assert w[0, 0] < 1 < w[0, 1]


def test_selective_eos_loss_hand_computation():
    eos = 3
    logits = torch.tensor([[1.0, 2.0, 0.5, 3.0], [0.2, 0.1, 0.3, 2.0]])
    targets = torch.tensor([1, 3])  # row 0: target is not EOS -> EOS excluded; row 1: target EOS -> full softmax
    nll = per_token_nll(logits, targets, eos_id=eos)
    row0 = -(2.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)))
    row1 = -(2.0 - math.log(sum(math.exp(v) for v in (0.2, 0.1, 0.3, 2.0))))
    assert torch.allclose(nll, torch.tensor([row0, row1]), atol=1e-6)
    # With very negative EOS logits and EOS only as the final target, selective == plain cross-entropy.
    logits = torch.randn(6, 10)
    logits[:5, eos] = -1e4
    targets = torch.tensor([0, 1, 2, 4, 5, eos])
    plain = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert torch.allclose(per_token_nll(logits, targets, eos_id=eos), plain, atol=1e-6)
    logits.requires_grad_(True)
    per_token_nll(logits, targets, eos_id=eos).sum().backward()
    assert logits.grad[:5, eos].abs().max() == 0  # excluded from the softmax: no gradient through it
