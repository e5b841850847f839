"""The zoo's older image-text families (tests/zoo_old.py: BLIP, GIT, ...) under exactly the assertions of
tests/test_zoo.py, and the families transformers maps as image-text-to-text that the VD loss cannot apply to
(Evolla: proteins, no image; PI0/PI0.5: action regression, no token labels), which `VDTrainer` must train exactly as
`Trainer` does, with one warning that the VD loss is off."""

from __future__ import annotations

import logging

import pytest
import test_zoo
import torch
import zoo_old
import zoo_torchvision
from datasets import Dataset
from PIL import Image
from test_drop_in import TIMING
from test_zoo import check_family
from transformers import Trainer, TrainingArguments

from vdtrain import VDTrainer, VDTrainingArguments
from vdtrain.data.samples import collate_samples, prepare_sample
from vdtrain.keys import COORDINATE_CHANNELS
from vdtrain.method.passes import batch_dependence
from vdtrain.models import get_adapter
from vdtrain.models.base import tokenizer_of

# families without a chat template: SFTTrainer refuses their processors ("does not have a chat template")
NO_CHAT_TEMPLATE = ("blip", "git", "instructblip", "instructblipvideo", "kosmos_2", "kosmos_2_5")
# families with a chat template that TRL's SFTTrainer does not train as their format, and why
SFT_NOT_DONE = {
    "idefics": "TRL's vision collator calls processor(text=rendered, images=row_images); IdeficsProcessor interleaves"
    " them itself: it appends each row's images after the text as <fake_token_around_image><image>"
    "<fake_token_around_image> and prepends a second BOS, so the template's own <image> and the appended one both"
    " stand for one image (measured: two <image> ids, pixel_values (1, 1, 3, 32, 32)); not tried with a template"
    " that writes no image (time)",
}


def test_every_family_is_classified():
    """Every family of the group is in the zoo or in LEFT (with its reason), never both; TRL's are classified too."""
    group = ["idefics", "kosmos_2", "kosmos_2_5", "git", "blip", "instructblip", "instructblipvideo", "evolla"]
    group += ["diffusion_gemma", "pi0", "pi05"]
    assert sorted([*zoo_old.FAMILIES, *zoo_old.LEFT]) == sorted(group)
    assert set(zoo_old.DROP_IN) <= set(zoo_old.LEFT) and all(zoo_old.LEFT.values())
    assert set(zoo_old.TORCHVISION) <= set(zoo_old.FAMILIES)
    assert sorted([*NO_CHAT_TEMPLATE, *SFT_NOT_DONE]) == sorted(zoo_old.FAMILIES)


@pytest.mark.parametrize("family", [family for family in zoo_old.FAMILIES if family not in zoo_old.TORCHVISION])
def test_family(family, tmp_path, monkeypatch):
    model, processor = zoo_old.build(family)
    if family in (*zoo_old.IMAGE_EVERY_ROW, *zoo_old.ROW_BATCHED, *zoo_old.IMAGES_ONLY):
        image_rows = [record for record in test_zoo.records() if "image" in record]
        monkeypatch.setattr(test_zoo, "records", lambda: image_rows)
    check_family(family, model, processor, tmp_path)


def _static_clip_processor(processor):
    """The family's processor, reading a row of one image as the static clip the adapter gives it.

    check_family compares the collator's pixels with the processor's batch of each row's images (`[[image]]`), which
    a video processor reads as a one-frame video, one that the `num_query_tokens * 4` video tokens of its own text do
    not fit (the model fails on it); this processor hands the real video processor the clip of `frames` copies instead
    (`frames` counted on the processor's text), so the comparison is with the processor's batch of the clips."""
    from transformers import InstructBlipVideoProcessor

    ids = processor(text="", images=Image.new("RGB", (32, 32)))["input_ids"][0]
    frames = ids.count(processor.tokenizer.convert_tokens_to_ids("<video>")) // processor.num_query_tokens

    class StaticClipProcessor(InstructBlipVideoProcessor):
        def __call__(self, images=None, text=None, **kwargs):
            if isinstance(images, list) and all(isinstance(row, list) and len(row) == 1 for row in images):
                images = [row * frames for row in images]
            return super().__call__(images=images, text=text, **kwargs)

    parts = ("video_processor", "tokenizer", "qformer_tokenizer")
    return StaticClipProcessor(
        **{part: getattr(processor, part) for part in parts}, num_query_tokens=processor.num_query_tokens
    )


