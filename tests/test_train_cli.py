"""`vdtrain train` end to end on a tiny LLaVA loaded by path: a loadable adapter checkpoint with its projector."""

import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny import write_conversations, write_images

from vdtrain.cli import main


def test_train_cli_writes_loadable_adapter(tmp_path, tiny_llava_dir):
    names = write_images(tmp_path / "images", 6)
    write_conversations(tmp_path / "data.json", names, turns=2, text_only=1)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model_name_or_path: {tiny_llava_dir}\ndata_path: {tmp_path / 'data.json'}\n"
        f"image_folder: {tmp_path / 'images'}\noutput_dir: {tmp_path / 'out'}\n"
        "lora_r: 4\nlora_alpha: 8\nper_device_train_batch_size: 2\nmax_steps: 4\nlogging_steps: 1\n"
        "learning_rate: 1e-3\nvd_projector_lr: 1e-4\nuse_cpu: true\nreport_to: none\nsave_steps: 4\nvd_start: 0.5\n"
    )
    assert main(["train", str(recipe), "--vd_temperature", "1.0", "--disable_tqdm", "true"]) == 0

    out = tmp_path / "out"
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 4 and ["vd_mean" in entry for entry in logged] == [False, False, True, True]
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in key for key in weights)
    assert any("multi_modal_projector" in key for key in weights)  # the projector travels with the adapter
    assert not any("vision_tower" in key for key in weights)

    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    model = PeftModel.from_pretrained(base, out)
    trained = {k: v for k, v in model.state_dict().items() if "multi_modal_projector" in k and "modules_to_save" in k}
    original = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).state_dict()
    changed = [
        k
        for k, v in trained.items()
        if not torch.equal(v, original[k.split("base_model.model.")[-1].replace("modules_to_save.default.", "")])
    ]
    assert changed, "the projector was trained and saved"


def test_train_cli_help_lists_fields():
    result = subprocess.run(
        [sys.executable, "-m", "vdtrain", "train", "--help"], capture_output=True, text=True, check=True
    )
    fields = ("--vd_weighting", "--vd_temperature", "--vd_projector_lr", "--lora_r", "--image_folder", "--deepspeed")
    for field in fields:
        assert field in result.stdout


def test_train_cli_missing_image_stops_before_training(tmp_path, tiny_llava_dir, capsys):
    names = write_images(tmp_path / "images", 2)
    write_conversations(tmp_path / "data.json", names)
    (tmp_path / "images" / names[0]).unlink()
    argv = [
        "train",
        "--model_name_or_path",
        str(tiny_llava_dir),
        "--data_path",
        str(tmp_path / "data.json"),
        "--image_folder",
        str(tmp_path / "images"),
        "--output_dir",
        str(tmp_path / "o"),
        "--use_cpu",
        "true",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "vdtrain train: error: " in err and "1 of 2 images are missing" in err and names[0] in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(FileNotFoundError, match="1 of 2 images are missing"):  # --debug: the exception itself
        main([*argv, "--debug"])


def test_train_cli_bad_recipe_value_names_the_recipe(tmp_path, tiny_llava_dir, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_llava_dir}\ndata_path: d.json\nlearning_rate: fast\n")
    assert main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vdtrain train: error: {recipe}: argument --learning_rate") and "'fast'" in err
    assert len(err.splitlines()) == 1
    assert main(["train", "--model", str(tmp_path / "no" / "such" / "model"), "--data", "d.json"]) == 1
    assert "no such directory; give a model directory or a hub id" in capsys.readouterr().err
    assert main(["train", str(recipe), "stray"]) == 2  # a usage error
    assert "expected --field value, got 'stray'" in capsys.readouterr().err


def test_train_cli_recipe_edge_values(tmp_path, tiny_llava_dir, capsys):
    """A value starting with `-` is a value, a non-text YAML key is one error line, and `--device` means what it
    means for every other command (no silent CPU run for `--device cuda` without a GPU)."""
    from vdtrain.commands.train import load_config, parse_overrides

    base = {"model_name_or_path": str(tiny_llava_dir), "data_path": "d.json", "output_dir": str(tmp_path / "o")}
    _, _, training_args = load_config(None, {**base, "run_name": "-ablation", "adam_beta1": "-5e-1"})
    assert training_args.run_name == "-ablation" and training_args.adam_beta1 == -0.5
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_llava_dir}\n1: 2\n")
    assert main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"vdtrain train: error: {recipe}: field names are text, got 1"
    assert parse_overrides(["--device", "cpu"]) == {"use_cpu": "true"}
    assert parse_overrides(["--device", "auto"]) == {"use_cpu": "false"}
    assert main(["train", "--device", "cuda:1", "--model", str(tiny_llava_dir), "--data", "d.json"]) == 2
    assert "--device cuda:1: train takes cpu, cuda or auto" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", "--device", "cuda", "--model", str(tiny_llava_dir), "--data", "d.json"]) == 1
        assert "--device cuda: no CUDA device is available here; use --device cpu" in capsys.readouterr().err


def test_train_cli_yaml_lists(tmp_path, tiny_llava_dir, capsys):
    """YAML lists go where the field takes several values; a one-item list for a one-value field is that value;
    `report_to: []` means no integrations, as in `TrainingArguments`; a list for a one-value field is named."""
    from vdtrain.commands.train import load_config

    base = {"model_name_or_path": str(tiny_llava_dir), "data_path": "d.json", "output_dir": str(tmp_path / "o")}
    lists = {"report_to": [], "learning_rate": [0.01], "label_names": ["labels", "aux"]}
    _, _, training_args = load_config(None, {**base, **lists})
    assert training_args.report_to == [] and training_args.learning_rate == 0.01
    assert training_args.label_names == ["labels", "aux"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_llava_dir}\ndata_path: d.json\nlearning_rate: [0.01, 0.02]\n")
    assert main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"vdtrain train: error: {recipe}: learning_rate takes one value, got the list [0.01, 0.02]"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lora_r", "0", "lora_r is a LoRA rank of at least 1, got 0"),  # was peft's "`r` should be positive"
        ("lora_dropout", "1", "lora_dropout is a probability in [0, 1), got 1.0"),
        ("max_samples", "-1", "max_samples is a number of samples of at least 1 (or unset), got -1"),
        ("max_length", "0", "max_length is a number of tokens of at least 1, got 0"),
    ],
)
def test_train_cli_out_of_range_fields_are_named_before_loading(field, value, message, tiny_llava_dir):
    from vdtrain.commands.train import load_config
    from vdtrain.errors import InputError

    base = {"model_name_or_path": str(tiny_llava_dir), "data_path": "d.json", "output_dir": "o"}
    with pytest.raises(InputError, match=re.escape(message)):
        load_config(None, {**base, field: value})


def test_train_cli_output_dir_that_is_a_file(tmp_path, tiny_llava_dir, capsys):
    taken = tmp_path / "run"
    taken.write_text("notes\n")
    argv = ["train", "--model", str(tiny_llava_dir), "--data", "d.json", "--output-dir", str(taken), "--device", "cpu"]
    assert main(argv) == 1  # was "[Errno 17] File exists" after the model load
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"error: output_dir {taken} is a file; name a directory for the checkpoints")
    )
