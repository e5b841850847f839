"""The encoder-decoder families of the zoo (tests/zoo_encdec.py) through `SupervisedDataset` -> `VDDataCollator` ->
`VDTrainer`, under the assertions of tests/test_zoo.py adapted to labels that are the decoder's targets:

- each question/answer pair of a two-turn sample is one example whose encoder input is what the processor makes of
  the question and the image, and whose labels decode to exactly the answer plus one flagged end-of-turn token;
- the collator pads the labels to their own length and batches the pixels as the processor does;
- two steps of `VDTrainer` at tau = 0 (vd_start 0: the noisy pass runs every step) log the vanilla `Trainer`'s losses;
- visual dependence `d` is clearly not 0 on the supervised tokens of image rows, and exactly 0 on text-only rows.

TRL's `SFTTrainer` trains causal LMs only (its fused LM head scores `labels[t]` from position `t - 1`, and its
collator makes prompt and answer one sequence), so no family here goes through `VDSFTTrainer` (`SFT_LEFT` says why
per family), which refuses an encoder-decoder model while the VD loss is on (tests/test_encoder_decoder.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
import zoo_encdec
import zoo_torchvision
from PIL import Image
from test_zoo import ANSWERS, RecordingVDTrainer, arguments, records, supervised_runs, without_loss_keys, write_images
from transformers import Trainer, TrainingArguments

from vdtrain import VDTrainingArguments
from vdtrain.data import SupervisedDataset, VDDataCollator
from vdtrain.method.passes import _decoder_setting
from vdtrain.models import DecoderPromptAdapter, EncoderDecoderAdapter, get_adapter
from vdtrain.models.base import tokenizer_of

QUESTIONS = ["describe this image.", "what color is the mat?"]
# why vanilla TRL `SFTTrainer` does not train each family (none of them: no test through VDSFTTrainer here)
SFT_LEFT = {
    "t5gemma2": (
        "vanilla SFTTrainer fails at its first step (ValueError: You must specify exactly one of input_ids or "
        "inputs_embeds): TRL builds one prompt + answer sequence and its fused LM head scores labels[t] from "
        "position t - 1, a causal LM's loss; VDSFTTrainer refuses encoder-decoder models"
    ),
    "florence2": "its processor has no chat template, so SFTTrainer cannot render `messages`",
    "udop": "its processor has no chat template (and its tokenizer wants words with boxes)",
    "vision_encoder_decoder": "its processor has no chat template; its encoder reads pixels only",
    "pp_formulanet": "its processor takes images only (no chat template); its encoder reads pixels only",
    "pix2struct": "its processor has no chat template; its encoder reads pixels only",
}


def test_every_family_is_classified():
    """Each encoder-decoder family of the group is in the zoo or left out with its reason, never both."""
    assert sorted([*zoo_encdec.FAMILIES, *zoo_encdec.LEFT]) == sorted(zoo_encdec.GROUP)
    assert set(zoo_encdec.TORCHVISION) <= set(zoo_encdec.FAMILIES)
    assert all(zoo_encdec.LEFT.values())


def test_every_family_is_classified_for_trl():
    """Every family of the zoo is listed with the reason TRL does not train it (a family TRL trains would get a
    `check_sft_family` test here, as in the other zoo modules)."""
    assert sorted(SFT_LEFT) == sorted(zoo_encdec.FAMILIES)


# families whose every sample needs an image (UDOP's encoder fuses one page per row, a vision encoder-decoder reads
# nothing else): no text-only record
IMAGE_ONLY = {"udop", "vision_encoder_decoder", "pp_formulanet", "pix2struct"}
# the processor's text arguments for a batch of 6 image rows (UDOP's: the prompt's words, each with a box; a vision
# encoder-decoder's: none, it reads the images only); by default the adapter's prompt
PROCESSOR_CALL = {
    "udop": lambda: {"text": [["q"]] * 6, "boxes": [[[0, 0, 0, 0]]] * 6},
    "vision_encoder_decoder": dict,
    "pp_formulanet": dict,
    "pix2struct": dict,
}


@pytest.mark.parametrize("family", [family for family in zoo_encdec.FAMILIES if family not in zoo_encdec.TORCHVISION])
def test_family(family, tmp_path):
    model, processor = zoo_encdec.build(family)
    check_encdec_family(family, model, processor, tmp_path, text_only=family not in IMAGE_ONLY)


@pytest.mark.torchvision
@pytest.mark.parametrize("family", zoo_encdec.TORCHVISION)
def test_torchvision_family(family, tmp_path):
    """The families whose image processor needs torchvision: deselected by the main CI (`-m "not torchvision"`), run
    by scripts/ci_torchvision.sh."""
    zoo_torchvision.require_torchvision()
    model, processor = zoo_encdec.build(family)
    check_encdec_family(family, model, processor, tmp_path, text_only=family not in IMAGE_ONLY)


def check_encdec_family(family: str, model, processor, tmp_path, text_only: bool = True) -> None:
    """Every assertion of this file on one encoder-decoder family's tiny `(model, processor)`; `text_only`: the data
    has a text-only sample too."""
    assert model.config.is_encoder_decoder
    adapter = get_adapter(model, processor)
    assert isinstance(adapter, EncoderDecoderAdapter)
    tokenizer = tokenizer_of(processor)
    write_images(tmp_path)
    data = [record for record in records() if text_only or "image" in record]
    dataset = SupervisedDataset(data, adapter, processor, image_folder=tmp_path, max_length=4096)
    image = Image.open(tmp_path / "img0.png").convert("RGB")

    # one example per question/answer pair: the processor's encoding of the question and the image (or, where the
    # encoder reads pixels only, the question as the decoder's unsupervised prefix), then the answer plus one flagged
    # end-of-turn token as the decoder's labels
    eot_id = adapter.end_of_turn_id(processor)
    eot_text = tokenizer.convert_ids_to_tokens(eot_id)
    examples = [example for record, example in dataset.items if record["id"] == "s0"]
    assert len(examples) == len(ANSWERS)
    for example, question, answer in zip(examples, QUESTIONS, ANSWERS):
        supervised = [label for label in example.labels if label != -100]
        if isinstance(adapter, DecoderPromptAdapter):
            decoder = example.extra["decoder_input_ids"]
            assert example.input_ids == [] and len(decoder) == len(example.labels)
            assert decoder[0] == _decoder_setting(model.config, "decoder_start_token_id")
            assert question in tokenizer.decode(decoder)
            prompt = len(example.labels) - len(supervised)
            assert example.labels[:prompt] == [-100] * prompt and prompt > 0  # the question: input, never a target
            assert decoder[prompt + 1 :] == supervised[:-1]  # teacher forcing: input t + 1 is target t
        else:
            assert example.input_ids == adapter.encoder_inputs(processor, question, image)["input_ids"][0].tolist()
            assert question in tokenizer.decode(example.input_ids)
            image_tokens = example.input_ids.count(adapter.image_token_id(processor))
            assert image_tokens == adapter.num_image_tokens(processor, image.size)  # UDOP's patches join the words
            assert supervised == example.labels  # nothing unsupervised in the decoder's labels
        assert supervised_runs(tokenizer, example.labels) == [supervised]
        decoded = tokenizer.decode(supervised, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert decoded.strip() == answer + eot_text
        assert supervised[-1] == eot_id and eot_id not in supervised[:-1]
        assert example.end_of_turn_mask == [False] * (len(example.labels) - 1) + [True]

    # the collator pads labels (and decoder inputs) to the longest labels and the encoder fields to the longest input,
    # and batches the pixels as the processor batches the same images
    collator = VDDataCollator.for_processor(processor)
    batch = collator([dataset[index] for index in range(len(dataset))])
    assert batch["labels"].shape == batch["end_of_turn_mask"].shape == (len(dataset), max(map(len, labels(dataset))))
    if isinstance(adapter, DecoderPromptAdapter):
        assert "input_ids" not in batch and batch["decoder_input_ids"].shape == batch["labels"].shape
    else:
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert batch["input_ids"].shape[1] == max(len(example.input_ids) for _, example in dataset.items)
        assert batch["input_ids"].shape[1] != batch["labels"].shape[1]  # a test that could tell the lengths apart
    rows = [record for record, _ in dataset.items if "image" in record]
    images = [Image.open(tmp_path / record["image"]).convert("RGB") for record in rows]
    call = PROCESSOR_CALL.get(family, lambda: {"text": [adapter.prompt("q", processor)] * len(rows)})()
    tokenizer_of(processor, ensure_pad=True)  # the processor pads its batch (rows of one length here)
    nested = [[image] for image in images] if call else images
    expected = processor(**call, images=nested, return_tensors="pt", padding=True)
    assert torch.equal(batch[adapter.pixel_key], expected[adapter.pixel_key])

    # tau = 0 with the noisy pass every step: the vanilla Trainer's losses, batch for batch
    vanilla = Trainer(
        model=copy.deepcopy(model),
        args=arguments(TrainingArguments, tmp_path / "vanilla", max_steps=2),  # every Q/A example
        train_dataset=dataset,
        data_collator=without_loss_keys(collator),
    )
    vanilla.train()
    vd = RecordingVDTrainer(
        model=model,
        args=arguments(VDTrainingArguments, tmp_path / "vd", max_steps=2, vd_start=0.0, vd_temperature=0.0),
        train_dataset=dataset,
        data_collator=collator,
        **adapter.trainer_kwargs(processor),
    )
    vd.train()
    expected = [entry["loss"] for entry in vanilla.state.log_history if "loss" in entry]
    got = [entry["loss"] for entry in vd.state.log_history if "loss" in entry]
    assert len(got) == 2 and got == pytest.approx(expected, rel=1e-4)

    # d is clearly not 0 on the supervised tokens of every image row, 0 on text-only rows; each row's end-of-turn
    # token reaches the weighting flagged
    assert len(vd.seen) == 2
    for d, mask, end_of_turn, has_image in vd.seen:
        supervised = mask[has_image].float()
        mean_abs = (d[has_image] * supervised).abs().sum(dim=1) / supervised.sum(dim=1).clamp(min=1)
        assert has_image.any() and mean_abs.gt(1e-4).all(), mean_abs  # far above float noise (~1e-6)
        assert d[~has_image].eq(0).all() and (text_only or has_image.all())
        assert not (end_of_turn & ~mask).any() and end_of_turn.sum(dim=1).eq(1).all()


def labels(dataset) -> list[list[int]]:
    return [example.labels for _, example in dataset.items]


@pytest.mark.torchvision
def test_pp_formulanet_lora_is_refused_with_the_way_out():
    """PEFT looks up the input embeddings, which transformers does not implement for PP-FormulaNet: vdtrain says so
    and names full fine-tuning, which prepares the model."""
    from vdtrain.errors import InputError
    from vdtrain.models.arguments import ModelArguments
    from vdtrain.models.loading import prepare_for_training

    zoo_torchvision.require_torchvision()
    model, processor = zoo_encdec.build("pp_formulanet")
    adapter = get_adapter(model, processor)
    with pytest.raises(InputError, match=r"lora: false"):
        prepare_for_training(model, adapter, ModelArguments(model_name_or_path="tiny"), gradient_checkpointing=False)
    prepare_for_training(model, adapter, ModelArguments(model_name_or_path="tiny", lora=False), False)
    assert any(param.requires_grad for name, param in model.named_parameters() if "decoder" in name)
