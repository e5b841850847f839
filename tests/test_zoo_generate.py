"""`vdtrain eval generate`'s batched greedy generation (`generate_batch`) on zoo families whose processors or models
batch differently: each answer is the one its prompt gets alone (left padding and batching change nothing).

A survey of every zoo family found four ways a batch failed or changed answers, each fixed at its mechanism:
Gemma-3's and Mllama's processors count images per prompt and refused a flat image list; BLIP's `generate` passes
`pad_token_id` itself; GLM-4.5V's load-balancing loss ran while generating; a Donut-style decoder with learned
positions read a left-padded prompt at shifted positions. GOT-OCR2 is the processor that takes one flat list.
"""

from __future__ import annotations

import importlib

import pytest
from PIL import Image

from vdtrain.evaluation.decoding import DecodingOptions
from vdtrain.evaluation.generate import generate_batch
from vdtrain.models import get_adapter

FAMILIES = [
    "zoo:gemma3",
    "zoo:mllama",
    "zoo_ocr:got_ocr2",
    "zoo_old:blip",
    "zoo_glm:glm4v_moe",
    "zoo_encdec:vision_encoder_decoder",
]
QUESTIONS = ["what color is it?", "describe the picture in a few words please."]


@pytest.mark.parametrize("key", FAMILIES)
def test_each_answer_is_the_one_its_prompt_gets_alone(key):
    check_batch_independence(key)


@pytest.mark.torchvision
def test_a_type_field_the_forward_does_not_name_stays_out_of_generate():
    """vdtrain asks every processor that declares `mm_token_type_ids` for them (Cosmos3-Edge's model needs them);
    MiniMax-M3-VL's forward takes them only through `**kwargs`, and `generate` refuses a keyword it does not name."""
    import zoo_torchvision

    zoo_torchvision.require_torchvision()
    check_batch_independence("zoo_tvb:minimax_m3_vl")


def check_batch_independence(key: str) -> None:
    """Batched greedy answers of the family `module:family` equal each prompt's answer alone."""
    module, family = key.split(":")
    model, processor = importlib.import_module(module).build(family)
    model.eval()
    adapter = get_adapter(model, processor)
    images = [Image.new("RGB", (48, 32), "red"), Image.new("RGB", (32, 56), "blue")]
    options = DecodingOptions(max_new_tokens=3)
    together = generate_batch(model, processor, adapter, QUESTIONS, images, options)
    alone = [generate_batch(model, processor, adapter, [q], [i], options)[0] for q, i in zip(QUESTIONS, images)]
    assert together == alone
    assert any(together) or family == "got_ocr2"  # (its tiny model writes special tokens only)
