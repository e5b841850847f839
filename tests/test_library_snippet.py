"""The README's library snippet, run as written on a tiny LLaVA: it trains the recipe (LoRA on the language model, the
projector fully, the vision tower frozen) with images reaching the model, and its save is a folder every command
loads (`vdtrain eval generate --model`, `vdtrain merge`), from any working directory."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
from tiny import write_conversations, write_images

from vdtrain.cli import main as cli_main
from vdtrain.training.checkpoints import write_manifest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    """The python block of README's "2. Library" section."""
    section = README.read_text().split("**2. Library**", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def snippet_run(tiny_llava_dir, tmp_path_factory) -> dict:
    """Run the snippet with the tiny model and data, a forward hook recording which inputs reach the model."""
    tmp = tmp_path_factory.mktemp("snippet")
    write_conversations(tmp / "data.json", write_images(tmp / "images", 8))
    code = _snippet()
    for old, new in [
        ('"llava-hf/llava-1.5-7b-hf", dtype="bfloat16"', f'"{tiny_llava_dir}", lora_r=8, lora_alpha=16'),
        ('"detail_23k.json"', f'"{tmp / "data.json"}"'),
        ('"coco/train2017"', f'"{tmp / "images"}"'),
        ("num_proc=8", "num_proc=1"),
        ('output_dir="out"', f'output_dir="{tmp / "out"}"'),
        ("vd_start=0.5", "vd_start=0.0"),
        ("bf16=True", 'use_cpu=True, max_steps=2, per_device_train_batch_size=2, report_to="none", logging_steps=1'),
    ]:
        assert code.count(old) == 1, old  # the README still says this
        code = code.replace(old, new)
    setup, rest = code.split("trainer.train()", 1)
    scope: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(setup, scope)
    seen: list[set[str]] = []
    scope["model"].register_forward_pre_hook(
        lambda module, args, kwargs: seen.append({k for k, v in kwargs.items() if v is not None}), with_kwargs=True
    )
    exec("trainer.train()" + rest, scope)
    return {"scope": scope, "seen": seen, "out": tmp / "out", "data": tmp, "warnings": caught}


def test_snippet_trains_the_recipe_lora_with_a_frozen_tower(snippet_run):
    model = snippet_run["scope"]["model"]
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or "multi_modal_projector" in name for name in trainable)
    assert any("lora_" in name for name in trainable) and any("multi_modal_projector" in name for name in trainable)
    assert not any(p.requires_grad for name, p in model.named_parameters() if "vision_tower" in name)


def test_loading_for_training_warns_nothing(snippet_run):
    """No deprecation warning the user cannot act on (PEFT's read of `is_gradient_checkpointing` on every wrap)."""
    assert [str(w.message) for w in snippet_run["warnings"] if issubclass(w.category, FutureWarning)] == []


def test_snippet_images_reach_the_model_and_the_loss_is_reweighted(snippet_run):
    assert snippet_run["seen"] and all("pixel_values" in keys for keys in snippet_run["seen"])
    logged = [e for e in snippet_run["scope"]["trainer"].state.log_history if "vd_mean" in e]
    assert len(logged) == 2 and all(e["vd_mean"] != 0 for e in logged)
    assert all(e["vd_frac_inv"] < 1 or e["vd_weight_max"] > 1 for e in logged)


def test_snippet_save_holds_adapter_projector_and_processor(snippet_run):
    out = snippet_run["out"]
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert {"processor_config.json", "tokenizer_config.json"} & names  # processing_class was saved
    from safetensors.torch import load_file

    assert any("multi_modal_projector" in key for key in load_file(out / "adapter_model.safetensors"))


def test_eval_generate_reads_the_snippet_folder_and_stops_early_when_done(snippet_run, tmp_path, monkeypatch, capsys):
    import shutil

    data, model = snippet_run["data"], tmp_path / "model"
    shutil.copytree(snippet_run["out"], model)
    questions = tmp_path / "q.jsonl"
    rows = [{"question_id": k, "image": f"img_00{k}.png", "text": "Describe this image."} for k in range(2)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)  # another working directory than the one it was trained from
    argv = ["eval", "generate", "--model", str(model), "--questions", str(questions)]
    argv += ["--image-folder", str(data / "images"), "--output", "answers.jsonl", "--max-new-tokens", "3"]
    assert cli_main(argv) == 0
    answered = [json.loads(line)["question_id"] for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert answered == [0, 1] and "2 new answers (2 questions)" in capsys.readouterr().out
    (model / "adapter_model.safetensors").unlink()  # the model can no longer load: nothing left must not load it
    assert cli_main(argv) == 0
    assert "0 new answers (2 questions, all answered in answers.jsonl already)" in capsys.readouterr().out


def test_merge_reads_a_relative_base_against_the_adapter_folder(tiny_llava_dir, snippet_run, tmp_path, monkeypatch):
    """An older `vdtrain_base_model.txt` holding a path relative to the adapter folder; merged from elsewhere."""
    import shutil

    adapter = tmp_path / "runs" / "x"
    shutil.copytree(snippet_run["out"], adapter)
    shutil.copytree(tiny_llava_dir, tmp_path / "base")
    (adapter / "vdtrain_base_model.txt").write_text("../../base\n")
    write_manifest(adapter, recursive=False)  # as `vdtrain train` marks its final save
    monkeypatch.chdir(snippet_run["data"])
    assert cli_main(["merge", "--adapter", str(adapter), "--output", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file()


def test_a_base_that_cannot_be_loaded_names_the_file_it_came_from(snippet_run, tmp_path, capsys):
    import shutil

    adapter = tmp_path / "x"
    shutil.copytree(snippet_run["out"], adapter)
    (adapter / "vdtrain_base_model.txt").write_text("gone/base-model\n")
    write_manifest(adapter, recursive=False)
    assert cli_main(["merge", "--adapter", str(adapter), "--output", str(tmp_path / "merged")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("vdtrain merge: error: base model gone/base-model (named in ")
    assert f"{adapter / 'vdtrain_base_model.txt'}) could not be loaded" in error


def test_train_writes_an_absolute_base_path(tmp_path, monkeypatch):
    from vdtrain.models.merge import base_model_text

    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    assert base_model_text("base") == str(tmp_path.resolve() / "base")
    assert base_model_text("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"
