"""Tests of the native Bunny port: S² wrapper, published-checkpoint loading, save/load, generation, loss."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText, LlamaConfig, SiglipVisionConfig

from vdtrain.models.bunny import BunnyConfig, BunnyForConditionalGeneration, merge_chessboard, split_chessboard
from vdtrain.models.bunny.convert import port_to_published_key, published_to_port_key
from vdtrain.models.bunny.modeling_bunny import s2_forward

IMAGE_TOKEN = 199
PAD = 0
TILE, PATCH, GRID = 32, 8, 4  # 32-px tiles of 8-px patches: a 4x4 grid of 16 tokens


def tiny_vision_config() -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TILE,
        patch_size=PATCH,
    )


def tiny_text_config() -> LlamaConfig:
    return LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=200,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )


def tiny_bunny(scales: tuple[int, ...] = (32, 64, 96), seed: int = 0) -> BunnyForConditionalGeneration:
    config = BunnyConfig(
        vision_config=tiny_vision_config(),
        text_config=tiny_text_config(),
        s2_scales=list(scales),
        image_token_index=IMAGE_TOKEN,
    )
    torch.manual_seed(seed)
    return BunnyForConditionalGeneration(config).eval()


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two left-padded prompts, each: BOS, text, 16 image tokens, text."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n_before, n_after in ((3, 5), (1, 2)):
        text = torch.randint(3, 150, (n_before + n_after,), generator=g).tolist()
        rows.append([1] + text[:n_before] + [IMAGE_TOKEN] * GRID**2 + text[n_before:])
    length = max(len(r) for r in rows)
    input_ids = torch.tensor([[PAD] * (length - len(r)) + r for r in rows])
    attention_mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    pixel_values = torch.randn(2, 3, 96, 96, generator=g)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def penultimate(tower: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return tower(images, output_hidden_states=True).hidden_states[-2]  # (N, 16, C)


@torch.no_grad()
def test_s2_single_scale_is_the_plain_tower():
    model = tiny_bunny(scales=(32,))
    images = torch.randn(3, 3, TILE, TILE)
    tower = model.model.vision_tower
    expected = penultimate(tower, images)
    torch.testing.assert_close(s2_forward(model.model._tower_features, images, [TILE]), expected, rtol=0, atol=0)
    torch.testing.assert_close(model.get_image_features(images), model.model.mm_projector(expected))


def test_chessboard_split_order_and_merge_round_trip():
    x = torch.randn(2, 3, 12, 12)
    tiles = split_chessboard(x, 3)  # (9*2, 3, 4, 4), tile (i, j) then batch
    assert tiles.shape == (18, 3, 4, 4)
    for i in range(3):
        for j in range(3):
            k = i * 3 + j
            assert torch.equal(tiles[2 * k : 2 * k + 2], x[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4])
    assert torch.equal(merge_chessboard(tiles, 3), x)


@pytest.mark.parametrize("scales", [(32, 64), (32, 64, 96)])
@torch.no_grad()
def test_s2_multiscale_matches_tile_by_tile_reference(scales):
    model = tiny_bunny(scales=scales)
    tower = model.model.vision_tower
    images = torch.randn(2, 3, scales[-1], scales[-1])
    out = s2_forward(model.model._tower_features, images, list(scales))
    assert out.shape == (2, GRID * GRID, len(scales) * 32)

    per_scale = []
    for size in scales:
        x = images if size == images.shape[-1] else F.interpolate(images, size=(size, size), mode="bicubic")
        n = size // TILE
        canvas = torch.zeros(2, 32, GRID * n, GRID * n)
        for i in range(n):
            for j in range(n):
                tile = x[:, :, i * TILE : (i + 1) * TILE, j * TILE : (j + 1) * TILE]
                feats = penultimate(tower, tile).transpose(1, 2).reshape(2, 32, GRID, GRID)
                canvas[:, :, i * GRID : (i + 1) * GRID, j * GRID : (j + 1) * GRID] = feats
        per_scale.append(F.avg_pool2d(canvas, kernel_size=n))  # area resize by an integer factor
    expected = torch.cat(per_scale, dim=1).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def write_published_checkpoint(model: BunnyForConditionalGeneration, path, *, truncated: bool, sharded: bool) -> None:
    """Save `model` the way BAAI published Bunny: flat bunny-llama config.json and the original tensor names."""
    state = {port_to_published_key(k): v.contiguous() for k, v in model.state_dict().items()}
    if truncated:  # the hub code's tower: last layer and pooling head removed
        last = model.config.vision_config.num_hidden_layers - 1
        vision = "model.vision_tower.vision_tower.vision_model."
        state = {
            k: v for k, v in state.items() if not k.startswith((vision + "head.", f"{vision}encoder.layers.{last}."))
        }
    if sharded:
        names = sorted(state)
        shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
        for file, keys in shards.items():
            save_file({k: state[k] for k in keys}, str(path / file), metadata={"format": "pt"})
        weight_map = {k: file for file, keys in shards.items() for k in keys}
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    text = model.config.text_config.to_dict()
    llama_keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    config = {k: text[k] for k in llama_keys + ("num_key_value_heads", "rms_norm_eps", "bos_token_id", "eos_token_id")}
    config.update(
        architectures=["BunnyLlamaForCausalLM"],
        auto_map={"AutoModelForCausalLM": "modeling_bunny_llama.BunnyLlamaForCausalLM"},
        model_type="bunny-llama",
        hidden_act="silu",
        max_position_embeddings=256,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        torch_dtype="float32",
        mm_vision_tower="google/siglip-so400m-patch14-384",
        mm_hidden_size=3 * 32,
        mm_projector_type="mlp2x_gelu",
        use_s2=True,
        s2_scales="32,64,96",
        image_aspect_ratio="pad",
        vision_config=tiny_vision_config().to_dict(),  # the real file has none: SigLIP-so400m is assumed
        image_token_index=IMAGE_TOKEN,
    )
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("truncated,sharded", [(False, False), (True, True)])
@torch.no_grad()
def test_published_checkpoint_loads_every_weight(tmp_path, truncated, sharded):
    model = tiny_bunny()
    batch = make_batch()
    expected = model(**batch).logits
    write_published_checkpoint(model, tmp_path, truncated=truncated, sharded=sharded)

    loaded, info = BunnyForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    assert loaded.config.vision_config.num_hidden_layers == (1 if truncated else 2)
    torch.testing.assert_close(loaded.eval()(**batch).logits, expected, rtol=0, atol=0)

    loaded.save_pretrained(tmp_path / "port")  # re-saved in the port's own layout
    reloaded = BunnyForConditionalGeneration.from_pretrained(tmp_path / "port")
    assert reloaded.config.model_type == "vdtrain_bunny"
    torch.testing.assert_close(reloaded.eval()(**batch).logits, expected, rtol=0, atol=0)


def test_key_mapping_round_trip():
    published = [
        "model.vision_tower.vision_tower.vision_model.encoder.layers.3.self_attn.q_proj.weight",
        "model.vision_tower.vision_tower.vision_model.head.probe",
        "model.layers.0.self_attn.q_proj.weight",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.mm_projector.0.weight",
        "lm_head.weight",
    ]
    port = [published_to_port_key(k) for k in published]
    assert port == [
        "model.vision_tower.encoder.layers.3.self_attn.q_proj.weight",
        "model.vision_tower.head.probe",
        "model.language_model.layers.0.self_attn.q_proj.weight",
        "model.language_model.embed_tokens.weight",
        "model.language_model.norm.weight",
        "model.mm_projector.0.weight",
        "lm_head.weight",
    ]
    assert [port_to_published_key(k) for k in port] == published


def test_published_config_fields_map_to_the_real_model(tmp_path):
    published = {
        "model_type": "bunny-llama",
        "architectures": ["BunnyLlamaForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "rope_theta": 500000.0,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "mm_hidden_size": 3456,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "use_s2": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(published))
    config = BunnyConfig.from_pretrained(tmp_path)
    assert config.s2_scales == [384, 768, 1152]
    assert config.image_seq_length == 729
    assert config.vision_config.hidden_size * len(config.s2_scales) == 3456
    assert config.vision_feature_layer == 26  # penultimate of so400m's 27 layers
    assert (config.text_config.hidden_size, config.text_config.num_key_value_heads) == (4096, 8)
    assert config.text_config.rope_parameters["rope_theta"] == 500000.0
    assert not hasattr(config, "auto_map")  # so a re-saved config never asks for remote code


@torch.no_grad()
def test_save_pretrained_round_trip(tmp_path):
    model = tiny_bunny()
    batch = make_batch()
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    for cls in (BunnyForConditionalGeneration, AutoModelForImageTextToText):
        loaded = cls.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, BunnyForConditionalGeneration)
        torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)
    last = model(**batch, logits_to_keep=1).logits
    torch.testing.assert_close(last[:, -1], expected[:, -1])


@torch.no_grad()
def test_generate_with_and_without_cache_left_padded():
    model = tiny_bunny()
    batch = make_batch()
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": PAD}
    cached = model.generate(**batch, use_cache=True, **kwargs)
    uncached = model.generate(**batch, use_cache=False, **kwargs)
    assert cached.shape == (2, batch["input_ids"].shape[1] + 4)
    assert torch.equal(cached, uncached)
    # The padded row generates what it generates alone.
    keep = batch["attention_mask"][1].bool()
    alone = model.generate(
        input_ids=batch["input_ids"][1:, keep], pixel_values=batch["pixel_values"][1:], use_cache=True, **kwargs
    )
    assert torch.equal(alone[0, -4:], cached[1, -4:])


def test_loss_matches_shifted_cross_entropy_and_backward():
    model = tiny_bunny().train()
    batch = make_batch()
    labels = batch["input_ids"].clone()
    labels[(labels == IMAGE_TOKEN) | (batch["attention_mask"] == 0)] = -100
    out = model(**batch, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    for name in (
        "model.mm_projector.0.weight",
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight",
        "lm_head.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_image_token_count_mismatch_is_explained():
    model = tiny_bunny()
    batch = make_batch()
    input_ids = batch["input_ids"].clone()
    input_ids[0, -6] = 5  # one image token short
    with pytest.raises(ValueError, match="16 copies of config.image_token_index"):
        model(input_ids=input_ids, pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match="-200"):
        model(input_ids=torch.tensor([[1, -200, 5]]), pixel_values=batch["pixel_values"][:1])
