"""Training and filtering share one data path: the same conversation file gives the same batch through both."""

import pytest
import torch
from tiny import tiny_llava, tiny_paligemma, write_conversations, write_images

from vdtrain.data import SupervisedDataset, VDDataCollator, load_conversations
from vdtrain.data.samples import collate_samples, prepare_sample
from vdtrain.keys import END_OF_TURN_MASK, HAS_IMAGE, LOSS_ONLY_KEYS
from vdtrain.models import get_adapter
from vdtrain.models.base import pad_token_id

BUILDERS = {"llava": tiny_llava, "paligemma": tiny_paligemma}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_training_and_scoring_build_identical_batches(tmp_path, family):
    model, processor = BUILDERS[family]()
    adapter = get_adapter(model)
    names = write_images(tmp_path / "images", 3)
    write_conversations(tmp_path / "data.json", names, turns=2, text_only=1)  # 3 two-turn records + 1 text-only
    records = load_conversations(tmp_path / "data.json")

    dataset = SupervisedDataset(records, adapter, processor, tmp_path / "images", max_length=256)
    training = VDDataCollator.for_processor(processor)([dataset[i] for i in range(len(dataset))])

    samples = [
        prepare_sample(record, index, adapter, processor, tmp_path / "images", max_length=256, seed=0)
        for index, record in enumerate(records)
    ]
    assert not [sample["error"] for sample in samples if "error" in sample]
    scoring = collate_samples(samples, pad_token_id(processor))

    # PaliGemma makes one example per question/answer pair, so a two-turn record is two rows in both batches
    rows = 2 * 3 + 1 if family == "paligemma" else 3 + 1
    assert training["input_ids"].shape[0] == len(dataset) == rows
    assert set(scoring["inputs"]) == set(training) - set(LOSS_ONLY_KEYS)
    assert adapter.pixel_key in scoring["inputs"]
    for key, value in scoring["inputs"].items():
        assert value.dtype == training[key].dtype and torch.equal(value, training[key]), key
    assert torch.equal(scoring[HAS_IMAGE], training[HAS_IMAGE])
    assert training[HAS_IMAGE].tolist() == [True] * (rows - 1) + [False]
    assert int(training[END_OF_TURN_MASK].sum()) == 2 * 3 + 1  # every assistant turn closes with one flagged token
