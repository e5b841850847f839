"""The model zoo's families of tests/zoo_classic.py under exactly the assertions of tests/test_zoo.py, and, where
vanilla TRL `SFTTrainer` trains them, of tests/test_zoo_sft.py (with each template's `{% generation %}` twin)."""

from __future__ import annotations

import os

import pytest
import zoo_classic
import zoo_torchvision
from test_zoo import check_family
from test_zoo_sft import VICUNA, check_sft_family, training_template

COMPASS_ASSISTANT = "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|><|START_RESPONSE|>"
GRANITE_SYSTEM = (
    "<|start_of_role|>system<|end_of_role|>A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.<|end_of_text|>\n"
)
GRANITE_ASSISTANT = "<|start_of_role|>assistant<|end_of_role|>"
# family -> (training template, what it adds to the zoo template's text)
TRAINING = {
    "video_llava": (VICUNA, "</s>"),  # llava-hf's Vicuna template closes an answer with nothing
    "aria": (
        training_template(
            "<|im_start|>user\n",
            "<fim_prefix><|img|><fim_suffix>",
            "<|im_end|>\n",
            "<|im_start|>assistant\n",
            "<|im_end|>",
            "\n",
            prompt="<|im_start|>assistant\n",
        ),
        "",
    ),
    "cohere_compass": (
        training_template(
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>",
            "<|VISION_START|><|IMAGE_PAD|><|VISION_END|>",
            "<|END_OF_TURN_TOKEN|>",
            COMPASS_ASSISTANT,
            "<|END_RESPONSE|>",
            "<|END_OF_TURN_TOKEN|>",
            start="{{ bos_token }}",
            prompt=COMPASS_ASSISTANT,
        ),
        "",
    ),
    "granite4_vision": (
        training_template(
            "<|start_of_role|>user<|end_of_role|>",
            "<image>\n",
            "<|end_of_text|>\n",
            GRANITE_ASSISTANT,
            "<|end_of_text|>",
            "\n",
            start=GRANITE_SYSTEM,
            prompt=GRANITE_ASSISTANT,
        ),
        "",
    ),
    "gemma3n": (
        training_template(
            "<start_of_turn>user\n",
            "<image_soft_token>",
            "<end_of_turn>\n",
            "<start_of_turn>model\n",
            "<end_of_turn>",
            "\n",
            start="{{ bos_token }}",
            prompt="<start_of_turn>model\n",
        ),
        "",
    ),
}
SFT_FAMILIES = list(TRAINING)
# family -> why vanilla SFTTrainer does not train it
NOT_TRL = {
    "emu3": "SFTTrainer supervises the wrong tokens: Emu3Processor prepends the BOS text to every text without "
    "reporting it among its text replacements, so transformers 5.25's assistant mask lands len(BOS) characters early "
    "on every row (here `ANT: <answer></s>` for `<s>`; Emu3's `<|extra_203|>`: 13 characters, and never the EOS)",
}


def test_every_family_is_classified():
    """Every model type of the group is in the zoo or left with a reason; every zoo family is trained through TRL
    or listed with the reason it is not."""
    assert not set(zoo_classic.FAMILIES) & set(zoo_classic.LEFT)
    assert all(reason for reason in zoo_classic.LEFT.values())
    assert sorted([*SFT_FAMILIES, *NOT_TRL]) == sorted(zoo_classic.FAMILIES)


def family_param(family: str):
    """A family whose model needs timm (which imports torchvision) runs in scripts/ci_torchvision.sh's venv."""
    return pytest.param(family, marks=pytest.mark.torchvision) if family in zoo_classic.NEEDS_TORCHVISION else family


def build(family: str):
    if family in zoo_classic.NEEDS_TORCHVISION:
        zoo_torchvision.require_torchvision()
        try:
            import timm  # noqa: F401
        except ImportError as error:  # not in the `torchvision` extra: CI's venv must install it
            if os.environ.get("CI", "").lower() in ("1", "true"):
                pytest.fail(f"timm does not import: {error!r}")
            pytest.skip(f"timm does not import: {error!r}")
    return zoo_classic.build(family)


@pytest.mark.parametrize("family", [family_param(family) for family in zoo_classic.FAMILIES])
def test_family(family, tmp_path):
    model, processor = build(family)
    check_family(family, model, processor, tmp_path)


@pytest.mark.parametrize("family", [family_param(family) for family in SFT_FAMILIES])
def test_family_through_vdsfttrainer(family, tmp_path):
    model, processor = build(family)
    check_sft_family(family, model, processor, TRAINING[family], tmp_path)
