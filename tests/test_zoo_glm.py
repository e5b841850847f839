"""The model zoo's GLM-style families and their neighbours (tests/zoo_glm.py), under exactly the assertions of
tests/test_zoo.py (`check_family`) and, where vanilla TRL `SFTTrainer` trains the family, of tests/test_zoo_sft.py
(`check_sft_family`, with the zoo template's `{% generation %}` training twin)."""

from __future__ import annotations

import pytest
import zoo_glm
from test_zoo import check_family
from test_zoo_sft import EOS, chatml, check_sft_family, training_template


@pytest.mark.parametrize("family", zoo_glm.FAMILIES)
def test_family(family, tmp_path):
    model, processor = zoo_glm.build(family)
    check_family(family, model, processor, tmp_path)


GLM_IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"
# GLM-4.5V / 4.6V's template closes an answer with nothing: the twin adds the EOS TRL's stop-token check asks for
GLM45 = (
    training_template(
        "<|user|>\n",
        GLM_IMAGE,
        "",
        "<|assistant|>\n<think></think>\n",
        EOS,
        start="[gMASK]<sop>",
        prompt="<|assistant|>\n",
    ),
    "<|endoftext|>",
)
HY_USER, HY_ASSISTANT = "<｜hy_User｜>", "<｜hy_Assistant｜>"
HUNYUAN = training_template(
    HY_USER, "".join(zoo_glm.HY_IMAGE), "", HY_ASSISTANT, zoo_glm.HY_EOS, start="{{ bos_token }}", prompt=HY_ASSISTANT
)
HY4_IMAGE = zoo_glm.HY_IMAGE[0] + "<|image_pad|>" + zoo_glm.HY_IMAGE[2]
ERNIE_IMAGE = "{% set ns.pictures = ns.pictures + 1 %}Picture {{ ns.pictures }}:" + "".join(
    zoo_glm.ERNIE_NAMED[key] for key in ("image_start_token", "image_token", "image_end_token")
)
ERNIE = training_template(
    "User: ",
    ERNIE_IMAGE,
    "{{ '\\n' }}",
    "Assistant: ",
    "<|end_of_sentence|>",
    start="{{ bos_token }}{% set ns = namespace(pictures=0) %}",
    prompt="Assistant: ",
)
PADDLE = ERNIE.replace("Picture {{ ns.pictures }}:", "")
# family -> (training template, what it adds to the zoo template's text)
TRAINING = {
    "glm46v": GLM45,
    "glm4v_moe": GLM45,
    "glmga": GLM45,
    "glm_ocr": GLM45,
    "glm5_next": GLM45,
    "hunyuan_vl": (HUNYUAN, ""),
    "ernie4_5_vl_moe": (ERNIE, ""),
    "paddleocr_vl": (PADDLE, ""),
    "video_llama_3": (chatml("<|image_pad|>\n"), ""),
    "hy_v4_vl": (HUNYUAN.replace("".join(zoo_glm.HY_IMAGE), HY4_IMAGE), ""),
}
NOT_TRL: dict[str, str] = {}  # family -> why vanilla SFTTrainer does not train it
# TRL (1.16) computes the load-balancing loss from `text_config.num_experts`, which these configs do not have
# (`n_routed_experts`): SFTTrainer trains them only with the auxiliary loss off
NO_AUX_LOSS_IN_TRL = {"glm4v_moe", "glm5_next"}
# the model types this module answers for (issue 22's split): each is in the zoo or in LEFT with the reason
ASSIGNED = (
    "glm46v glm4v_moe glm5_next glmga glm_ocr hunyuan_vl hy_v4_vl ernie4_5_vl_moe paddleocr_vl video_llama_3 mistral4"
)


def test_every_family_is_classified():
    """Each family of the module is trained through TRL or listed with the reason it is not; none is both."""
    assert sorted([*TRAINING, *NOT_TRL]) == sorted(zoo_glm.FAMILIES)
    assert not set(zoo_glm.FAMILIES) & set(zoo_glm.LEFT)
    assert sorted([*zoo_glm.FAMILIES, *zoo_glm.LEFT]) == sorted(ASSIGNED.split())


# the cheapest two (one with TRL's load-balancing loss on) are the default; the rest is marked slow, as in
# tests/test_zoo_sft.py
DEFAULT = ("ernie4_5_vl_moe", "paddleocr_vl")


def family_param(family: str):
    return family if family in DEFAULT else pytest.param(family, marks=pytest.mark.slow)


@pytest.mark.parametrize("family", [family_param(family) for family in TRAINING])
def test_family_through_vdsfttrainer(family, tmp_path):
    model, processor = zoo_glm.build(family)
    if family in NO_AUX_LOSS_IN_TRL:
        model.config.get_text_config().router_aux_loss_coef = 0.0  # as `SFTConfig(router_aux_loss_coef=0.0)`
    check_sft_family(family, model, processor, TRAINING[family], tmp_path)
