"""The model zoo's Qwen-derived families (tests/zoo_qwen.py), under exactly the assertions of tests/test_zoo.py
(`check_family`: the supervised span decodes to the answers plus one flagged end-of-turn token each, tau = 0 logs the
vanilla `Trainer`'s losses, `d` is not 0 on image rows) and, where vanilla TRL `SFTTrainer` trains the family, of
tests/test_zoo_sft.py (`check_sft_family`, with the chat template's `{% generation %}` training twin).
"""

from __future__ import annotations

import pytest
import zoo_qwen
from test_zoo import check_family
from test_zoo_sft import chatml, check_sft_family, training_template

QWEN_IMAGE = zoo_qwen.QWEN_IMAGE
HEADER = "<|im_start|>assistant\n"


def qwen3_chatml(image: str = QWEN_IMAGE, start: str = "") -> str:
    """The training twin of Qwen3's ChatML (no default system prompt; `start` opens the text)."""
    user, end = "<|im_start|>user\n", "<|im_end|>"
    return training_template(user, image, end + "\n", HEADER, end, "\n", start=start, prompt=HEADER)


EXAONE = training_template(
    "[|user|]\n",
    "<vision><|image_pad|></vision>",
    "[|endofturn|]\n",
    "[|assistant|]\n",
    "[|endofturn|]",
    "\n",
    prompt="[|assistant|]\n",
)

# family -> (training template, what it adds to the zoo template's text)
TRAINING: dict[str, tuple[str, str]] = {
    "qwen3_vl_moe": (qwen3_chatml(), ""),
    "qwen3_5": (qwen3_chatml(), ""),
    "qwen3_5_moe": (qwen3_chatml(), ""),
    "qwen4_exp": (qwen3_chatml(), ""),
    "cosmos3_omni": (qwen3_chatml(), ""),
    "cosmos3_edge": (chatml(QWEN_IMAGE), ""),
    "exaone4_5": (EXAONE, ""),
    "llava_onevision1_5": (chatml(QWEN_IMAGE), ""),
    "hyperclovax_vision_v2": (chatml(QWEN_IMAGE), ""),
    "lfm3_vl": (qwen3_chatml(start="<|startoftext|>"), ""),
    "dots3_note": (
        training_template(
            "<|userprompt|>",
            "<|img|><|imgpad|><|endofimg|>",
            "<|endofuserprompt|>",
            "<|response|>",
            "<|endofresponse|>",
            prompt="<|response|>",
        ),
        "",
    ),
    "qwen2_5_omni_thinker": (chatml(zoo_qwen.OMNI_IMAGE), ""),
    "qwen3_omni_moe_thinker": (qwen3_chatml(), ""),
}
# families of the zoo that vanilla TRL does not train, with the reason
NO_SFT: dict[str, str] = {}


def test_every_family_is_classified():
    """Every family of the group is in the zoo or in LEFT, and every zoo family through TRL or in NO_SFT."""
    assert sorted([*zoo_qwen.FAMILIES, *zoo_qwen.LEFT]) == sorted(zoo_qwen.GROUP)
    assert sorted([*TRAINING, *NO_SFT]) == sorted(zoo_qwen.FAMILIES)


@pytest.mark.parametrize("family", zoo_qwen.FAMILIES)
def test_family(family, tmp_path):
    model, processor = zoo_qwen.build(family)
    check_family(family, model, processor, tmp_path)


@pytest.mark.parametrize("family", list(TRAINING))
def test_family_through_vdsfttrainer(family, tmp_path):
    model, processor = zoo_qwen.build(family)
    check_sft_family(family, model, processor, TRAINING[family], tmp_path)
