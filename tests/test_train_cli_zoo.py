"""Zoo families through `vdtrain train` as a user runs it: the tiny model and processor saved with `save_pretrained`,
loaded back by `vdtrain/models/loading.py`, LLaVA-format data through the `datasets` path, LoRA, the VD loss from
step 0.

The zoo tests drive the in-memory `(model, processor)`; here what a checkpoint folder does not keep (processor
attributes set on the object, kwargs defaults no file changes) and what only the loading and `datasets` paths do
(PEFT's wrapper, the probe of per-token fields) are in play. The families are those this path broke, plus one per
adapter class that worked.
"""

import ast
import importlib
import math

import pytest
import tiny
from safetensors.torch import load_file

from vdtrain.cli import main

FAMILIES = [
    # broke through this path only
    "zoo_qwen:cosmos3_edge",  # the processor returns the `mm_token_type_ids` its model needs only when asked
    "zoo_glm:ernie4_5_vl_moe",  # the test's stand-in video processor could not be saved
    "zoo_ocr:got_ocr2",  # the reloaded processor writes its class default of 256 image tokens
    "zoo_classic:video_llava",  # the image processor returns the deprecated `pixel_values_images`
    "zoo_classic:aria",  # the reloaded processor crops at its class default of 980 px
    "zoo_old:blip",  # PEFT's causal-LM wrapper passes `inputs_embeds=None` on into BLIP's vision tower
    "zoo_old:git",  # no image token: the per-token field probe of the `datasets` path found no image expansion
    "zoo_old:kosmos_2_5",  # the test's tokenizer named its image tokens on the object, not in its files
    "zoo:idefics3",  # LoRA found no target: its language model is `model.text_model` (vdtrain/models/layout.py)
    # the encoder-decoder adapters (LLaVA, Qwen2-VL, PaliGemma, Gemma-3 and Bunny: test_adapters' recipe test)
    "zoo_encdec:t5gemma2",
    "zoo_encdec:pix2struct",
]


@pytest.mark.parametrize("name", FAMILIES)
def test_train_from_saved_checkpoint(name, tmp_path, capsys):
    module, family = name.split(":")
    model, processor = importlib.import_module(module).build(family)
    recipe = tiny.write_training_run(tmp_path, model, processor)
    del model, processor  # what follows sees only the folder

    assert main(["train", str(recipe)]) == 0

    weights = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert any("lora_A" in key for key in weights), sorted(weights)[:8]
    # the logs `Trainer` prints without a progress bar (no checkpoint is saved: a Gemma tokenizer takes seconds)
    printed = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{'loss'")]
    logged = [{key: float(value) for key, value in entry.items()} for entry in printed]
    assert len(logged) == 2 and all(math.isfinite(entry["loss"]) for entry in logged), logged
    assert all("vd_mean" in entry for entry in logged)  # the VD loss ran from the first step
    assert any(entry["vd_mean"] != 0 for entry in logged)  # the noise reached the model's image input


@pytest.mark.parametrize("name, decoding", [("zoo_qwen:cosmos3_edge", "greedy"), ("zoo_classic:video_llava", "vcd")])
def test_generate_from_saved_checkpoint(name, decoding, tmp_path):
    """Answers from the reloaded checkpoint, as `vdtrain eval` decodes them: Cosmos3-Edge's model refuses image inputs
    without `mm_token_type_ids`; VCD noises Video-LLaVA's `pixel_values` (its processor names them otherwise)."""
    from PIL import Image

    from vdtrain.evaluation.decoding import DecodingOptions
    from vdtrain.evaluation.generate import generate_batch
    from vdtrain.models.loading import load_model_and_processor

    module, family = name.split(":")
    model, processor = importlib.import_module(module).build(family)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model, processor, adapter = load_model_and_processor(tmp_path)
    images = [Image.new("RGB", (48, 32), "red"), Image.new("RGB", (32, 48), "blue")]
    options = DecodingOptions(decoding=decoding, max_new_tokens=2)
    answers = generate_batch(model.eval(), processor, adapter, ["What is it?", "And this?"], images, options)
    assert len(answers) == 2 and all(isinstance(answer, str) for answer in answers)
