"""The model zoo: every image-text-to-text family that builds offline (tests/zoo.py), each a tiny random-weight model
with a real tokenizer, through `SupervisedDataset` -> `VDDataCollator` -> `VDTrainer`, asserting per family:

- a multi-turn sample's supervised tokens decode to exactly each answer plus one end-of-turn token, which is flagged;
- one step of `VDTrainer` at tau = 0 (vd_start 0: the noisy pass runs) over all four rows, images of three aspect
  ratios and a text-only row in one batch, logs the vanilla `Trainer`'s loss and ends on its weights (the vocabulary
  matrices are frozen in both: with a real tokenizer's 150k-262k rows they were most of the CI time);
- visual dependence `d` is not 0 on the supervised tokens of image rows (it is exactly 0 on text-only rows).
"""

from __future__ import annotations

import copy

import pytest
import torch
import zoo
from PIL import Image
from transformers import Trainer, TrainingArguments

from vdtrain import VDTrainer, VDTrainingArguments
from vdtrain.data import SupervisedDataset, VDDataCollator
from vdtrain.keys import HAS_IMAGE, LOSS_ONLY_KEYS
from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models import get_adapter
from vdtrain.models.base import tokenizer_of

ANSWERS = ["there is a red cat on the mat.", "blue."]
SIZES = [(48, 32), (32, 48), (40, 40)]  # landscape, portrait, square: any-resolution tiles differ per image


def records() -> list[dict]:
    """Two-turn samples with images of different aspect ratios, and one text-only sample."""
    rows = []
    for index in range(len(SIZES)):
        rows.append(
            {
                "id": f"s{index}",
                "image": f"img{index}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\ndescribe this image."},
                    {"from": "gpt", "value": ANSWERS[0]},
                    {"from": "human", "value": "what color is the mat?"},
                    {"from": "gpt", "value": ANSWERS[1]},
                ],
            }
        )
    rows.append(
        {"id": "t0", "conversations": [{"from": "human", "value": "say yes."}, {"from": "gpt", "value": "yes."}]}
    )
    return rows


def write_images(folder) -> None:
    generator = torch.Generator().manual_seed(0)
    for index, (width, height) in enumerate(SIZES):
        pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"img{index}.png")