@pytest.mark.torchvision
@pytest.mark.parametrize("family", zoo_old.TORCHVISION)
def test_torchvision_family(family, tmp_path):
    """The families whose processor needs torchvision (InstructBLIP-Video's video processor): deselected by the main
    CI (`-m "not torchvision"`), run by scripts/ci_torchvision.sh."""
    zoo_torchvision.require_torchvision()
    model, processor = zoo_old.build(family)
    check_family(family, model, _static_clip_processor(processor), tmp_path)


@pytest.mark.torchvision
def test_instructblipvideo_images_are_static_clips():
    """An image is the processor's own encoding of the clip of `frames` copies of it, `frames` being what the
    processor's text assumes (its video tokens per query token: 4), and stands for those video tokens."""
    zoo_torchvision.require_torchvision()
    model, processor = zoo_old.build("instructblipvideo")
    adapter = get_adapter(model, processor)
    image = Image.new("RGB", (48, 32), "red")
    own = processor(text="Question: hi Answer:", images=[[image] * 4], return_tensors="pt")
    video_id = model.config.video_token_id
    assert adapter.frames(processor) == 4 and adapter.image_token_id(processor) == video_id
    tokens = model.config.num_query_tokens * 4
    assert adapter.num_image_tokens(processor, image.size) == int(own["input_ids"].eq(video_id).sum()) == tokens
    pixels = adapter.image_inputs(processor, [image])["pixel_values"]
    assert pixels.shape == (1, 4, 3, 32, 32) and torch.equal(pixels, own["pixel_values"])
    assert torch.equal(pixels[0, 0], pixels[0, 3])  # static: every frame the image


INSTRUCTIONS = ["what is on the mat?", "describe."]


