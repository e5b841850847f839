"""Tests of `vdtrain.models.assemble`: stage-1 LLaVA / Bunny bases built from tiny parts, loaded back by path."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny import BUNNY_SCALES, BUNNY_TILE, IMAGE_SIZE, LLAMA3_NPM, PATCH, WORDS, require_tokenizer_dir
from transformers import (
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
)

from vdtrain.models.assemble import AssemblyError, assemble_bunny, assemble_llava, load_projector
from vdtrain.models.bunny.modeling_bunny import s2_forward
from vdtrain.models.loading import load_model_and_processor

HIDDEN, VISION_HIDDEN = 64, 32
TOWER = {"hidden_size": VISION_HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
TEXT_TOWER = {**TOWER, "num_hidden_layers": 1, "vocab_size": 100}


def vicuna_like_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with only `<unk>`, `<s>`, `</s>`, like Vicuna's tokenizer before LLaVA adds its tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([" ".join(random.Random(i).sample(WORDS, 12)) for i in range(100)], trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def save_language_model(folder: Path, tokenizer, seed: int) -> LlamaForCausalLM:
    """A tiny LlamaForCausalLM plus its tokenizer, saved as a hub download would be."""
    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def save_projector(path: Path, in_features: int, seed: int) -> dict[str, torch.Tensor]:
    """A fake stage-1 `mm_projector.bin` with LLaVA's key names (mlp2x_gelu)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {
        "0.weight": (HIDDEN, in_features),
        "0.bias": (HIDDEN,),
        "2.weight": (HIDDEN, HIDDEN),
        "2.bias": (HIDDEN,),
    }
    state = {f"model.mm_projector.{k}": torch.randn(shape, generator=generator) for k, shape in shapes.items()}
    torch.save(state, path)
    return state


