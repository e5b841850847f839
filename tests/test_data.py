"""Conversation -> labels in LLaVA-1.5's training format, the collator, and bad input named clearly."""

import json
import logging

import pytest
import torch
from tiny import tiny_llava, write_conversations, write_images

from vdtrain.commands.train import load_config
from vdtrain.data import SupervisedDataset, VDDataCollator, check_images, load_conversations, load_image, to_messages
from vdtrain.models import ConversationError, get_adapter
from vdtrain.models.llava import VICUNA_SYSTEM

TWO_TURNS = [
    {"from": "human", "value": "<image>\ndescribe this image"},
    {"from": "gpt", "value": "a red cat on blue mat."},
    {"from": "human", "value": "what color is the cat?"},
    {"from": "gpt", "value": "red."},
]


@pytest.fixture(scope="module")
def llava():
    model, processor = tiny_llava()
    return model, processor, get_adapter(model)


def test_two_turn_vicuna_labels(llava):
    _, processor, adapter = llava
    tokenizer = processor.tokenizer
    messages = to_messages({"id": "x", "image": "a.png", "conversations": TWO_TURNS})
    example = adapter.encode(messages, processor, num_image_tokens=16)[0]
    text = tokenizer.decode(example.input_ids)
    assert text == (
        f"<s>{VICUNA_SYSTEM} USER: {'<image>' * 16}\ndescribe this image ASSISTANT: a red cat on blue mat.</s>"
        "USER: what color is the cat? ASSISTANT: red.</s>"
    )
    supervised = [t for t, label in zip(example.input_ids, example.labels) if label != -100]
    assert tokenizer.decode(supervised) == " a red cat on blue mat.</s> red.</s>"
    assert all(label in (-100, token) for token, label in zip(example.input_ids, example.labels))
    flagged = [i for i, flag in enumerate(example.end_of_turn_mask) if flag]
    assert len(flagged) == 2 and all(example.input_ids[i] == tokenizer.eos_token_id for i in flagged)
    assert all(example.labels[i] != -100 for i in flagged)
    print("supervised span:", repr(tokenizer.decode(supervised)))


def test_dataset_and_collator(tmp_path, llava):
    _, processor, adapter = llava
    names = write_images(tmp_path / "img", 2)
    records = write_conversations(tmp_path / "d.json", names, turns=1, text_only=1)
    dataset = SupervisedDataset(load_conversations(tmp_path / "d.json"), adapter, processor, tmp_path / "img")
    assert len(dataset) == len(records) == 3
    batch = VDDataCollator.for_processor(processor)([dataset[0], dataset[2], dataset[1]])
    lengths = [len(dataset[i]["input_ids"]) for i in (0, 2, 1)]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["pixel_values"].shape == (2, 3, 32, 32)  # the text-only sample adds no image
    assert batch["has_image"].tolist() == [True, False, True]
    assert batch["end_of_turn_mask"].dtype == torch.bool and batch["end_of_turn_mask"].sum() == 3
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_field_groups_are_padded_to_their_own_length(tmp_path, llava):
    """An example's field group (`Example.groups`: InstructBLIP's Q-Former text) is padded together to the group's
    longest field, not to the tokens' length, each field with its own pad value, one row per example carrying it; a
    truncated example keeps it whole."""
    from vdtrain.data.dataset import example_features
    from vdtrain.models.base import Example, FieldGroup

    _, processor, adapter = llava
    names = write_images(tmp_path / "img", 2)
    write_conversations(tmp_path / "d.json", names, turns=1, text_only=1)
    dataset = SupervisedDataset(load_conversations(tmp_path / "d.json"), adapter, processor, tmp_path / "img")
    pads = {"side_ids": 7, "side_mask": 0}
    long = FieldGroup({"side_ids": [1, 2, 3, 4, 5] * 60, "side_mask": [1] * 300}, pads)  # longer than the tokens
    short = FieldGroup({"side_ids": [9, 9], "side_mask": [1, 1]}, pads)
    features = []
    for index, group in zip(range(3), (long, None, short)):
        record, example = dataset.items[index]
        if group is not None:
            example = Example(example.input_ids, example.labels, example.end_of_turn_mask, example.extra, {"s": group})
        features.append({**dataset[index], **example_features(example)})
    batch = VDDataCollator.for_processor(processor)(features)
    assert batch["input_ids"].shape[1] == max(len(feature["input_ids"]) for feature in features) < 300
    assert batch["side_ids"].tolist() == [long.fields["side_ids"], [9, 9] + [7] * 298]  # the carriers' rows
    assert batch["side_mask"].tolist() == [[1] * 300, [1, 1] + [0] * 298]
    cut = Example([1] * 10, [1] * 10, [False] * 10, {}, {"s": long}).truncate(4)
    assert cut.input_ids == [1] * 4 and cut.groups == {"s": long}


