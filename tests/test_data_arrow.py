"""Conversations through `datasets`: LLaVA JSON, TRL `messages` + `images` and ShareGPT tables give the examples the
in-memory path gives, built once into an Arrow cache, with every bad sample named by file and id."""

import json
import logging

import datasets
import pytest
import torch
from PIL import Image
from tiny import tiny_llava, tiny_paligemma, write_conversations, write_images

from vdtrain.data import SupervisedDataset, VDDataCollator, load_conversations
from vdtrain.data.cached import ArrowSupervisedDataset
from vdtrain.data.sources import load_source
from vdtrain.data.tokenized import collapse_images, expand_images
from vdtrain.models import ConversationError, get_adapter

BUILDERS = {"llava": tiny_llava, "paligemma": tiny_paligemma}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request):
    model, processor = BUILDERS[request.param]()
    return get_adapter(model), processor


@pytest.fixture(scope="module")
def llava():
    model, processor = tiny_llava()
    return get_adapter(model), processor


def _items(dataset):
    return [dataset[index] for index in range(len(dataset))]


def _assert_same_items(expected, actual):
    assert len(expected) == len(actual)
    for one, other in zip(expected, actual):
        assert one.keys() == other.keys()
        for key, value in one.items():
            if key == "image_inputs":
                assert value.keys() == other[key].keys()
                assert all(torch.equal(value[name], other[key][name]) for name in value)
            else:
                assert value == other[key], key


def _trl_rows(records, image_folder, as_bytes):
    """The records in TRL's conversational vision format: `messages` with image parts, `images` beside them."""
    rows = []
    for record in records:
        messages = []
        for turn in record["conversations"]:
            role = "user" if turn["from"] == "human" else "assistant"
            text = turn["value"].replace("<image>\n", "")
            content = [{"type": "text", "text": text}]
            if "<image>" in turn["value"]:
                content.insert(0, {"type": "image", "text": None})
            messages.append({"role": role, "content": content})
        image = record.get("image")
        if image is not None and as_bytes:
            image = {"bytes": (image_folder / image).read_bytes(), "path": None}
        rows.append({"id": record["id"], "messages": messages, "images": [image] if image else []})
    return rows


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "tokenized-first"])
def test_llava_json_through_datasets_matches_the_list_path(tmp_path, family, lazy):
    adapter, processor = family
    names = write_images(tmp_path / "img", 3)
    write_conversations(tmp_path / "d.json", names, turns=2, text_only=1)
    expected = SupervisedDataset(load_conversations(tmp_path / "d.json"), adapter, processor, tmp_path / "img")
    dataset = SupervisedDataset(
        load_source(tmp_path / "d.json"), adapter, processor, tmp_path / "img", cache_dir=tmp_path / "c", lazy=lazy
    )
    assert isinstance(dataset, ArrowSupervisedDataset) and not dataset.reused_cache
    assert len(dataset) == len(expected)
    if lazy:  # planned, not tokenised: the table holds no tokens and the lengths are guesses of the right size
        assert "input_ids" not in dataset.examples.column_names
        assert all(0.5 <= guess / exact <= 2 for guess, exact in zip(dataset.lengths, expected.lengths)), (
            dataset.lengths,
            expected.lengths,
        )
    else:
        assert dataset.lengths == expected.lengths
    _assert_same_items(_items(expected), _items(dataset))


@pytest.mark.parametrize("as_bytes", [True, False], ids=["image-bytes", "image-paths"])
def test_trl_messages_parquet_folder_gives_the_llava_json_examples(tmp_path, llava, as_bytes):
    adapter, processor = llava
    names = write_images(tmp_path / "img", 3)
    records = write_conversations(tmp_path / "d.json", names, turns=2, text_only=1)
    features = None
    if as_bytes:
        message = {"role": datasets.Value("string")}
        message["content"] = [{"type": datasets.Value("string"), "text": datasets.Value("string")}]
        features = datasets.Features(
            id=datasets.Value("string"),
            messages=[message],
            images=[datasets.Image()],
        )
    table = datasets.Dataset.from_list(_trl_rows(records, tmp_path / "img", as_bytes), features=features)
    (tmp_path / "trl").mkdir()
    table.to_parquet(str(tmp_path / "trl" / "train-00000.parquet"))

    expected = SupervisedDataset(load_conversations(tmp_path / "d.json"), adapter, processor, tmp_path / "img")
    source = load_source(tmp_path / "trl")
    assert source.column_names == ["id", "messages", "images"]
    folder = None if as_bytes else tmp_path / "img"  # embedded images need no folder
    dataset = SupervisedDataset(source, adapter, processor, folder, source="trl", cache_dir=tmp_path / "cache")
    items = _items(dataset)
    assert [item["input_ids"] for item in items] == [example.input_ids for _, example in expected.items]
    assert [item["labels"] for item in items] == [example.labels for _, example in expected.items]
    _assert_same_items(_items(expected), items)


