"""Zoo group `tva` (tests/zoo_tva.py): families new in transformers 5.25 whose image processors need torchvision,
under exactly the assertions of tests/test_zoo.py (`check_family`) and, through TRL, of tests/test_zoo_sft.py
(`check_sft_family`, with each chat template's `{% generation %}` twin). Marked `torchvision`:
scripts/ci_torchvision.sh runs them.
"""

from __future__ import annotations

import pytest
import zoo_torchvision
import zoo_tva
from test_zoo import check_family
from test_zoo_sft import check_sft_family, training_template

pytestmark = pytest.mark.torchvision

GROUP = ["apertus1p5", "gemma4_unified", "inkling2", "inkling2_loop", "inkling_mm_model", "muse_glimmer", "muse_spark"]

APERTUS_START = (
    "{{ bos_token }}<|system_start|>You are Apertus, a helpful assistant.<|system_end|>"
    "<|developer_start|>Deliberation: disabled\nTool Capabilities: disabled<|developer_end|>"
)
GEMMA_MODEL = "<start_of_turn>model\n"
INKLING_ASSISTANT = "<|start|>assistant<|message|>"
MUSE_HEADER = "<|header_start|>{}<|header_end|>\n\n"


def inkling(image: str) -> str:
    return training_template(
        "<|start|>user<|message|>", image, "<|end|>", INKLING_ASSISTANT, "<|end|>", prompt=INKLING_ASSISTANT
    )


MUSE = training_template(
    MUSE_HEADER.format("user"),
    "<|patch|>",
    "<|eot|>",
    MUSE_HEADER.format("assistant"),
    "<|eot|>",
    start="{{ bos_token }}",
    prompt=MUSE_HEADER.format("assistant"),
)
# family -> (training twin of the zoo's chat template, what it adds to the rendered text): every template of the group
# closes an answer with its own end-of-turn token, so the twins add nothing
TRAINING = {
    "apertus1p5": (
        training_template(
            "<|user_start|>",
            "<|image|>",
            "<|user_end|>",
            "<|assistant_start|>",
            "<|assistant_end|>",
            start=APERTUS_START,
            prompt="<|assistant_start|>",
        ),
        "",
    ),
    "gemma4_unified": (
        training_template(
            "<start_of_turn>user\n",
            "<image_soft_token>",
            "<end_of_turn>\n",
            GEMMA_MODEL,
            "<end_of_turn>",
            "\n",
            start="{{ bos_token }}",
            prompt=GEMMA_MODEL,
        ),
        "",
    ),
    "inkling2": (inkling("<|image|>"), ""),
    "inkling2_loop": (inkling("<|image|>"), ""),
    "inkling_mm_model": (inkling("<|content_image|><|image|>"), ""),
    "muse_glimmer": (MUSE, ""),
    "muse_spark": (MUSE, ""),
}


def test_every_family_is_classified():
    """Every family of the group is in the zoo or left out with a reason, never both; every zoo family has a TRL
    training template."""
    assert sorted([*zoo_tva.FAMILIES, *zoo_tva.LEFT]) == sorted(GROUP)
    assert all(reason for reason in zoo_tva.LEFT.values())
    assert sorted(TRAINING) == sorted(zoo_tva.FAMILIES)


@pytest.mark.parametrize("family", zoo_tva.FAMILIES)
def test_family(family, tmp_path):
    zoo_torchvision.require_torchvision()
    model, processor = zoo_tva.build(family)
    check_family(family, model, processor, tmp_path)


@pytest.mark.parametrize("family", zoo_tva.FAMILIES)
def test_family_through_vdsfttrainer(family, tmp_path):
    zoo_torchvision.require_torchvision()
    model, processor = zoo_tva.build(family)
    check_sft_family(family, model, processor, TRAINING[family], tmp_path)