def supervised_runs(tokenizer, labels: list[int]) -> list[list[int]]:
    runs, current = [], []
    for label in [*labels, IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs, current = [*runs, current], []
    return runs


class RecordingVDTrainer(VDTrainer):
    """`VDTrainer` that keeps what reaches the weighting hook: `d`, the supervised mask and the end-of-turn mask."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.has_image = inputs[HAS_IMAGE]
        return super().compute_loss(model, inputs, *args, **kwargs)

    def compute_token_weights(self, d, mask, end_of_turn_mask):
        self.seen.append((d.detach().clone(), mask.clone(), end_of_turn_mask.clone(), self.has_image.clone()))
        return super().compute_token_weights(d, mask, end_of_turn_mask)


def without_loss_keys(collator):
    """The vanilla `Trainer`'s collator: vdtrain's batches without the keys only its loss reads."""

    def collate(features):
        return {key: value for key, value in collator(features).items() if key not in LOSS_ONLY_KEYS}

    return collate


def arguments(cls, folder, max_steps: int = 1, **extra):
    return cls(
        output_dir=str(folder),
        max_steps=max_steps,
        per_device_train_batch_size=4,  # the batch mixes aspect ratios and a text-only row
        learning_rate=1e-3,
        logging_steps=1,
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **extra,
    )


def freeze_vocabulary(model) -> None:
    """Freeze the input embeddings and the LM head: a real tokenizer's 150k-262k rows made their gradients and Adam
    most of a tiny model's step; every other weight (towers, projector, decoder layers) still trains."""
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            module.requires_grad_(False)


def assert_same_weights(model, reference, atol: float = 1e-6) -> None:
    """Every trainable parameter of `model` equals `reference`'s (the vanilla run), and at least one has moved."""
    expected = dict(reference.named_parameters())
    trained = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trained
    for name, parameter in trained:
        assert torch.allclose(parameter, expected[name], atol=atol), name


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_family(family, tmp_path):
    model, processor = zoo.build(family)
    check_family(family, model, processor, tmp_path)


def check_family(family: str, model, processor, tmp_path) -> None:
    """Every assertion of the zoo on one family's tiny `(model, processor)` (tests/test_zoo_torchvision.py too)."""
    adapter = get_adapter(model, processor)
    tokenizer = tokenizer_of(processor)
    write_images(tmp_path)
    dataset = SupervisedDataset(records(), adapter, processor, image_folder=tmp_path, max_length=4096)

    # the supervised span of a two-turn sample: each answer plus one flagged end-of-turn token, nothing else
    eot_id = adapter.end_of_turn_id(processor)
    eot_text = tokenizer.convert_ids_to_tokens(eot_id)
    examples = [example for record, example in dataset.items if record["id"] == "s0"]
    runs = [run for example in examples for run in supervised_runs(tokenizer, example.labels)]
    decoded = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs]
    assert [text.strip() for text in decoded] == [answer + eot_text for answer in ANSWERS]
    assert all(run[-1] == eot_id and eot_id not in run[:-1] for run in runs)
    flagged = [
        token for example in examples for token, flag in zip(example.input_ids, example.end_of_turn_mask) if flag
    ]
    assert flagged == [eot_id] * len(ANSWERS)

    # the collator batches image inputs exactly as the processor batches the same images (padded tiles, sizes)
    collator = VDDataCollator.for_processor(processor)
    batch = collator([dataset[index] for index in range(len(dataset))])
    rows = [record for record, _ in dataset.items if "image" in record]
    images = [[Image.open(tmp_path / record["image"]).convert("RGB")] for record in rows]
    tokenizer_of(processor, ensure_pad=True)  # the processor's batch of rows of several lengths needs a pad token
    text = [adapter.image_placeholder(processor)] * len(rows)
    try:
        expected = processor(text=text, images=images, return_tensors="pt", padding=True, add_special_tokens=False)
    except ValueError:  # a processor that takes one flat list of images, not one list per row (GOT-OCR2)
        flat = [image for row in images for image in row]
        expected = processor(text=text, images=flat, return_tensors="pt", padding=True, add_special_tokens=False)
    image_keys = [key for key in adapter.image_inputs(processor, images[0]) if key in batch]
    assert adapter.pixel_key in image_keys
    for key in image_keys:
        got, want = batch[key], expected[key]
        same = torch.equal(got, want) if isinstance(want, torch.Tensor) else got == want  # lists: Unlimited-OCR's
        assert same, f"{family}: {key} differs from the processor's batch"

    # tau = 0 with the noisy pass on: the vanilla Trainer's loss and weights after one step of all four rows
    freeze_vocabulary(model)
    vanilla = Trainer(
        model=copy.deepcopy(model),
        args=arguments(TrainingArguments, tmp_path / "vanilla"),
        train_dataset=dataset,
        data_collator=without_loss_keys(collator),
    )
    vanilla.train()
    vd = RecordingVDTrainer(
        model=model,
        args=arguments(VDTrainingArguments, tmp_path / "vd", vd_start=0.0, vd_temperature=0.0),
        train_dataset=dataset,
        data_collator=collator,
        end_of_turn_id=eot_id,
        pixel_key=adapter.pixel_key,
    )
    vd.train()
    expected = [entry["loss"] for entry in vanilla.state.log_history if "loss" in entry]
    got = [entry["loss"] for entry in vd.state.log_history if "loss" in entry]
    assert len(got) == 1 and got == pytest.approx(expected, rel=1e-4)
    assert_same_weights(vd.model, vanilla.model)

    # d is clearly not 0 on the supervised tokens of every image row, 0 on text-only rows; every row's end-of-turn
    # tokens reach the weighting flagged
    assert len(vd.seen) == 1
    for d, mask, end_of_turn, has_image in vd.seen:
        supervised = mask[has_image].float()
        mean_abs = (d[has_image] * supervised).abs().sum(dim=1) / supervised.sum(dim=1).clamp(min=1)
        assert has_image.any() and mean_abs.gt(1e-4).all(), mean_abs  # far above float noise (~1e-6)
        assert d[~has_image].eq(0).all()
        assert not (end_of_turn & ~mask).any() and end_of_turn.sum(dim=1).ge(1).all()
