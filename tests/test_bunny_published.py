"""A Bunny checkpoint in the published layout (flat `bunny-llama` config, tokenizer only) loads for training."""

import json
import shutil

import torch
from PIL import Image
from test_bunny import write_published_checkpoint
from tiny import LLAMA3_NPM, require_tokenizer_dir, tiny_bunny
from transformers import AutoTokenizer

from vdtrain.models.loading import load_model_and_processor


def test_published_bunny_loads_with_a_built_processor(tmp_path):
    folder = require_tokenizer_dir(LLAMA3_NPM)
    model, _ = tiny_bunny(AutoTokenizer.from_pretrained(folder))
    write_published_checkpoint(model, tmp_path, truncated=False, sharded=False)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["image_token_index"]  # the real file has none: the placeholder is -200, the port uses 128002
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            shutil.copy(folder / name, tmp_path / name)

    loaded, processor, adapter = load_model_and_processor(tmp_path)
    assert type(loaded).__name__ == "BunnyForConditionalGeneration"
    assert adapter.num_image_tokens(processor, (50, 30)) == loaded.config.image_seq_length == 16
    messages = [{"role": "user", "content": "<image>\nWhat is this?"}, {"role": "assistant", "content": "A cat."}]
    example = adapter.encode(messages, processor, 16)[0]
    pixels = adapter.image_inputs(processor, [Image.new("RGB", (50, 30), "red")])["pixel_values"]
    assert pixels.shape == (1, 3, 96, 96)  # the largest S² scale
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([example.input_ids]), pixel_values=pixels).logits
        got = loaded(input_ids=torch.tensor([example.input_ids]), pixel_values=pixels).logits
    torch.testing.assert_close(got, expected)


def test_published_bunny_loads_by_hub_id_from_the_cache(tmp_path, monkeypatch):
    """`BAAI/Bunny-v1_1-Llama-3-8B-V` as a hub id, resolved from a hub cache offline, gets the native port too."""
    import huggingface_hub.constants

    folder = require_tokenizer_dir(LLAMA3_NPM)
    repo, revision = "BAAI/Bunny-v1_1-Llama-3-8B-V", "0" * 40
    cache = tmp_path / "hub"
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    model, _ = tiny_bunny(AutoTokenizer.from_pretrained(folder))
    snapshot.mkdir(parents=True)
    write_published_checkpoint(model, snapshot, truncated=False, sharded=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            shutil.copy(folder / name, snapshot / name)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    loaded, processor, adapter = load_model_and_processor(repo)
    assert type(loaded).__name__ == "BunnyForConditionalGeneration"
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)