def project(state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """The mlp2x_gelu projector by hand: Linear, GELU, Linear."""
    hidden = F.linear(features, state["model.mm_projector.0.weight"], state["model.mm_projector.0.bias"])
    return F.linear(F.gelu(hidden), state["model.mm_projector.2.weight"], state["model.mm_projector.2.bias"])


def assert_same_weights(part: torch.nn.Module, assembled: torch.nn.Module, vocab: int | None = None) -> None:
    """Every tensor of `part` equals the assembled model's (the first `vocab` rows for resized embeddings)."""
    mine = assembled.state_dict()
    for name, tensor in part.state_dict().items():
        got = mine[name][: tensor.shape[0]] if vocab is not None and "embed_tokens" in name else mine[name]
        assert torch.equal(got, tensor), name


@pytest.fixture(scope="module")
def llava_parts(tmp_path_factory) -> dict:
    """Vicuna-like LM, a full CLIPModel checkpoint (as openai/clip-vit-large-patch14-336) and a projector file."""
    root = tmp_path_factory.mktemp("llava-parts")
    lm = save_language_model(root / "vicuna", vicuna_like_tokenizer(), seed=0)
    vision = {**TOWER, "image_size": IMAGE_SIZE, "patch_size": PATCH, "projection_dim": VISION_HIDDEN}
    torch.manual_seed(1)
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=TEXT_TOWER, projection_dim=VISION_HIDDEN)).eval()
    clip.save_pretrained(root / "clip")
    preprocessor = {  # the legacy format of openai/clip-vit-large-patch14-336's file, at 32 px
        "crop_size": IMAGE_SIZE,
        "size": IMAGE_SIZE,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "resample": 3,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    (root / "clip" / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    projector = save_projector(root / "mm_projector.bin", VISION_HIDDEN, seed=2)
    return {"root": root, "lm": lm, "clip": clip, "projector": projector}


@pytest.fixture(scope="module")
def llava_output(llava_parts) -> Path:
    root = llava_parts["root"]
    return assemble_llava(root / "vicuna", root / "clip", root / "mm_projector.bin", root / "out")


def test_llava_layout_config_and_tokenizer(llava_parts, llava_output, tmp_path):
    """llava-hf layout: legacy key names on disk, `<image>` = V, `<pad>` = V + 1, vocabulary padded to 64."""
    from safetensors import safe_open

    vocab = llava_parts["lm"].config.vocab_size  # 300
    config = json.loads((llava_output / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["image_token_index"] == vocab and config["text_config"]["pad_token_id"] == vocab + 1
    assert config["text_config"]["vocab_size"] == 320  # 302 rounded up to a multiple of 64
    assert config["image_seq_length"] == (IMAGE_SIZE // PATCH) ** 2
    assert (config["vision_feature_layer"], config["vision_feature_select_strategy"]) == (-2, "default")
    assert config["projector_hidden_act"] == "gelu"
    reference = tmp_path / "reference"  # what transformers itself writes for a LLaVA of this config
    LlavaForConditionalGeneration(LlavaConfig.from_pretrained(llava_output)).save_pretrained(reference)
    keys = [set(safe_open(folder / "model.safetensors", "pt").keys()) for folder in (llava_output, reference)]
    assert keys[0] == keys[1]
    assert {"multi_modal_projector.linear_1.weight", "language_model.lm_head.weight"} <= keys[0]
    generation = json.loads((llava_output / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, vocab + 1)


def test_llava_loads_with_the_parts_weights(llava_parts, llava_output):
    """Through `load_model_and_processor`: LM, tower and projector equal the parts; image features and text logits
    equal the parts' own computation."""
    model, processor, adapter = load_model_and_processor(llava_output)
    lm, clip, projector = llava_parts["lm"], llava_parts["clip"], llava_parts["projector"]
    vocab = lm.config.vocab_size
    assert type(adapter).__name__ == "LlavaAdapter"
    assert_same_weights(lm.model, model.model.language_model, vocab)
    assert torch.equal(model.lm_head.weight[:vocab], lm.lm_head.weight)
    assert_same_weights(clip.vision_model, model.model.vision_tower)
    mm = model.model.multi_modal_projector
    assert torch.equal(mm.linear_1.weight, projector["model.mm_projector.0.weight"])
    assert torch.equal(mm.linear_2.bias, projector["model.mm_projector.2.bias"])

    image = Image.new("RGB", (48, 40), (200, 30, 90))
    batch = processor(text="USER: <image>\ndescribe the picture ASSISTANT:", images=image, return_tensors="pt")
    image_id = adapter.image_token_id(processor)
    assert image_id == vocab and int((batch["input_ids"] == image_id).sum()) == (IMAGE_SIZE // PATCH) ** 2
    with torch.no_grad():
        hidden = clip.vision_model(batch["pixel_values"], output_hidden_states=True).hidden_states[-2][:, 1:]
        expected = project(projector, hidden)  # (1, 16, HIDDEN): layer -2, CLS dropped, then the projector
        got = model.model.get_image_features(batch["pixel_values"])
        got = got.pooler_output if hasattr(got, "pooler_output") else got
        torch.testing.assert_close(torch.cat(list(got)).reshape(expected.shape), expected)
        logits = model(**batch).logits
        assert logits.shape == (1, batch["input_ids"].shape[1], 320) and torch.isfinite(logits).all()
        text = processor.tokenizer("describe the red cat", return_tensors="pt")
        torch.testing.assert_close(model(**text).logits[..., :vocab], lm(**text).logits)


def test_llava_bfloat16_and_refuses_to_overwrite(llava_parts, llava_output):
    root = llava_parts["root"]
    with pytest.raises(AssemblyError, match="not empty"):
        assemble_llava(root / "vicuna", root / "clip", root / "mm_projector.bin", llava_output)
    out = assemble_llava(root / "vicuna", root / "clip", root / "mm_projector.bin", root / "bf16", dtype="bfloat16")
    model, _, _ = load_model_and_processor(out)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_projector_errors_name_the_problem(llava_parts, tmp_path):
    root = llava_parts["root"]
    state = dict(llava_parts["projector"])
    torch.save({**state, "model.embed_tokens.weight": torch.zeros(2)}, tmp_path / "extra.bin")
    with pytest.raises(AssemblyError, match=r"unexpected keys \['model.embed_tokens.weight'\]"):
        load_projector(tmp_path / "extra.bin")
    torch.save({k.removeprefix("model."): v for k, v in state.items()}, tmp_path / "bare.bin")
    assert set(load_projector(tmp_path / "bare.bin")) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    save_projector(tmp_path / "wide.bin", 3 * VISION_HIDDEN, seed=0)  # a Bunny S² projector for a LLaVA
    with pytest.raises(AssemblyError, match=r"0.weight.*\(64, 96\).*expected.*\(64, 32\)"):
        assemble_llava(root / "vicuna", root / "clip", tmp_path / "wide.bin", tmp_path / "out1")
    with pytest.raises(AssemblyError, match="mm_projector.bin does not exist"):
        assemble_llava(root / "vicuna", root / "clip", tmp_path / "mm_projector.bin", tmp_path / "out2")
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text("{}")
    with pytest.raises(AssemblyError, match=r"config-only lacks preprocessor_config.json, weights"):
        assemble_llava(root / "vicuna", tmp_path / "config-only", root / "mm_projector.bin", tmp_path / "out3")


@pytest.fixture(scope="module")
def bunny_parts(tmp_path_factory) -> dict:
    """Llama-3-tokenizer LM, a full SiglipModel checkpoint (as google/siglip-so400m-patch14-384) and a projector."""
    folder = require_tokenizer_dir(LLAMA3_NPM)
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("bunny-parts")
    lm = save_language_model(root / "llama3", AutoTokenizer.from_pretrained(folder), seed=3)
    torch.manual_seed(4)
    vision = {**TOWER, "image_size": BUNNY_TILE, "patch_size": PATCH}
    siglip = SiglipModel(SiglipConfig(vision_config=vision, text_config=TEXT_TOWER)).eval()
    siglip.save_pretrained(root / "siglip")
    projector = save_projector(root / "mm_projector.bin", len(BUNNY_SCALES) * VISION_HIDDEN, seed=5)
    out = assemble_bunny(root / "llama3", root / "siglip", root / "mm_projector.bin", root / "out")
    return {"root": root, "lm": lm, "siglip": siglip, "projector": projector, "out": out}


def test_bunny_loads_with_the_parts_weights(bunny_parts):
    """The port's config (S² 1x/2x/3x, image token 128002, pad == eos) and weights; features match S² by hand."""
    out, lm, siglip, projector = bunny_parts["out"], bunny_parts["lm"], bunny_parts["siglip"], bunny_parts["projector"]
    assert not (out / "processor_config.json").exists()  # the adapter builds the processor from the tokenizer
    model, processor, adapter = load_model_and_processor(out)
    assert type(adapter).__name__ == "BunnyAdapter" and model.config.model_type == "vdtrain_bunny"
    assert model.config.s2_scales == list(BUNNY_SCALES) and model.config.image_token_index == 128002
    assert processor.tokenizer.pad_token == "<|end_of_text|>" == processor.tokenizer.eos_token
    assert model.generation_config.pad_token_id == model.generation_config.eos_token_id == 128001
    assert_same_weights(lm.model, model.model.language_model)
    assert torch.equal(model.lm_head.weight, lm.lm_head.weight)
    assert_same_weights(siglip.vision_model, model.model.vision_tower)
    assert torch.equal(model.model.mm_projector[0].weight, projector["model.mm_projector.0.weight"])
    assert torch.equal(model.model.mm_projector[2].bias, projector["model.mm_projector.2.bias"])

    prompt = adapter.prompt("describe the picture", processor)
    batch = adapter.generation_inputs(processor, [prompt], [Image.new("RGB", (50, 70), (10, 200, 40))])
    assert int((batch["input_ids"] == 128002).sum()) == (BUNNY_TILE // PATCH) ** 2
    with torch.no_grad():

        def tower(tiles: torch.Tensor) -> torch.Tensor:
            return siglip.vision_model(tiles, output_hidden_states=True).hidden_states[-2]

        expected = project(projector, s2_forward(tower, batch["pixel_values"], list(BUNNY_SCALES)))
        torch.testing.assert_close(model.get_image_features(batch["pixel_values"]), expected)
        logits = model(**batch).logits
        assert logits.shape == (1, batch["input_ids"].shape[1], 128256) and torch.isfinite(logits).all()
        text = processor.tokenizer("describe the red cat", return_tensors="pt")
        torch.testing.assert_close(model(**text).logits, lm(**text).logits)


def test_bunny_rejects_a_non_llama3_tokenizer_and_a_single_scale_projector(llava_parts, bunny_parts, tmp_path):
    root = bunny_parts["root"]
    with pytest.raises(AssemblyError, match="needs the Llama-3 tokenizer"):
        assemble_bunny(llava_parts["root"] / "vicuna", root / "siglip", root / "mm_projector.bin", tmp_path / "a")
    save_projector(tmp_path / "single.bin", VISION_HIDDEN, seed=0)
    with pytest.raises(AssemblyError, match="S² scales"):
        assemble_bunny(root / "llama3", root / "siglip", tmp_path / "single.bin", tmp_path / "b")
    out = assemble_bunny(root / "llama3", root / "siglip", tmp_path / "single.bin", tmp_path / "c", s2_scales=[32])
    assert json.loads((out / "config.json").read_text())["s2_scales"] == [BUNNY_TILE]


def test_script_writes_and_reports(llava_parts, tmp_path, capsys):
    """`scripts/assemble_pretrained.py llava ...` prints the files it wrote; a bad part exits 1 naming the file."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "assemble_pretrained.py"
    spec = importlib.util.spec_from_file_location("assemble_pretrained", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root = llava_parts["root"]
    parts = ["--language-model", str(root / "vicuna"), "--vision-tower", str(root / "clip")]
    out = tmp_path / "llava-v1.5-7b-pretrain-hf"
    assert script.main(["llava", *parts, "--projector", str(root / "mm_projector.bin"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "model.safetensors" in printed and "processor_config.json" in printed
    assert script.main(["llava", *parts, "--projector", str(tmp_path / "nope.bin"), "--output", str(out)]) == 1
    assert "nope.bin does not exist" in capsys.readouterr().err
