"""The zoo's families of group tvb (tests/zoo_tvb.py: image processors that exist only as torchvision classes, timm
vision towers), under exactly the assertions of tests/test_zoo.py (`check_family`) and, through TRL, of
tests/test_zoo_sft.py (`check_sft_family`, with each family's training template: its chat template with the answer
and its end-of-turn token inside `{% generation %}`).

Marked `torchvision`: the main CI venv deselects them; scripts/ci_torchvision.sh runs them in its torchvision venv.
"""

from __future__ import annotations

import pytest
import zoo_torchvision
import zoo_tvb
from test_zoo import check_family
from test_zoo_sft import EOS, chatml, check_sft_family, training_template

pytestmark = pytest.mark.torchvision

LLAMA3_HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"
PLM_START = "{{ bos_token }}" + LLAMA3_HEADER.format("system") + zoo_tvb.PLM_SYSTEM + "<|eot_id|>"
MINIMAX_START = "]~!b[]~b]system\nYou are a helpful assistant.[e~[\n"
# family -> (training template, what it adds to the zoo template's text)
TRAINING = {
    "perception_lm": (
        training_template(
            LLAMA3_HEADER.format("user"),
            "<|image|>",
            "<|eot_id|>",
            LLAMA3_HEADER.format("assistant"),
            "<|eot_id|>",
            start=PLM_START,
            prompt=LLAMA3_HEADER.format("assistant"),
        ),
        "",
    ),
    "fast_vlm": (chatml("<image>\n"), ""),
    "minicpm_ocr": (chatml("<unk>\n"), ""),
    "minimax_m3_vl": (
        training_template(
            "]~b]user\n", "]<]image[>[", "[e~[\n", "]~b]ai\n", "[e~[", "\n", start=MINIMAX_START, prompt="]~b]ai\n"
        ),
        "",
    ),
    "step3p7": (
        training_template(
            "<|BOT|>user\n",
            "<im_patch>",
            "<|EOT|>",
            "<|BOT|>assistant\n",
            "<|EOT|>",
            start="{{ bos_token }}",
            prompt="<|BOT|>assistant\n",
        ),
        "",
    ),
    "unlimited_ocr": (
        training_template(
            "User: ", "<image>\n", "{{ '\\n\\n' }}", "Assistant: ", EOS, start="{{ bos_token }}", prompt="Assistant:"
        ),
        "",
    ),
}
# families vanilla TRL cannot train, with the reason
NO_TRL = {
    # SFTTrainer's fused LM head runs `model.base_model` and reads `last_hidden_state`; this class sets no
    # `base_model_prefix`, so `base_model` is the model itself, whose output (MultimodalCausalLMOutputWithPast) has
    # none: AttributeError at trl/trainer/utils.py `_fused_forward`, in the vanilla SFTTrainer run
    "nemotron_h_omni": "TRL's fused LM head: base_model is the whole model, no last_hidden_state",
}


def test_every_family_is_classified():
    """Each family of the group is in the zoo or in LEFT with its reason, never both; every zoo family has a
    training template for TRL or the reason TRL does not train it."""
    assert not set(zoo_tvb.FAMILIES) & set(zoo_tvb.LEFT)
    assert all(reason.strip() for reason in zoo_tvb.LEFT.values())
    assert sorted([*TRAINING, *NO_TRL]) == sorted(zoo_tvb.FAMILIES)


@pytest.mark.parametrize("family", zoo_tvb.FAMILIES)
def test_family(family, tmp_path):
    zoo_torchvision.require_torchvision()
    model, processor = zoo_tvb.build(family)
    check_family(family, model, processor, tmp_path)


@pytest.mark.parametrize("family", list(TRAINING))
def test_family_through_vdsfttrainer(family, tmp_path):
    zoo_torchvision.require_torchvision()
    model, processor = zoo_tvb.build(family)
    check_sft_family(family, model, processor, TRAINING[family], tmp_path)


def test_undeclared_local_crops_reach_the_model(tmp_path):
    """Unlimited-OCR's processor returns `pixel_values_local` without declaring it in `model_input_names`: the adapter
    keeps it, the collator batches it as the processor does, and the model takes the batch (without the crops its
    image tokens outnumber its image features). A direct pin of what check_family covers end to end."""
    import torch
    from PIL import Image
    from test_zoo import records, write_images

    from vdtrain.data import SupervisedDataset, VDDataCollator
    from vdtrain.keys import LOSS_ONLY_KEYS
    from vdtrain.models import get_adapter
    from vdtrain.models.base import tokenizer_of

    zoo_torchvision.require_torchvision()
    model, processor = zoo_tvb.build("unlimited_ocr")
    adapter = get_adapter(model, processor)
    assert "pixel_values_local" not in processor.model_input_names
    write_images(tmp_path)
    image = Image.open(tmp_path / "img0.png").convert("RGB")  # landscape: two local crops
    inputs = adapter.image_inputs(processor, [image])
    assert inputs["pixel_values_local"].shape[0] == inputs["num_local_patches"][0] == 2
    dataset = SupervisedDataset(records(), adapter, processor, image_folder=tmp_path, max_length=4096)
    batch = VDDataCollator.for_processor(processor)([dataset[index] for index in range(len(dataset))])
    images = [[Image.open(tmp_path / f"img{index}.png").convert("RGB")] for index in range(3)]
    text = [adapter.image_placeholder(processor)] * 3
    tokenizer_of(processor, ensure_pad=True)  # the processor pads the rows' text
    expected = processor(text=text, images=images, return_tensors="pt", padding=True, add_special_tokens=False)
    assert torch.equal(batch["pixel_values_local"], expected["pixel_values_local"])
    assert batch["num_local_patches"] == expected["num_local_patches"]
    with torch.no_grad():
        loss = model(**{key: value for key, value in batch.items() if key not in LOSS_ONLY_KEYS}).loss
    assert torch.isfinite(loss)
