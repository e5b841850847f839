"""VCD decoding: the contrast and cut-off by hand, and its limits equal plain greedy decoding exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny import tiny_llava, tiny_qwen2_vl, write_images

from vdtrain.evaluation.generate import DecodingOptions, generate_batch
from vdtrain.evaluation.vcd import noise_like, vcd_generate, vcd_logits
from vdtrain.method.noise import add_diffusion_noise, image_rows, seeded_generator
from vdtrain.models import get_adapter

QUESTIONS = ["What color?", "Please describe this image in detail.", "Is there a red cat on the blue mat by a tree?"]
STEPS = 8


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The tiny LLaVA, its adapter and a left-padded batch of three questions about three images."""
    torch.set_num_threads(1)
    model, processor = tiny_llava()
    adapter = get_adapter(model, processor)
    folder = tmp_path_factory.mktemp("images")
    images = [Image.open(folder / name).convert("RGB") for name in write_images(Path(folder), 3)]
    prompts = [adapter.prompt(q, processor) for q in QUESTIONS]
    inputs = adapter.generation_inputs(processor, prompts, images)
    assert (inputs["attention_mask"] == 0).any()  # really padded
    return model, processor, adapter, prompts, images, inputs


def _greedy(model, inputs, **kwargs):
    output = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, pad_token_id=3, **kwargs)
    return output[:, inputs["input_ids"].shape[1] :]


def _vcd(model, inputs, **kwargs):
    kwargs.setdefault("noise", noise_like(inputs["pixel_values"], range(len(inputs["input_ids"]))))
    return vcd_generate(model, inputs, max_new_tokens=STEPS, pad_token_id=3, **kwargs)


def test_vcd_logits_by_hand():
    clean, noisy = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[0.0, 1.0, 2.0]])
    assert torch.equal(vcd_logits(clean, noisy, alpha=1.0, beta=0.0), torch.tensor([[4.0, 1.0, -2.0]]))
    assert torch.equal(vcd_logits(clean, noisy, alpha=0.5, beta=0.0), torch.tensor([[3.0, 1.0, -1.0]]))
    # p_clean = softmax([2, 1, 0]) = [.665, .245, .090]; beta 0.3 keeps p >= .2 (tokens 0 and 1), beta 0.4 only token 0
    inf = -math.inf
    assert torch.equal(vcd_logits(clean, noisy, alpha=1.0, beta=0.3), torch.tensor([[4.0, 1.0, inf]]))
    assert torch.equal(vcd_logits(clean, noisy, alpha=1.0, beta=0.4), torch.tensor([[4.0, inf, inf]]))
    # the contrast can prefer another token, but never one the clean model finds implausible
    flipped = vcd_logits(clean, torch.tensor([[3.0, 0.0, -5.0]]), alpha=1.0, beta=0.3)
    assert flipped.argmax().item() == 1 and flipped[0, 2] == inf
    with pytest.raises(ValueError, match="beta"):
        vcd_logits(clean, noisy, beta=1.5)


def test_per_sample_noise_does_not_depend_on_the_batch():
    pixels = torch.zeros(3, 3, 4, 4)
    keys = ["a", "b", "c"]
    assert torch.equal(noise_like(pixels, keys, 7)[1:2], noise_like(pixels[1:2], keys[1:2], 7))
    assert not torch.equal(noise_like(pixels, keys, 7)[0], noise_like(pixels, keys, 7)[1])
    assert not torch.equal(noise_like(pixels[:1], ["a"], 7), noise_like(pixels[:1], ["a"], 8))
    expected = torch.randn((1, 3, 4, 4), generator=seeded_generator("vcd", 7, "b"))  # the one seeding of vdtrain
    assert torch.equal(noise_like(pixels, keys, 7)[1:2], expected)


def test_alpha_zero_is_plain_greedy(batch):
    model, _, _, _, _, inputs = batch
    assert torch.equal(_vcd(model, inputs, alpha=0.0, beta=0.1), _greedy(model, inputs))


def test_beta_one_keeps_only_the_clean_argmax(batch):
    model, _, _, _, _, inputs = batch
    greedy = _greedy(model, inputs)
    for alpha in (1.0, 5.0):
        assert torch.equal(_vcd(model, inputs, alpha=alpha, beta=1.0), greedy)


def test_contrast_changes_the_output(batch):
    model, _, _, _, _, inputs = batch
    assert not torch.equal(_vcd(model, inputs, alpha=5.0, beta=0.0, noise_step=999), _greedy(model, inputs))