def test_sharegpt_conversations_with_an_images_column(tmp_path, llava):
    adapter, processor = llava
    names = write_images(tmp_path / "img", 2)
    records = write_conversations(tmp_path / "d.json", names)
    rows = [{"conversations": r["conversations"], "images": [r["image"]]} for r in records]
    (tmp_path / "sharegpt.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    expected = SupervisedDataset(load_conversations(tmp_path / "d.json"), adapter, processor, tmp_path / "img")
    dataset = SupervisedDataset(
        load_source(tmp_path / "sharegpt.jsonl"), adapter, processor, tmp_path / "img", cache_dir=tmp_path / "c"
    )
    assert [item["labels"] for item in _items(dataset)] == [example.labels for _, example in expected.items]


def test_rerun_reuses_the_cache_and_other_settings_rebuild(tmp_path, llava):
    adapter, processor = llava
    names = write_images(tmp_path / "img", 2)
    write_conversations(tmp_path / "d.json", names)
    source = load_source(tmp_path / "d.json")
    kwargs = {"image_folder": tmp_path / "img", "cache_dir": tmp_path / "cache"}
    first = SupervisedDataset(source, adapter, processor, **kwargs)
    (cache_file,) = (tmp_path / "cache").iterdir()
    written = cache_file.stat().st_mtime_ns
    again = SupervisedDataset(load_source(tmp_path / "d.json"), adapter, processor, **kwargs)
    assert again.reused_cache and not first.reused_cache
    assert cache_file.stat().st_mtime_ns == written and again.lengths == first.lengths
    shorter = SupervisedDataset(source, adapter, processor, max_length=first.lengths[0] + 1, **kwargs)
    assert not shorter.reused_cache and len(list((tmp_path / "cache").iterdir())) == 2
    two = SupervisedDataset(
        source, adapter, processor, num_proc=2, cache_dir=tmp_path / "c2", image_folder=kwargs["image_folder"]
    )
    _assert_same_items(_items(first), _items(two))


def test_errors_in_the_cached_path_name_the_file_and_every_sample(tmp_path, llava, caplog):
    adapter, processor = llava
    names = write_images(tmp_path / "img", 4)
    records = write_conversations(tmp_path / "d.json", names)
    records[1]["conversations"].insert(0, {"from": "gpt", "value": "hello"})
    records[2]["conversations"][-1]["value"] += " </s> more"
    (tmp_path / "d.json").write_text(json.dumps(records))
    (tmp_path / "img" / names[0]).unlink()
    (tmp_path / "img" / names[3]).write_bytes(b"not an image")
    source = load_source(tmp_path / "d.json")
    kwargs = {"image_folder": tmp_path / "img", "source": str(tmp_path / "d.json"), "cache_dir": tmp_path / "c"}
    with pytest.raises(FileNotFoundError) as error:
        SupervisedDataset(source, adapter, processor, num_proc=2, **kwargs)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'd.json'}: 2 of 4 images are missing or unreadable")
    assert f"sample 's0': {tmp_path / 'img' / names[0]} (missing)" in message
    assert (
        f"sample 's3': {tmp_path / 'img' / names[3]} (cannot be read as an image: UnidentifiedImageError)" in message
    )
    assert f"{tmp_path / 'd.json'}: 2 of 4 sample(s) cannot be trained on:" in message
    assert "sample 's1': turn 1 is a 'gpt' turn" in message
    assert "sample 's2': turn 2 (assistant) contains the special-token text '</s>'" in message
    assert not list((tmp_path / "c").glob("*.arrow"))  # a build that found missing images is not kept

    write_images(tmp_path / "img", 4)  # the images are back: the conversations alone are listed
    with pytest.raises(ConversationError, match=r"2 of 4 sample\(s\) cannot be trained on:\n  sample 's1'"):
        SupervisedDataset(source, adapter, processor, **kwargs)
    with caplog.at_level(logging.WARNING, logger="vdtrain"):
        dataset = SupervisedDataset(source, adapter, processor, drop_invalid=True, **kwargs)
    assert dataset.reused_cache and dataset.dropped == ["s1", "s2"] and len(dataset) == 2
    assert "dropped sample 's1': turn 1 is a 'gpt' turn" in caplog.text
    with pytest.raises(ConversationError) as error:
        SupervisedDataset(source, adapter, processor, max_length=20, drop_invalid=True, **kwargs)
    assert "2 sample(s) do not fit max_length=20:\n  sample 's0': " in str(error.value)
    assert "tokens, truncation cuts no supervised token\n  sample 's3': " in str(error.value)