@pytest.mark.parametrize("family", ["instructblip", pytest.param("instructblipvideo", marks=pytest.mark.torchvision)])
def test_the_qformer_reads_each_rows_instruction(family, tmp_path):
    """InstructBLIP's Q-Former reads the sample's instruction, as `processor(images, text=prompt)` gives it at
    inference: each image row's collated `qformer_input_ids` are the Q-Former tokenizer's encoding of the prompt
    before the first answer (a two-turn sample: its first question), padded to their own length; text-only rows add
    none; the Arrow-cached datasets give the same batch; generation gives the Q-Former the same ids."""
    if family in zoo_old.TORCHVISION:
        zoo_torchvision.require_torchvision()
    from vdtrain.data import SupervisedDataset, VDDataCollator

    model, processor = zoo_old.build(family)
    adapter = get_adapter(model, processor)
    test_zoo.write_images(tmp_path)
    turns = [("human", f"<image>\n{INSTRUCTIONS[0]}"), ("gpt", "a cat."), ("human", "and its color?"), ("gpt", "red.")]
    records = [
        {"id": "a", "image": "img0.png", "conversations": [{"from": f, "value": v} for f, v in turns]},
        {"id": "t", "conversations": [{"from": "human", "value": "say yes."}, {"from": "gpt", "value": "yes."}]},
        {"id": "b", "image": "img1.png", "conversations": [{"from": "human", "value": f"<image>\n{INSTRUCTIONS[1]}"},
                                                         {"from": "gpt", "value": "a dog."}]},
    ]  # fmt: skip
    collator = VDDataCollator.for_processor(processor)
    dataset = SupervisedDataset(records, adapter, processor, image_folder=tmp_path, max_length=4096)
    batch = collator([dataset[index] for index in range(len(dataset))])
    qformer = processor.qformer_tokenizer
    expected = [f"Question: {instruction} Answer:" for instruction in INSTRUCTIONS]
    ids, mask = batch["qformer_input_ids"], batch["qformer_attention_mask"]
    assert [qformer.decode(row[row_mask.bool()], skip_special_tokens=True) for row, row_mask in zip(ids, mask)] == (
        expected
    )
    assert [row[row_mask.bool()].tolist() for row, row_mask in zip(ids, mask)] == qformer(expected)["input_ids"]
    assert mask.sum(dim=1).tolist() == [len(row) for row in qformer(expected)["input_ids"]]
    assert ids[1][~mask[1].bool()].eq(qformer.pad_token_id).all() and not mask[1].all()  # the short row padded
    assert batch["pixel_values"].shape[0] == ids.shape[0] == 2 and batch["has_image"].tolist() == [True, False, True]

    source = Dataset.from_list([{**record, "image": record.get("image")} for record in records])
    for lazy in (True, False):
        cached = SupervisedDataset(
            source, adapter, processor, image_folder=tmp_path, max_length=4096, cache_dir=tmp_path / "c", lazy=lazy
        )
        again = collator([cached[index] for index in range(len(cached))])
        assert again.keys() == batch.keys() and all(torch.equal(again[key], batch[key]) for key in batch), lazy

    images = [Image.open(tmp_path / name).convert("RGB") for name in ("img0.png", "img1.png")]
    prompts = [adapter.prompt(instruction, processor) for instruction in INSTRUCTIONS]
    generation = adapter.generation_inputs(processor, prompts, images)
    assert torch.equal(generation["qformer_input_ids"], ids)
    assert torch.equal(generation["qformer_attention_mask"], mask)
    with torch.no_grad():
        out = model.generate(**generation, max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 2


def test_kosmos25_noise_keeps_the_patch_coordinates(tmp_path):
    """Kosmos-2.5's adapter names the two coordinate channels of its flattened patches; the collator passes them on
    per row and the filter scorer's noised pass keeps them (noised, the row/column embedders index out of range)."""
    model, processor = zoo_old.build("kosmos_2_5")
    adapter = get_adapter(model, processor)
    test_zoo.write_images(tmp_path)
    samples = [
        prepare_sample(record, index, adapter, processor, tmp_path, max_length=4096, seed=0)
        for index, record in enumerate(test_zoo.records())
        if "image" in record
    ]
    batch = collate_samples(samples, tokenizer_of(processor, ensure_pad=True).pad_token_id)
    assert batch[COORDINATE_CHANNELS].tolist() == [2] * len(batch["owner"])
    assert COORDINATE_CHANNELS not in batch["inputs"]  # the model's forward never sees it
    d, _ = batch_dependence(model, batch, noise_step=999, pixel_key=adapter.pixel_key)
    assert d.isfinite().all() and d.abs().gt(1e-6).any()
    with pytest.raises(IndexError):  # what the noise does to the coordinates when nothing keeps them
        batch_dependence(model, {**batch, COORDINATE_CHANNELS: None}, noise_step=999, pixel_key=adapter.pixel_key)


def test_kosmos25_generation_batch_places_the_image_after_left_padding():
    """Kosmos-2.5's processor writes image_embeds_position_mask from position 0 even when it pads on the left; the
    adapter's generation batch marks each row's own BOS copies, so a padded row scores as it does alone."""
    model, processor = zoo_old.build("kosmos_2_5")
    adapter = get_adapter(model, processor)
    prompts = [adapter.prompt(question, processor) for question in ("What is written here?", "Hi")]
    image = Image.new("RGB", (40, 32), "red")
    batch = adapter.generation_inputs(processor, prompts, [image, image])
    tokenizer = tokenizer_of(processor)
    boi, eoi = (tokenizer.convert_tokens_to_ids(token) for token in ("<image>", "</image>"))
    for ids, mask in zip(batch["input_ids"].tolist(), batch["image_embeds_position_mask"].tolist()):
        start, end = ids.index(boi), ids.index(eoi)
        assert [position for position, flag in enumerate(mask) if flag == 1] == list(range(start + 1, end))
    alone = adapter.generation_inputs(processor, prompts[1:], [image])
    assert batch["attention_mask"][1].eq(0).any()  # the short row is padded
    with torch.no_grad():
        together, single = model(**batch).logits[1, -1], model(**alone).logits[0, -1]
    assert torch.allclose(together, single, atol=1e-4)


@pytest.mark.parametrize("family", zoo_old.IMAGE_EVERY_ROW)
def test_a_text_only_row_fails_in_the_model_itself(family):
    """Why those families' zoo data have no text-only row: the model's own forward fails on the processor's batch
    of an image row and a text row (the image batch is one row short)."""
    model, processor = zoo_old.build(family)
    tokenizer_of(processor, ensure_pad=True)
    images = processor(text=["a", "b"], images=[Image.new("RGB", (32, 32))] * 2, return_tensors="pt")
    texts = processor(text=["a cat.", "a dog.", "say yes."], return_tensors="pt", padding=True)
    with pytest.raises(RuntimeError, match="size of tensor|Sizes of tensors"):
        model(**texts, pixel_values=images["pixel_values"], labels=texts["input_ids"])


def test_kosmos2_examples_are_the_processors_own_ids():
    """Kosmos-2's adapter puts the image where the processor does: its example of a one-turn sample is the
    processor's ids and image_embeds_position_mask of the same text, plus the supervised EOS closing the answer."""
    model, processor = zoo_old.build("kosmos_2")
    adapter = get_adapter(model, processor)
    messages = [
        {"role": "user", "content": "<image>\ndescribe this image."},
        {"role": "assistant", "content": "blue."},
    ]
    (example,) = adapter.encode(messages, processor, adapter.num_image_tokens(processor, (32, 32)))
    own = processor(text="Question: describe this image. Answer: blue.", images=Image.new("RGB", (32, 32)))
    eos = tokenizer_of(processor).eos_token_id
    assert example.input_ids == [*own["input_ids"], eos]
    assert example.extra["image_embeds_position_mask"] == [*own["image_embeds_position_mask"], 0]
    assert sum(own["image_embeds_position_mask"]) == model.config.latent_query_num
    supervised = [token for token, label in zip(example.input_ids, example.labels) if label != -100]
    assert tokenizer_of(processor).decode(supervised) == "blue.</s>" and example.end_of_turn_mask[-1]


def test_diffusion_gemma_returns_no_loss_for_trainer(tmp_path):
    """Why DiffusionGemma is LEFT: its forward takes no labels, so vanilla `Trainer` has no loss to train."""
    ids = torch.randint(3, 290, (4, 10), generator=torch.Generator().manual_seed(0)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "decoder_input_ids": [row[:8] for row in ids], "labels": ids})
    args = TrainingArguments(
        str(tmp_path), max_steps=1, per_device_train_batch_size=2, use_cpu=True, report_to="none", disable_tqdm=True
    )
    with pytest.raises(ValueError, match="The model did not return a loss from the inputs"):
        Trainer(model=zoo_old.diffusion_gemma(), args=args, train_dataset=data).train()


