"""The shared forward helpers: logits only at supervised positions, equal to the full forward's log-probabilities."""

import pytest
import torch
from tiny import tiny_llava, write_conversations, write_images

from vdtrain.data import SupervisedDataset, VDDataCollator, load_conversations
from vdtrain.keys import LOSS_ONLY_KEYS
from vdtrain.method.dependence import IGNORE_INDEX, target_logprobs
from vdtrain.method.passes import no_grad_logprobs, supervised_logits, supervised_targets, targets_at
from vdtrain.models import get_adapter
from vdtrain.models.base import accepts_logits_mask


@pytest.fixture(scope="module")
def batch_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("forward")
    model, processor = tiny_llava()
    names = write_images(root / "images", 2)
    write_conversations(root / "data.json", names, turns=2, text_only=1)
    dataset = SupervisedDataset(load_conversations(root / "data.json"), get_adapter(model), processor, root / "images")
    batch = VDDataCollator.for_processor(processor)([dataset[i] for i in range(len(dataset))])
    inputs = {key: value for key, value in batch.items() if key not in (*LOSS_ONLY_KEYS, "labels")}
    return model, inputs, batch["labels"]


def test_targets_at_marks_the_position_before_each_supervised_label():
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 7]])
    assert targets_at(labels).tolist() == [[True, True, False, False], [False, False, True, False]]
    assert supervised_targets(labels).tolist() == [5, 6, 7]


@pytest.mark.parametrize("logits_mask", [True, False])
def test_no_grad_logprobs_equal_the_full_forward(batch_and_model, logits_mask):
    model, inputs, labels = batch_and_model
    assert accepts_logits_mask(model)
    with torch.no_grad():
        full = target_logprobs(model(**inputs).logits, labels)  # (B, L)
    supervised = torch.nn.functional.pad(labels[:, 1:] != IGNORE_INDEX, (1, 0), value=False)
    model.train()
    try:
        logp = no_grad_logprobs(model, inputs, labels, logits_mask)  # (N,)
        assert model.training  # switched to eval for the pass, and back
    finally:
        model.eval()
    assert logp.shape == (int(supervised.sum()),) and not logp.requires_grad
    torch.testing.assert_close(logp, full[supervised], rtol=1e-5, atol=1e-5)
    assert float(logp.max()) < 0


def test_supervised_logits_rows_match_the_masked_full_logits(batch_and_model):
    model, inputs, labels = batch_and_model
    with torch.no_grad():
        full = model(**inputs).logits
        rows, outputs = supervised_logits(model, inputs, targets_at(labels), logits_mask=True)
    assert outputs.logits.dim() == 2  # the model computed only the kept rows
    torch.testing.assert_close(rows, full[targets_at(labels)], rtol=1e-5, atol=1e-5)
