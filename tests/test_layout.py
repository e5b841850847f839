"""`vdtrain.models.layout`: the language model's linear layers (LoRA), the projector (`train_projector`) and the vision
side (`freeze_vision_tower`) read from a model's module tree, for families whose parts transformers names apart
(`text_model`, `connector`, `aligner`, `visual.merger`, `qformer`, `vqmodel`). With the old fixed fragments,
`vdtrain train` found no LoRA target on Idefics2/3, Chameleon, Emu3, IDEFICS, Kosmos-2 and Granite-Docling, put
LoRA on fused MoE expert weights (GLM-4.5V, Qwen3-Omni: PEFT refuses them with dropout), and left the projector of
46 of 73 zoo families silently frozen."""

from __future__ import annotations

import pytest
import torch
import zoo
import zoo_classic
import zoo_old
import zoo_qwen

from vdtrain.models import get_adapter
from vdtrain.models.arguments import ModelArguments
from vdtrain.models.layout import read_layout
from vdtrain.models.loading import prepare_for_training

MODULES = {"zoo": zoo, "zoo_old": zoo_old, "zoo_classic": zoo_classic, "zoo_qwen": zoo_qwen}
# family -> (language model, projector parts, vision parts) as the families' modeling code names them
EXPECTED = {
    "zoo:llava": ("model.language_model", ("model.multi_modal_projector",), ("model.vision_tower",)),
    "zoo:idefics3": ("model.text_model", ("model.connector",), ("model.vision_model",)),
    "zoo:qwen3_vl": (  # DeepStack's mergers feed the tower's middle layers to the language model's first layers
        "model.language_model",
        ("model.visual.merger", "model.visual.deepstack_merger_list"),
        ("model.visual",),
    ),
    "zoo:blip_2": ("language_model", ("qformer", "language_projection"), ("vision_model",)),
    "zoo:chameleon": ("model", (), ("model.vqmodel",)),  # VQ image tokens: no projector
    "zoo:janus": ("model.language_model", ("model.aligner",), ("model.vision_model", "model.vqmodel")),
    "zoo_old:git": ("git", ("git.visual_projection",), ("git.image_encoder",)),
    "zoo_classic:emu3": ("model.text_model", (), ("model.vqmodel",)),
    "zoo_qwen:hyperclovax_vision_v2": (  # a Qwen2.5-VL tower, its merger, then a projector
        "model.language_model",
        ("model.vision_model.merger", "model.projector"),
        ("model.vision_model",),
    ),
}


def build(key: str):
    module, family = key.split(":")
    return MODULES[module].build(family)


@pytest.mark.parametrize("key", EXPECTED)
def test_the_parts_of_each_family(key):
    model, _ = build(key)
    layout = read_layout(model)
    language_model, projector, vision = EXPECTED[key]
    assert (layout.language_model, layout.projector, layout.vision) == (language_model, projector, vision)
    modules = dict(model.named_modules())
    head = model.get_output_embeddings()
    assert layout.lora_targets and all(isinstance(modules[name], torch.nn.Linear) for name in layout.lora_targets)
    assert all(name.startswith(language_model + ".") for name in layout.lora_targets)
    assert all(modules[name] is not head for name in layout.lora_targets)
    assert not [name for name in layout.lora_targets if any(name.startswith(p + ".") for p in projector + vision)]
    # every attention and MLP projection of every decoder layer, and nothing else of the language model
    text = model.get_decoder()
    linears = [n for n, m in text.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"]
    assert len([n for n in linears if "vqmodel" not in n]) == len(layout.lora_targets)


@pytest.mark.parametrize("family", ["glm4v_moe", "qwen3_omni_moe_thinker"])
def test_lora_on_a_mixture_of_experts_model_is_on_attention(family):
    """transformers keeps an MoE layer's experts as 3-D parameters, and PEFT re-maps MLP target names onto them
    (wrapped as `ParamWrapper`, which refuses the recipe's `lora_dropout`), so LoRA goes to attention only; routers
    are never targets. `prepare_for_training` then wraps the model with the recipe's defaults."""
    import zoo_glm

    model, processor = (zoo_glm if family == "glm4v_moe" else zoo_qwen).build(family)
    targets = read_layout(model).lora_targets
    leaves = {name.rsplit(".", 1)[-1] for name in targets}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert any(param.dim() == 3 for name, param in model.named_parameters() if "experts" in name)
    arguments = ModelArguments(model_name_or_path="tiny")
    assert arguments.lora_dropout > 0
    model = prepare_for_training(model, get_adapter(model, processor), arguments, gradient_checkpointing=False)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_an_adapter_that_names_its_parts_keeps_them():
    """Names an adapter sets win (Qwen2-VL's tower without its merger); None is read from the model."""
    model, processor = zoo.build("qwen2_vl")
    adapter = get_adapter(model, processor)
    assert adapter.projector_modules == ("visual.merger",)
    assert adapter.vision_modules == ("visual.patch_embed", "visual.blocks")
    assert adapter.lora_target_modules == read_layout(model).lora_targets


def test_full_fine_tuning_freezes_the_tower_and_trains_the_projector_inside_it():
    """Without LoRA, `freeze_vision_tower` freezes `model.visual` but not `model.visual.merger`, the projector that
    `train_projector` trains (Qwen3-VL keeps its merger inside the vision module)."""
    model, processor = zoo.build("qwen3_vl")
    adapter = get_adapter(model, processor)
    prepare_for_training(
        model, adapter, ModelArguments(model_name_or_path="tiny", lora=False), gradient_checkpointing=False
    )
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    mergers = ("model.visual.merger.", "model.visual.deepstack_merger_list.")
    assert any(name.startswith(mergers) for name in trainable)
    assert not any(name.startswith("model.visual.") and not name.startswith(mergers) for name in trainable)
    assert any(name.startswith("model.language_model.") for name in trainable)


def test_lora_wraps_the_language_model_and_saves_every_projector_part():
    """With LoRA (the recipe's default), PEFT gets the language model's linears and a full copy of each projector
    part, a module list (Qwen3-VL's DeepStack mergers) item by item (PEFT refused the list itself)."""
    model, processor = zoo.build("qwen3_vl")
    adapter = get_adapter(model, processor)
    model = prepare_for_training(
        model, adapter, ModelArguments(model_name_or_path="tiny"), gradient_checkpointing=False
    )
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert any("deepstack_merger_list.0.modules_to_save" in name for name in trainable)
    assert any("visual.merger.modules_to_save" in name for name in trainable)
    assert any("language_model" in name and "lora_A" in name for name in trainable)
    assert not [name for name in trainable if "visual.blocks" in name or "lm_head" in name]