def test_batch_sizes_agree(batch):
    model, processor, adapter, prompts, images, inputs = batch
    keys = list(range(3))
    together = _vcd(model, inputs, alpha=1.0, beta=0.1, noise=noise_like(inputs["pixel_values"], keys))
    for row in range(3):
        single = adapter.generation_inputs(processor, prompts[row : row + 1], images[row : row + 1])
        alone = _vcd(model, single, alpha=1.0, beta=0.1, noise=noise_like(single["pixel_values"], keys[row : row + 1]))
        assert torch.equal(alone[0], together[row, : alone.shape[1]])
        assert (together[row, alone.shape[1] :] == 3).all()


def test_flattened_patches_of_different_sizes_batch_as_one_by_one():
    """Qwen2-VL flattens images of different sizes into different patch counts (`image_grid_thw`): each prompt's
    rows get its own seeded noise, so VCD answers in a batch equal the answers one by one."""
    model, processor = tiny_qwen2_vl()
    adapter = get_adapter(model, processor)
    generator = torch.Generator().manual_seed(0)
    images = [
        Image.fromarray(torch.randint(0, 255, (size, size, 3), generator=generator).to(torch.uint8).numpy())
        for size in (32, 64)
    ]
    prompts = [adapter.prompt(q, processor) for q in QUESTIONS[:2]]
    inputs = adapter.generation_inputs(processor, prompts, images)
    rows = image_rows(inputs, inputs["pixel_values"])
    assert len(rows) == 2 and rows[0] != rows[1] and sum(rows) == inputs["pixel_values"].shape[0]
    alone = noise_like(inputs["pixel_values"][rows[0] :], ["b"])
    assert torch.equal(noise_like(inputs["pixel_values"], ["a", "b"], 0, rows)[rows[0] :], alone)

    options = DecodingOptions(decoding="vcd", max_new_tokens=STEPS, vcd_alpha=5.0, vcd_beta=0.0, vcd_noise_step=999)
    together = generate_batch(model, processor, adapter, QUESTIONS[:2], images, options, keys=["a", "b"])
    one_by_one = [
        generate_batch(model, processor, adapter, [q], [image], options, keys=[key])[0]
        for q, image, key in zip(QUESTIONS[:2], images, "ab")
    ]
    assert together == one_by_one


def test_cached_and_uncached_agree(batch):
    model, _, _, _, _, inputs = batch
    for alpha in (1.0, 0.0):
        cached = _vcd(model, inputs, alpha=alpha, beta=0.1)
        assert torch.equal(cached, _vcd(model, inputs, alpha=alpha, beta=0.1, use_cache=False))


def test_stops_at_eos_per_row(batch):
    model, _, _, _, _, inputs = batch
    eos = int(_greedy(model, inputs)[0, 2])  # row 0 ends after its third token
    output = _vcd(model, inputs, alpha=0.0, eos_token_id=eos)
    assert torch.equal(output, _greedy(model, inputs, eos_token_id=eos))
    assert output[0, 2] == eos and (output[0, 3:] == 3).all()


def test_sampling_is_seeded_and_top_p_zero_is_greedy(batch):
    model, _, _, _, _, inputs = batch
    greedy = _vcd(model, inputs, alpha=1.0, beta=0.1)
    nucleus = _vcd(model, inputs, alpha=1.0, beta=0.1, do_sample=True, top_p=1e-6, generator=torch.Generator())
    assert torch.equal(nucleus, greedy)
    draws = [
        _vcd(
            model,
            inputs,
            alpha=1.0,
            beta=0.0,
            do_sample=True,
            temperature=2.0,
            generator=torch.Generator().manual_seed(1),
        )
        for _ in range(2)
    ]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], greedy)


def test_first_step_by_hand(batch):
    model, _, _, _, _, inputs = batch
    noise = noise_like(inputs["pixel_values"], [1, 2, 3])
    noised = dict(inputs, pixel_values=add_diffusion_noise(inputs["pixel_values"], 700, noise=noise))
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        clean = model(**inputs, position_ids=positions).logits[:, -1]
        noisy = model(**noised, position_ids=positions).logits[:, -1]
    expected = (51 * clean - 50 * noisy).argmax(-1)
    assert not torch.equal(expected, clean.argmax(-1))  # the noised image matters here
    output = vcd_generate(model, inputs, alpha=50.0, beta=0.0, noise_step=700, noise=noise, max_new_tokens=1)
    assert torch.equal(output[:, 0], expected)
    with pytest.raises(ValueError, match="pixel_values"):
        vcd_generate(model, {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]})