def test_missing_images_listed_in_one_error(tmp_path):
    names = write_images(tmp_path / "img", 3)
    records = write_conversations(tmp_path / "d.json", names)
    (tmp_path / "img" / names[1]).unlink()
    (tmp_path / "img" / names[2]).unlink()
    with pytest.raises(FileNotFoundError) as error:
        check_images(load_conversations(tmp_path / "d.json"), tmp_path / "img", source="d.json")
    message = str(error.value)
    assert "2 of 3 images are missing or unreadable" in message and "d.json" in message
    assert records[1]["id"] in message and names[2] in message and names[0] not in message


def test_undecodable_image_names_sample(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ConversationError, match=r"sample 's7'.*bad\.png"):
        load_image(tmp_path / "bad.png", "s7")


@pytest.mark.parametrize(
    "record,match",
    [
        (
            {"id": "q1", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nhi"}]},
            "'q1' has no assistant",
        ),
        (
            {
                "id": "q2",
                "image": "a.png",
                "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}],
            },
            "'q2' has an image but 0 '<image>'",
        ),
        (
            {"id": "q3", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "x"}]},
            "'q3' has 1 '<image>' placeholders but no 'image'",
        ),
        ({"id": "q4", "conversations": [{"from": "robot", "value": "hi"}]}, "'q4': unknown speaker"),
        ({"id": "q5"}, "'q5' has no 'conversations'"),
        ({"id": "q6", "conversations": ["<image>\nhi", "x"]}, "'q6': turn 1 is a JSON str, not an object"),
        (
            {"id": "q7", "conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "x"}]},
            "'q7': turn 1's 'value' is a JSON int, not text",
        ),
    ],
)
def test_bad_conversations_name_the_sample(record, match):
    with pytest.raises(ConversationError, match=match) as error:
        to_messages(record, source="train.json")
    assert "train.json" in str(error.value)


