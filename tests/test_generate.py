"""Generation runner and protocol: batching with left padding, resumption, LoRA loading, CLI end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny import tiny_llava, write_images

from vdtrain.cli import main as cli
from vdtrain.evaluation.generate import DecodingOptions, generate_answers
from vdtrain.evaluation.questions import coco_image_id, load_questions, read_answers, resolve_image
from vdtrain.models import get_adapter
from vdtrain.models.loading import load_for_inference

QUESTIONS = [
    "Is there a cat in the image?",
    "Is there a dog?",
    "Is there a red cat on the blue mat next to the tree in this picture?",
    "What color?",
    "Are there two apples in a box in the image, and is it red?",
]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    model, processor = tiny_llava()
    return model, processor, get_adapter(model, processor)


@pytest.fixture
def pope_files(tmp_path):
    """A POPE-format question file on 5 PNGs, the questions of different lengths (so batches are left-padded)."""
    names = write_images(tmp_path / "images", 5)
    records = [
        {"question_id": index + 1, "image": name, "text": text, "label": "yes" if index % 2 else "no"}
        for index, (name, text) in enumerate(zip(names, QUESTIONS))
    ]
    path = tmp_path / "pope.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path, tmp_path / "images"


def _run(tiny, questions, folder, output, **kwargs):
    model, processor, adapter = tiny
    options = kwargs.pop("options", DecodingOptions(max_new_tokens=6))
    return generate_answers(
        model,
        processor,
        questions,
        output,
        image_folder=folder,
        fmt="pope",
        options=options,
        adapter=adapter,
        progress=False,
        **kwargs,
    )


def test_batch_sizes_agree(tiny, pope_files, tmp_path):
    path, folder = pope_files
    questions, fmt = load_questions(path)
    assert fmt == "pope"
    lengths = {len(tiny[1].tokenizer(q["text"]).input_ids) for q in questions}
    assert len(lengths) > 1  # prompts differ in length, so batch size 4 pads on the left
    _run(tiny, questions, folder, tmp_path / "b1.jsonl", batch_size=1)
    _run(tiny, questions, folder, tmp_path / "b4.jsonl", batch_size=4)
    one, four = read_answers(tmp_path / "b1.jsonl"), read_answers(tmp_path / "b4.jsonl")
    assert [a["question_id"] for a in one] == [1, 2, 3, 4, 5]
    assert [a["text"] for a in one] == [a["text"] for a in four]
    assert all(a["answer"] == a["text"] and a["text"] == a["text"].strip() for a in one)


def test_resume_after_interruption(tiny, pope_files, tmp_path):
    path, folder = pope_files
    questions, _ = load_questions(path)
    full = tmp_path / "full.jsonl"
    assert _run(tiny, questions, folder, full, batch_size=2) == 5
    partial = tmp_path / "partial.jsonl"
    assert _run(tiny, questions, folder, partial, batch_size=2, stop_after=1) == 2
    with open(partial, "a") as handle:  # killed while writing the next record
        handle.write('{"question_id": 3, "image": "img_0')
    assert len(read_answers(partial)) == 2
    assert partial.read_text().endswith("}\n")  # the broken record is cut off
    assert _run(tiny, questions, folder, partial, batch_size=2) == 3
    assert _run(tiny, questions, folder, partial, batch_size=2) == 0  # complete: nothing to do
    assert partial.read_text() == full.read_text()


def test_resume_refuses_other_settings_and_foreign_answers(tiny, pope_files, tmp_path):
    path, folder = pope_files
    questions, _ = load_questions(path)
    output = tmp_path / "answers.jsonl"
    _run(tiny, questions[:2], folder, output, batch_size=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        _run(tiny, questions, folder, output, options=DecodingOptions(max_new_tokens=7))
    with pytest.raises(ValueError, match="not among the questions"):
        _run(tiny, questions[2:], folder, output)
    assert _run(tiny, questions, folder, output, options=DecodingOptions(max_new_tokens=7), overwrite=True) == 5


def test_missing_image_named_before_generation(tiny, pope_files, tmp_path):
    path, folder = pope_files
    questions, _ = load_questions(path)
    (folder / "img_003.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 5 images are missing.*4 \\(img_003.png\\)"):
        _run(tiny, questions, folder, tmp_path / "a.jsonl")
    assert not (tmp_path / "a.jsonl").exists() or not read_answers(tmp_path / "a.jsonl")


def test_question_formats(tmp_path):
    assert coco_image_id("COCO_val2014_000000012345.jpg") == 12345
    assert coco_image_id("000000002239.jpg") == 2239
    assert coco_image_id("img_001.png") is None
    chair, fmt = load_questions(Path(__file__).parents[1] / "eval" / "chair-500.jsonl")
    assert fmt == "chair" and len(chair) == 500 and chair[0]["text"] == "Please describe this image in detail."
    names = write_images(tmp_path / "imgs", 3)
    images, fmt = load_questions(tmp_path / "imgs", prompt="Describe.")
    assert fmt == "images" and [q["question_id"] for q in images] == names and images[0]["text"] == "Describe."
    (tmp_path / "list.txt").write_text("img_001.png\nimg_002.png\n")
    assert len(load_questions(tmp_path / "list.txt", prompt="Describe.")[0]) == 2
    with pytest.raises(ValueError, match="no 'text'; pass --prompt"):
        load_questions(tmp_path / "imgs")
    (tmp_path / "dup.jsonl").write_text('{"question_id": 1, "image": "a.jpg", "text": "q"}\n' * 2)
    with pytest.raises(ValueError, match="appears twice"):
        load_questions(tmp_path / "dup.jsonl")
    Image.new("RGB", (8, 8)).save(tmp_path / "COCO_val2014_000000000042.jpg")
    assert resolve_image(tmp_path, "000000000042.jpg").name == "COCO_val2014_000000000042.jpg"


def test_lora_adapter_loads_unmerged_and_generates(tiny_llava_dir, pope_files, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    path, folder = pope_files
    questions, _ = load_questions(path)
    base, processor, adapter = load_for_inference(str(tiny_llava_dir), dtype="float32")
    config = LoraConfig(r=4, target_modules=adapter.lora_target_modules, init_lora_weights=False)
    torch.manual_seed(0)
    get_peft_model(tiny_llava()[0], config).save_pretrained(tmp_path / "adapter")
    model, processor, adapter = load_for_inference(str(tiny_llava_dir), str(tmp_path / "adapter"), dtype="float32")
    assert isinstance(model, PeftModel)
    assert any("lora_A" in name for name, _ in model.named_modules())  # not merged away
    options = DecodingOptions(max_new_tokens=6)
    kwargs = {"image_folder": folder, "fmt": "pope", "options": options, "progress": False, "batch_size": 5}
    generate_answers(model, processor, questions, tmp_path / "lora.jsonl", **kwargs)
    generate_answers(base, processor, questions, tmp_path / "base.jsonl", **kwargs)
    lora = [a["text"] for a in read_answers(tmp_path / "lora.jsonl")]
    assert len(lora) == 5 and lora != [a["text"] for a in read_answers(tmp_path / "base.jsonl")]


def test_cli_pope_and_chair_formats(tiny_llava_dir, pope_files, tmp_path, capsys):
    path, folder = pope_files
    output = tmp_path / "pope-answers.jsonl"
    argv = [
        "eval",
        "generate",
        "--model",
        str(tiny_llava_dir),
        "--questions",
        str(path),
        "--image-folder",
        str(folder),
    ]
    argv += ["--output", str(output), "--max-new-tokens", "4", "--batch-size", "3", "--no-progress"]
    assert cli([*argv, "--prompt-suffix", "\nAnswer the question using a single word or phrase."]) == 0
    answers = read_answers(output)
    assert [a["question_id"] for a in answers] == [1, 2, 3, 4, 5]
    assert answers[0]["prompt"] == QUESTIONS[0] + "\nAnswer the question using a single word or phrase."
    assert set(answers[0]) == {"question_id", "image", "prompt", "text", "answer"}

    coco = tmp_path / "val2014"
    coco.mkdir()
    for index, name in enumerate(write_images(tmp_path / "png", 3)):
        Image.open(tmp_path / "png" / name).convert("RGB").save(coco / f"COCO_val2014_{index + 1:012d}.jpg")
    chair = tmp_path / "chair.jsonl"
    chair.write_text(
        "".join(json.dumps({"question_id": i, "image": f"{i + 1:012d}.jpg", "text": "x"}) + "\n" for i in range(3))
    )
    output = tmp_path / "captions.jsonl"
    argv = ["eval", "generate", "--model", str(tiny_llava_dir), "--questions", str(chair), "--image-folder", str(coco)]
    argv += ["--output", str(output), "--prompt", "Please describe this image in detail.", "--max-new-tokens", "5"]
    assert cli([*argv, "--decoding", "vcd", "--vcd-noise-step", "900", "--no-progress"]) == 0
    captions = read_answers(output)
    assert [c["image_id"] for c in captions] == [1, 2, 3]
    assert all(c["caption"] == c["text"] and c["prompt"] == "Please describe this image in detail." for c in captions)
    assert cli([*argv, "--no-progress"]) == 1  # greedy into a VCD answers file: refused
    assert "decoding: 'vcd' -> 'greedy'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- protocol


def test_protocol_configs():
    from vdtrain.evaluation.protocol import load_protocol

    root = Path(__file__).parents[1] / "eval"
    chair = load_protocol(root / "chair-coco500.yaml")
    assert chair["prompt"] == "Please describe this image in detail."
    assert chair["decoding"] == {"decoding": "greedy", "max_new_tokens": 512, "do_sample": False, "num_beams": 1}
    assert len(load_questions(chair["splits"]["chair"])[0]) == 500
    pope = load_protocol(root / "pope-coco.yaml")
    assert pope["prompt_suffix"] == "\nAnswer the question using a single word or phrase."
    assert list(pope["splits"]) == ["random", "popular", "adversarial"]
    for split in pope["splits"].values():
        questions, fmt = load_questions(split)
        assert fmt == "pope" and len(questions) == 3000


def test_protocol_rejects_bad_configs(tmp_path):
    from vdtrain.evaluation.protocol import load_protocol

    (tmp_path / "a.yaml").write_text("benchmark: pope\nsplits: {random: q.json}\nmax_tokens: 3\n")
    with pytest.raises(ValueError, match="unknown keys \\['max_tokens'\\]"):
        load_protocol(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("benchmark: pope\nsplits: {random: q.json}\ndecoding: {beams: 2}\n")
    with pytest.raises(ValueError, match="b.yaml: decoding: .*beams"):
        load_protocol(tmp_path / "b.yaml")
    # values of the wrong type or range: named with the config (were a TypeError traceback mid-generation, or
    # batch_size: 0 silently read as 8)
    for name, text, message in [
        ("c", "batch_size: 0", "c.yaml: batch_size must be a whole number of at least 1, got 0"),
        ("d", "batch_size: abc", "d.yaml: batch_size must be a whole number of at least 1, got 'abc'"),
        ("e", "decoding: {max_new_tokens: abc}", "e.yaml: decoding: max_new_tokens must be an integer, got 'abc'"),
        ("f", "decoding: {max_new_tokens: 0}", "f.yaml: decoding: max_new_tokens must be at least 1, got 0"),
        ("g", "decoding: {do_sample: 'yes'}", "g.yaml: decoding: do_sample must be true or false, got 'yes'"),
    ]:
        (tmp_path / f"{name}.yaml").write_text(f"benchmark: pope\nsplits: {{random: q.json}}\n{text}\n")
        with pytest.raises(ValueError, match=re.escape(message)):
            load_protocol(tmp_path / f"{name}.yaml")
    (tmp_path / "h.yaml").write_text("benchmark: pope\nsplits: {random: q.json}\ndecoding: {temperature: 1}\n")
    assert load_protocol(tmp_path / "h.yaml")["decoding"] == {"temperature": 1}  # an int where a float goes


def test_run_pope_protocol(tiny_llava_dir, pope_files, tmp_path, capsys):
    path, folder = pope_files
    (tmp_path / "coco_pope_popular.json").write_text(path.read_text())
    config = tmp_path / "pope.yaml"
    config.write_text(
        "benchmark: pope\nsplits:\n  random: pope.json\n  popular: coco_pope_popular.json\n"
        'prompt_suffix: "\\nAnswer the question using a single word or phrase."\nbatch_size: 2\n'
        "decoding: {decoding: greedy, max_new_tokens: 16}\n"
    )
    out = tmp_path / "out"
    argv = ["eval", "run", str(config), "--image-folder", str(folder), "--output-dir", str(out), "--no-progress"]
    assert cli([*argv, "--model", str(tiny_llava_dir), "--max-new-tokens", "3", "--limit", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decoding"]["max_new_tokens"] == 3 and summary["limit"] == 4
    assert set(summary["metrics"]) == {"random", "popular", "average"}
    random = summary["metrics"]["random"]
    assert random["TP"] + random["FP"] + random["TN"] + random["FN"] == 4
    assert summary["metrics"]["average"]["accuracy"] == pytest.approx(
        (random["accuracy"] + summary["metrics"]["popular"]["accuracy"]) / 2
    )
    assert json.loads((out / "pope.json").read_text())["average"] == summary["metrics"]["average"]
    assert "random: acc" in capsys.readouterr().out
    # everything answered: scoring again needs no model at all
    assert cli([*argv, "--model", str(tmp_path / "no-such-model"), "--max-new-tokens", "3", "--limit", "4"]) == 0
    assert len(read_answers(out / "answers" / "pope.jsonl")) == 4


def _coco(directory: Path) -> None:
    """COCO-format annotations for images 1-3: a dog in 1, a cat in 2, nothing in 3."""
    directory.mkdir()
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2, 3)]
    categories = [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}]
    instances = [{"id": 1, "image_id": 1, "category_id": 18}, {"id": 2, "image_id": 2, "category_id": 17}]
    captions = [{"id": i, "image_id": i, "caption": "A photo."} for i in (1, 2, 3)]
    (directory / "instances_val2014.json").write_text(
        json.dumps({"images": images, "categories": categories, "annotations": instances})
    )
    (directory / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": captions}))


def test_run_chair_protocol(tmp_path, capsys):
    model, processor = tiny_llava()
    dog, cat = processor.tokenizer.convert_tokens_to_ids(["Ġdog", "Ġcat"])
    with torch.no_grad():  # a captioner that only says " dog" or " cat" (the sign of one hidden unit decides)
        model.lm_head.weight.zero_()
        model.lm_head.weight[dog, 0], model.lm_head.weight[cat, 0] = 10.0, -10.0
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    folder = tmp_path / "val2014"
    for index, name in enumerate(write_images(tmp_path / "png", 3)):
        folder.mkdir(exist_ok=True)
        Image.open(tmp_path / "png" / name).convert("RGB").save(folder / f"COCO_val2014_{index + 1:012d}.jpg")
    _coco(tmp_path / "annotations")
    (tmp_path / "list.jsonl").write_text(
        "".join(json.dumps({"question_id": i, "image": f"{i:012d}.jpg", "text": "x"}) + "\n" for i in (1, 2, 3))
    )
    config = tmp_path / "chair.yaml"
    config.write_text(
        'benchmark: chair\nquestions: list.jsonl\nprompt: "Please describe this image in detail."\n'
        "decoding: {max_new_tokens: 512}\n"
    )
    out = tmp_path / "out"
    argv = ["eval", "run", str(config), "--model", str(tmp_path / "model"), "--image-folder", str(folder)]
    argv += ["--output-dir", str(out), "--max-new-tokens", "6", "--cache-dir", str(tmp_path / "cache")]
    assert cli([*argv, "--no-progress"]) == 1  # CHAIR without annotations stops before generating
    assert "--coco-dir" in capsys.readouterr().err and not (out / "answers" / "list.jsonl").exists()
    assert cli([*argv, "--coco-dir", str(tmp_path / "annotations"), "--no-progress"]) == 0
    captions = read_answers(out / "answers" / "list.jsonl")
    assert [c["image_id"] for c in captions] == [1, 2, 3]
    assert all(set(c["caption"].split()) <= {"dog", "cat"} and c["caption"] for c in captions)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == json.loads((out / "chair.json").read_text())["overall_metrics"]
    mentions = [c["caption"].split() for c in captions]
    truth = [{"dog"}, {"cat"}, set()]
    hallucinated = sum(w not in t for words, t in zip(mentions, truth) for w in words)
    assert summary["metrics"]["CHAIRi"] == pytest.approx(hallucinated / sum(map(len, mentions)))
    assert "CHAIRs" in capsys.readouterr().out