def _run(cls, args_cls, family, folder, **extra):
    model, dataset = zoo_old.DROP_IN[family]()
    args = args_cls(
        output_dir=str(folder), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
        use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, seed=0, remove_unused_columns=False,
        **extra,
    )  # fmt: skip
    trainer = cls(model=model, args=args, train_dataset=dataset)
    trainer.train()
    history = [{k: v for k, v in entry.items() if not k.endswith(TIMING)} for entry in trainer.state.log_history]
    return history, {name: parameter.detach().clone() for name, parameter in model.named_parameters()}, trainer


@pytest.mark.parametrize("family", list(zoo_old.DROP_IN))
def test_vdtrainer_trains_as_trainer_where_the_vd_loss_does_not_apply(family, tmp_path, caplog):
    """vd_start 0: the same logs and weights as `Trainer` (PI0 samples its flow-matching time and noise from the
    same seeded RNG), and one warning at construction saying why the VD loss is off."""
    vanilla = _run(Trainer, TrainingArguments, family, tmp_path / "vanilla")
    with caplog.at_level(logging.WARNING, logger="vdtrain"):
        vd = _run(VDTrainer, VDTrainingArguments, family, tmp_path / "vd", vd_start=0.0)
    assert vd[0] == vanilla[0] and len(vd[0]) == 3 and vd[0][0]["loss"] > 0
    assert vd[1].keys() == vanilla[1].keys()
    for name, weight in vd[1].items():
        assert torch.equal(weight, vanilla[1][name]), name
    off = [record.getMessage() for record in caplog.records if "VD loss is off" in record.getMessage()]
    reason = "takes no image input" if family == "evolla" else "has no language-model head"
    assert len(off) == 1 and reason in off[0], off
    assert vd[2].vd_off_reason is not None and not any("vd_mean" in entry for entry in vd[0])