def test_truncation_that_leaves_nothing_supervised_is_refused_or_dropped(tmp_path, llava, caplog):
    _, processor, adapter = llava
    long_question = "describe this image in detail " * 40
    records = [
        {"id": "long", "conversations": [{"from": "human", "value": long_question}, {"from": "gpt", "value": "yes."}]},
        {"id": "short", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yes."}]},
    ]
    with pytest.raises(
        ConversationError, match=r"train\.json: 1 sample\(s\) do not fit max_length=80:\n  sample 'long'"
    ):
        SupervisedDataset(records, adapter, processor, max_length=80, source="train.json")
    with caplog.at_level(logging.WARNING):
        dataset = SupervisedDataset(
            records, adapter, processor, max_length=80, source="train.json", drop_truncated=True
        )
    assert len(dataset) == 1 and dataset.dropped == ["long"]
    assert "train.json: dropped sample 'long'" in caplog.text
    with pytest.raises(ConversationError, match="no sample is left"):
        SupervisedDataset(records[:1], adapter, processor, max_length=80, source="train.json", drop_truncated=True)


def test_unreadable_images_are_refused_before_training(tmp_path, llava):
    _, processor, adapter = llava
    names = write_images(tmp_path / "images", 2)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"<html>404</html>")
    turns = [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "yes."}]
    files = [*names, "broken.jpg", "gone.png"]
    records = [{"id": f"s{i}", "image": name, "conversations": turns} for i, name in enumerate(files)]
    with pytest.raises(FileNotFoundError) as error:
        check_images(records, tmp_path / "images", source="train.json")
    message = str(error.value)
    assert "train.json: 2 of 4 images are missing or unreadable" in message
    assert "sample 's2'" in message and "broken.jpg (cannot be read as an image" in message
    assert "sample 's3'" in message and "gone.png (missing)" in message
    dataset = SupervisedDataset(records[2:3], adapter, processor, tmp_path / "images", source="train.json")
    with pytest.raises(ConversationError, match=r"train\.json: sample 's2': cannot decode image .*broken\.jpg"):
        dataset[0]  # without the check, the item that reads it names the data file, the sample and the image