def test_a_heterogeneous_file_is_checked_sample_by_sample(tmp_path, llava):
    adapter, processor = llava
    names = write_images(tmp_path / "img", 2)
    records = write_conversations(tmp_path / "d.json", names)
    records[1]["conversations"] = "not a list"
    (tmp_path / "d.json").write_text(json.dumps(records))
    with pytest.raises(ConversationError, match="sample 's1' has no 'conversations' list"):
        SupervisedDataset(load_source(tmp_path / "d.json"), adapter, processor, tmp_path / "img", cache_dir=tmp_path)


def test_image_runs_collapse_and_expand_exactly():
    import numpy as np

    ids = np.array([1, 9, 9, 9, 5, 9, 6], dtype=np.int32)
    fields = {"input_ids": ids, "labels": np.where(ids == 9, -100, ids), "eot": ids == 6}
    collapsed, runs = collapse_images(fields, 9)
    assert collapsed["input_ids"].tolist() == [1, 9, 5, 9, 6] and runs.tolist() == [3, 1]
    restored = expand_images({key: value.tolist() for key, value in collapsed.items()}, runs.tolist(), 9)
    assert {key: value for key, value in restored.items()} == {key: value.tolist() for key, value in fields.items()}
    uneven = {**fields, "labels": np.array([1, 9, -100, 9, 5, 9, 6])}  # a run whose labels differ stays
    kept, runs = collapse_images(uneven, 9)
    assert kept["input_ids"].tolist() == ids.tolist() and runs.tolist() == [1, 1, 1, 1]


def test_batches_from_the_arrow_dataset_collate(tmp_path, llava):
    adapter, processor = llava
    names = write_images(tmp_path / "img", 2)
    write_conversations(tmp_path / "d.json", names, text_only=1)
    dataset = SupervisedDataset(
        load_source(tmp_path / "d.json"), adapter, processor, tmp_path / "img", cache_dir=tmp_path
    )
    batch = VDDataCollator.for_processor(processor)(_items(dataset))
    assert batch["has_image"].tolist() == [True, True, False] and batch["pixel_values"].shape[0] == 2
    image = Image.open(tmp_path / "img" / names[0])
    assert image.size == (32, 32)


def test_a_saved_dataset_and_a_dataset_name_read_as_the_file(tmp_path, llava):
    """A `save_to_disk` folder and `dataset_name` (here a local folder, as a hub id is read) give the file's rows."""
    names = write_images(tmp_path / "img", 2)
    records = write_conversations(tmp_path / "d.json", names, text_only=1)
    table = datasets.Dataset.from_list(_trl_rows(records, tmp_path / "img", as_bytes=False))
    table.save_to_disk(str(tmp_path / "saved"))
    table.to_json(str(tmp_path / "hub" / "train.jsonl"))
    for source in (load_source(tmp_path / "saved"), load_source(dataset_name=str(tmp_path / "hub"), split="train")):
        assert len(source) == 3 and source[0]["images"] == [names[0]] and source[2]["images"] == []
    with pytest.raises(ValueError, match="data_path .* or dataset_name"):
        load_source(tmp_path / "d.json", dataset_name="x")