def test_idefics_batches_text_only_rows_as_its_processor(tmp_path):
    """IDEFICS's processor batches pixels one entry per row (a zero image for a text-only row) and a per-token,
    per-image `image_attention_mask`; vdtrain's collator builds both for a batch with a text-only row, and VDTrainer
    trains it as `Trainer` (tau 0: its loss and weights after one step) with d = 0 on the text-only row only."""
    import copy

    from transformers.models.idefics.processing_idefics import (
        image_attention_mask_for_packed_input_ids,
        incremental_to_binary_attention_mask,
    )

    from vdtrain.data.dataset import SupervisedDataset, VDDataCollator

    model, processor = zoo_old.build("idefics")
    adapter = get_adapter(model, processor)
    test_zoo.write_images(tmp_path)
    dataset = SupervisedDataset(test_zoo.records(), adapter, processor, image_folder=tmp_path, max_length=4096)
    collator = VDDataCollator.for_processor(processor)
    batch = collator([dataset[index] for index in range(len(dataset))])
    has_image = [("image" in record) for record, _ in dataset.items]
    assert batch["has_image"].tolist() == has_image and not all(has_image)

    images = [[Image.open(tmp_path / record["image"]).convert("RGB")] if "image" in record else [] for record, _ in
              dataset.items]  # fmt: skip
    texts = ["x"] * len(images)
    tokenizer_of(processor, ensure_pad=True)
    expected = processor(text=texts, images=images, return_tensors="pt", padding=True)
    assert torch.equal(batch["pixel_values"], expected["pixel_values"])  # zero image where the row has none

    tokenizer = tokenizer_of(processor)
    incremental, _ = image_attention_mask_for_packed_input_ids(batch["input_ids"], tokenizer, "pt")
    own = incremental_to_binary_attention_mask(incremental, "pt", num_classes=1)
    keep = batch["attention_mask"].bool()[..., None]
    assert torch.equal(batch["image_attention_mask"] * keep, own.long() * keep)
    assert batch["image_attention_mask"][torch.tensor(has_image)].any(dim=1).all()  # image rows attend to it
    assert not batch["image_attention_mask"][~torch.tensor(has_image)].any()

    test_zoo.freeze_vocabulary(model)
    vanilla = Trainer(
        model=copy.deepcopy(model),
        args=test_zoo.arguments(TrainingArguments, tmp_path / "vanilla"),
        train_dataset=dataset,
        data_collator=test_zoo.without_loss_keys(collator),
    )
    vanilla.train()
    vd = test_zoo.RecordingVDTrainer(
        model=model,
        args=test_zoo.arguments(VDTrainingArguments, tmp_path / "vd", vd_start=0.0, vd_temperature=0.0),
        train_dataset=dataset,
        data_collator=collator,
        **adapter.trainer_kwargs(processor),
    )
    vd.train()
    expected_losses = [entry["loss"] for entry in vanilla.state.log_history if "loss" in entry]
    got = [entry["loss"] for entry in vd.state.log_history if "loss" in entry]
    assert len(got) == 1 and got == pytest.approx(expected_losses, rel=1e-4)
    test_zoo.assert_same_weights(vd.model, vanilla.model)
    for d, mask, _, rows in vd.seen:
        assert (~rows).any() and d[~rows].eq(0).all()
        supervised = mask[rows].float()
        assert ((d[rows] * supervised).abs().sum(dim=1) / supervised.sum(dim=1)).gt(1e-4).all()