def test_bad_config_value_names_the_recipe(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("model_name_or_path: m\ndata_path: d.json\noutput_dir: out\nvd_start: 2\n")
    with pytest.raises(ValueError, match=r"recipe\.yaml: vd_start is a fraction of training in \[0, 1\], got 2"):
        load_config(config)


def test_unknown_config_field_is_named(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("model_name_or_path: m\ndata_path: d.json\noutput_dir: out\nvd_temprature: 0.5\n")
    with pytest.raises(
        ValueError, match=r"recipe\.yaml: unknown field\(s\): vd_temprature \(did you mean vd_temperature"
    ):
        load_config(config)


def test_config_types_and_overrides(tmp_path):
    config = tmp_path / "recipe.yaml"
    fields = {
        "model_name_or_path": "m",
        "data_path": "d.json",
        "output_dir": str(tmp_path),
        "learning_rate": "2e-4",
        "vd_start": 0.5,
        "bf16": False,
        "use_cpu": True,
    }
    config.write_text(json.dumps(fields))
    model_args, data_args, args = load_config(config, {"vd_temperature": "1.0", "lora_r": "8"})
    assert args.learning_rate == 2e-4 and args.vd_temperature == 1.0 and model_args.lora_r == 8
    assert data_args.data_path == "d.json" and args.vd_weighting == "neg" and args.vd_noise_step == 900
    with pytest.raises(ValueError, match="vd_weighting"):
        load_config(config, {"vd_weighting": "sideways"})


# ------------------------------------------------------------------------------------ validation before training
def _record(sample_id, turns, image="img_000.png"):
    return {"id": sample_id, "image": image, "conversations": [{"from": f, "value": v} for f, v in turns]}


def test_turn_order_named_per_sample_in_one_error(tmp_path, llava):
    _, processor, adapter = llava
    names = write_images(tmp_path / "img", 1)
    good = _record("good", [("human", "<image>\nhi"), ("gpt", "a cat.")], names[0])
    records = [
        good,
        _record("gpt-first", [("gpt", "hello"), ("human", "<image>\nhi"), ("gpt", "a cat.")], names[0]),
        _record("two-humans", [("human", "<image>\nhi"), ("human", "and?"), ("gpt", "a cat.")], names[0]),
        _record("ends-human", [("human", "<image>\nhi"), ("gpt", "a cat."), ("human", "more?")], names[0]),
    ]
    with pytest.raises(ConversationError) as error:
        SupervisedDataset(records, adapter, processor, tmp_path / "img", source="d.json")
    message = str(error.value)
    assert message.startswith("d.json: 3 of 4 sample(s) cannot be trained on:")
    assert "sample 'gpt-first': turn 1 is a 'gpt' turn; a conversation starts with a 'human' turn" in message
    assert "sample 'two-humans': turns 1 and 2 are both 'human'" in message
    assert "sample 'ends-human': the last turn (3) is a 'human' turn" in message
    assert "'<image>' must be in the first human turn" not in message  # the old, misleading report
    assert "'good'" not in message and "drop_invalid: true" in message


def test_special_token_text_refused_or_dropped(tmp_path, llava, caplog):
    _, processor, adapter = llava
    names = write_images(tmp_path / "img", 1)
    records = [
        _record("ok", [("human", "<image>\nhi"), ("gpt", "a cat.")], names[0]),
        _record("eos", [("human", "<image>\nhi"), ("gpt", "a cat.</s> and more")], names[0]),
    ]
    with pytest.raises(
        ConversationError,
        match=r"sample 'eos': turn 2 \(assistant\) contains the special-token "
        r"text '</s>'",
    ):
        SupervisedDataset(records, adapter, processor, tmp_path / "img", source="d.json")
    with caplog.at_level(logging.WARNING):
        dataset = SupervisedDataset(records, adapter, processor, tmp_path / "img", source="d.json", drop_invalid=True)
    assert len(dataset) == 1 and dataset.items[0][0]["id"] == "ok" and dataset.dropped == ["eos"]
    assert "dropped sample 'eos'" in caplog.text
    eos = processor.tokenizer.eos_token_id
    example = dataset.items[0][1]
    assert [t for t, flag in zip(example.input_ids, example.end_of_turn_mask) if flag] == [eos]  # one, at the end


def test_image_outside_the_folder_refused_unless_allowed(tmp_path, llava):
    _, processor, adapter = llava
    write_images(tmp_path / "outside", 1)
    (tmp_path / "img").mkdir()
    records = [_record("up", [("human", "<image>\nhi"), ("gpt", "a cat.")], "../outside/img_000.png")]
    outside = str(tmp_path / "outside" / "img_000.png")
    records.append(_record("abs", [("human", "<image>\nhi"), ("gpt", "a dog.")], outside))
    with pytest.raises(FileNotFoundError) as error:
        check_images(records, tmp_path / "img", source="d.json")
    message = str(error.value)
    assert "2 of 2 images" in message and "'../outside/img_000.png' resolves outside the image folder" in message
    assert "allow_external_images: true" in message and "sample 'abs'" in message
    with pytest.raises(ConversationError, match="sample 'up'.*resolves outside"):
        SupervisedDataset(records, adapter, processor, tmp_path / "img")
    check_images(records, tmp_path / "img", allow_external=True)
    dataset = SupervisedDataset(records, adapter, processor, tmp_path / "img", allow_external_images=True)
    assert len(dataset) == 2 and dataset[0]["image_inputs"]["pixel_values"].shape == (1, 3, 32, 32)


def test_image_field_that_is_not_a_file_name_is_listed(tmp_path):
    records = [{"id": "n", "image": 5}, {"id": "d", "image": {"path": "a.png"}}]
    with pytest.raises(FileNotFoundError) as error:
        check_images(records, tmp_path, source="d.json")
    message = str(error.value)
    assert "sample 'n': 'image' is a JSON int, not a file name" in message
    assert "sample 'd': 'image' is a JSON dict, not a file name" in message


def test_data_path_that_is_a_directory_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data file {tmp_path} is a directory"):
        load_conversations(tmp_path)


def test_json_object_instead_of_a_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"info": "v1", "data": [{"id": "a", "conversations": []}]}))
    with pytest.raises(ConversationError) as error:
        load_conversations(path)
    message = str(error.value)
    assert f"{path} holds one JSON object (keys 'info', 'data'), not a list of samples" in message
    assert "the samples may be the list under 'data'" in message
    path.write_text(json.dumps(["just text"]))
    with pytest.raises(ConversationError, match="sample 0 is a JSON str, not an object"):
        load_conversations(path)
    path.write_text("")
    with pytest.raises(ConversationError, match="is empty"):
        load_conversations(path)


