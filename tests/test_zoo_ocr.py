"""The model zoo's OCR and document families (tests/zoo_ocr.py) under exactly the assertions of tests/test_zoo.py
(`check_family`: the supervised span decodes to the answers plus one flagged end-of-turn token each, tau = 0 logs
the vanilla `Trainer`'s losses, `d` is not 0 on image rows) and, where vanilla TRL `SFTTrainer` trains the family,
of tests/test_zoo_sft.py (`check_sft_family`, with the zoo template's `{% generation %}` training twin).
"""

from __future__ import annotations

import pytest
import zoo_ocr
import zoo_torchvision
from test_zoo import check_family
from test_zoo_sft import TRAINING as ZOO_TRAINING
from test_zoo_sft import chatml, check_sft_family, training_template

# family -> (training template, what it adds to the zoo template's text), as test_zoo_sft.TRAINING
GOT = training_template(
    "<|im_start|>user\n",
    "<img><imgpad></img>\n",
    "<|im_end|>",
    "<|im_start|>assistant\n",
    "<|im_end|>",
    start="{% if messages[0]['role'] != 'system' %}<|im_start|>system\n"
    + zoo_ocr.GOT_SYSTEM
    + "<|im_end|>{% endif %}",
    prompt="<|im_start|>assistant\n",
)
DEEPSEEK = training_template(
    "<|User|>: ", "<image>\n", "\n\n", "<|Assistant|>: ", "{{ eos_token }}", prompt="<|Assistant|>:"
)
GRANITE_ROLE = "<|start_of_role|>{}<|end_of_role|>"
TRAINING: dict[str, tuple[str, str]] = {
    "pp_chart2table": (GOT.replace("<imgpad>", "<imgpad>" * 4), ""),
    "qianfan_ocr": (chatml("<image>\n"), ""),
    "deepseek_ocr2": (DEEPSEEK, ""),
    "deepseek_vl_hybrid": ZOO_TRAINING["deepseek_vl"],
    "lighton_ocr": (chatml("<|image_pad|>"), ""),
    "mistral_large4": (
        training_template("[INST]", "[IMG]", "[/INST]", "", "{{ eos_token }}", start="{{ bos_token }}"),
        "",
    ),
    "ovis2": (chatml("<image>\n"), ""),
    "ovis2_5": (chatml("<image>\n"), ""),
    "minicpmv4_6": (chatml("<|image_pad|>\n"), ""),
    "minicpmv4_7": (chatml("<|image_pad|>\n"), ""),
    "granite_docling": (
        training_template(
            GRANITE_ROLE.format("user"),
            "<image>",
            "<|end_of_text|>\n",
            GRANITE_ROLE.format("assistant"),
            "<|end_of_text|>",
            "\n",
            prompt=GRANITE_ROLE.format("assistant"),
        ),
        "",
    ),
}
# family -> why vanilla TRL `SFTTrainer` does not train it
NO_SFT: dict[str, str] = {
    "got_ocr2": "SFTTrainer's collator passes one image list per row; GotOcr2Processor raises 'Nested images are only "
    "supported with `multi_page` set to `True`' (trl sft_trainer.py _collate_language_modeling)",
}


def test_every_family_is_classified():
    """Each family of the module is in the zoo or left with a reason, and in TRAINING or NO_SFT."""
    assert not set(zoo_ocr.FAMILIES) & set(zoo_ocr.LEFT)
    assert sorted([*TRAINING, *NO_SFT]) == sorted(zoo_ocr.FAMILIES)


def param(family: str):
    """The family as a test parameter, marked `torchvision` where its processor needs it (scripts/ci_torchvision.sh
    runs those in the venv with torchvision; the main CI deselects them)."""
    marks = [pytest.mark.torchvision] if family in zoo_ocr.NEEDS_TORCHVISION else []
    return pytest.param(family, marks=marks)


@pytest.mark.parametrize("family", [param(family) for family in zoo_ocr.FAMILIES])
def test_family(family, tmp_path):
    if family in zoo_ocr.NEEDS_TORCHVISION:
        zoo_torchvision.require_torchvision()
    model, processor = zoo_ocr.build(family)
    check_family(family, model, processor, tmp_path)


@pytest.mark.parametrize("family", [param(family) for family in TRAINING])
def test_family_through_vdsfttrainer(family, tmp_path):
    if family in zoo_ocr.NEEDS_TORCHVISION:
        zoo_torchvision.require_torchvision()
    model, processor = zoo_ocr.build(family)
    check_sft_family(family, model, processor, TRAINING[family], tmp_path)