def test_train_cli_reports_bad_data_in_one_line(tmp_path, tiny_llava_dir, capsys):
    from vdtrain.cli import main

    names = write_images(tmp_path / "img", 2)
    records = write_conversations(tmp_path / "d.json", names)
    records[1]["conversations"].insert(0, {"from": "gpt", "value": "hello"})
    (tmp_path / "d.json").write_text(json.dumps(records))
    argv = [
        "train",
        "--model",
        str(tiny_llava_dir),
        "--data",
        str(tmp_path / "d.json"),
        "--image-folder",
        str(tmp_path / "img"),
        "--output-dir",
        str(tmp_path / "o"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "error:" in line)  # datasets' progress bars come first
    assert line == f"vdtrain train: error: {tmp_path / 'd.json'}: 1 of 2 sample(s) cannot be trained on:"
    assert f"sample {records[1]['id']!r}: turn 1 is a 'gpt' turn" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_images_and_bad_turns_are_listed_in_the_same_error(tmp_path, tiny_llava_dir, capsys):
    """A missing image no longer hides the conversations' problems until the next run: both lists, one error."""
    from vdtrain.cli import main

    names = write_images(tmp_path / "img", 3)
    records = write_conversations(tmp_path / "d.json", names)
    records[1]["conversations"].insert(0, {"from": "gpt", "value": "hello"})
    records[2]["conversations"][-1]["value"] += " </s> more"
    (tmp_path / "d.json").write_text(json.dumps(records))
    (tmp_path / "img" / names[0]).unlink()
    argv = ["train", "--model", str(tiny_llava_dir), "--data", str(tmp_path / "d.json")]
    argv += ["--image-folder", str(tmp_path / "img"), "--output-dir", str(tmp_path / "o"), "--device", "cpu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of 3 images are missing or unreadable" in err and names[0] in err
    assert "2 of 3 sample(s) cannot be trained on:" in err
    assert f"sample {records[1]['id']!r}: turn 1 is a 'gpt' turn" in err
    assert f"sample {records[2]['id']!r}: turn 2 (assistant) contains the special-token text '</s>'" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    assert main([*argv, "--drop-invalid", "true"]) == 1  # the samples that would be dropped: the images alone
    err = capsys.readouterr().err
    assert "1 of 3 images are missing" in err and "cannot be trained on" not in err


def test_missing_image_folder_is_one_line_not_every_image(tmp_path):
    names = write_images(tmp_path / "img", 3)
    records = write_conversations(tmp_path / "d.json", names)
    with pytest.raises(FileNotFoundError) as error:  # listed each of the 3 images as missing
        check_images(records, tmp_path / "imgs", source="d.json")
    assert str(error.value) == f"d.json: the image folder {tmp_path / 'imgs'} does not exist (image_folder)"


def test_a_symlinked_subfolder_of_the_image_folder_is_inside_it(tmp_path, llava):
    """LLaVA's layout links `coco` to wherever COCO lives: as written the path is inside the folder."""
    _, processor, adapter = llava
    write_images(tmp_path / "elsewhere" / "coco", 1)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "coco").symlink_to(tmp_path / "elsewhere" / "coco")
    records = [_record("linked", [("human", "<image>\nhi"), ("gpt", "a cat.")], "coco/img_000.png")]
    check_images(records, tmp_path / "img")
    dataset = SupervisedDataset(records, adapter, processor, tmp_path / "img")
    assert dataset[0]["image_inputs"]["pixel_values"].shape == (1, 3, 32, 32)
    escaping = [_record("up", [("human", "<image>\nhi"), ("gpt", "a cat.")], "coco/../../elsewhere/coco/img_000.png")]
    with pytest.raises(ConversationError, match="sample 'up'.*resolves outside"):
        SupervisedDataset(escaping, adapter, processor, tmp_path / "img")
