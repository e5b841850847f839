"""The VD loss on an encoder-decoder model (`config.is_encoder_decoder`): `labels` are the decoder's targets, predicted
at their own positions (no causal shift), and the decoder inputs are the labels shifted right as the model builds them.
Checked against a hand computation from two explicit forwards of the model given `labels` (so it builds its own
decoder inputs): the clean one and one on exactly the noised pixels `VDTrainer` drew."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import zoo_encdec
from test_zoo import records, write_images

from vdtrain import VDTrainer, VDTrainingArguments
from vdtrain.data import SupervisedDataset, VDDataCollator
from vdtrain.keys import END_OF_TURN_MASK, HAS_IMAGE
from vdtrain.method.passes import decoder_input_ids, label_shift, supervised_mask, targets_at
from vdtrain.models import get_adapter
from vdtrain.training.batches import has_token_labels


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("encdec")
    model, processor = zoo_encdec.build("t5gemma2")  # no dropout: the training forward is the eval-mode one
    write_images(tmp_path)
    adapter = get_adapter(model, processor)
    dataset = SupervisedDataset(records(), adapter, processor, image_folder=tmp_path, max_length=256)
    features = [dataset[index] for index in (0, 1, 2, len(dataset) - 1)]  # two images' turns, a text-only row
    batch = VDDataCollator.for_processor(processor)(features)
    return model, processor, adapter, batch, tmp_path


class Recording(VDTrainer):
    """Keeps `d`, the mask and the weights that reach the weighting hook."""

    def compute_token_weights(self, d, mask, end_of_turn_mask):
        weights = super().compute_token_weights(d, mask, end_of_turn_mask)
        self.seen = (d.clone(), mask.clone(), weights.clone())
        return weights


def test_shift_and_masks_of_an_encoder_decoder_batch(setup):
    model, _, _, batch, _ = setup
    labels = batch["labels"]
    assert label_shift(model) == 0 and labels.shape[1] != batch["input_ids"].shape[1]
    assert has_token_labels(batch, aligned=False) and not has_token_labels(batch, aligned=True)
    # every label, position 0 included, is a target, predicted at its own position
    assert torch.equal(supervised_mask(labels, 0), labels != -100) and bool(supervised_mask(labels, 0)[:, 0].all())
    assert torch.equal(targets_at(labels, 0), labels != -100)
    # the decoder inputs are what the model builds from labels itself: start token, labels shifted right, -100 -> pad
    built = decoder_input_ids(model, labels)
    assert built[:, 0].eq(model.config.decoder.bos_token_id).all()
    assert torch.equal(built[:, 1:], labels[:, :-1].masked_fill(labels[:, :-1] == -100, model.config.pad_token_id))


def test_d_and_weights_equal_two_explicit_forwards(setup):
    model, _, adapter, batch, tmp_path = setup
    args = VDTrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", seed=5, vd_start=0.0, vd_temperature=2.0
    )
    trainer = Recording(model=model, args=args, **adapter.trainer_kwargs(setup[1]))
    trainer.state.max_steps = 4
    assert trainer.vd_active()
    pixels = []
    hook = model.register_forward_pre_hook(
        lambda module, a, kw: pixels.append(kw.get("pixel_values")), with_kwargs=True
    )
    model.train()
    try:
        loss = trainer.compute_loss(model, dict(batch))
    finally:
        hook.remove()
    noisy_pixels, clean_pixels = pixels  # the noisy pass runs first, then the training forward
    assert torch.equal(clean_pixels, batch["pixel_values"]) and not torch.equal(noisy_pixels, clean_pixels)

    # by hand: log p of each label at its own position, from the model given `labels` (its own decoder inputs)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", END_OF_TURN_MASK, HAS_IMAGE, "pixel_values")}
    labels, has_image, eot = batch["labels"], batch[HAS_IMAGE], batch[END_OF_TURN_MASK]
    model.eval()
    with torch.no_grad():
        logps = []
        for pixel_values in (clean_pixels, noisy_pixels):
            logits = model(**inputs, pixel_values=pixel_values, labels=labels).logits  # (B, T, V)
            logps.append(F.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0])
    mask = labels != -100
    lc, ln = logps
    d = torch.sign(lc - ln) * (1 - torch.exp(-(lc - ln).abs())) * mask * has_image[:, None]
    w = torch.zeros_like(d)
    for row in range(len(d)):
        n = int(mask[row].sum())
        w[row, mask[row]] = n * torch.softmax(2.0 * (-d[row, mask[row]]).clamp(min=0), dim=0)
    w = torch.where(eot, w.clamp(min=1.0), w) * mask
    seen_d, seen_mask, seen_w = trainer.seen
    assert torch.equal(seen_mask, mask)
    assert torch.allclose(seen_d, d, atol=1e-5) and d[has_image].abs().sum() > 1e-2 and d[~has_image].eq(0).all()
    assert torch.allclose(seen_w * mask, w, atol=1e-5) and not torch.allclose(w[mask], torch.ones_like(w[mask]))
    nll = -lc[mask]
    assert torch.allclose(loss.detach(), (nll * w[mask]).sum() / mask.sum(), rtol=1e-5)


def test_vdsfttrainer_refuses_an_encoder_decoder_model(setup, tmp_path):
    from test_zoo_sft import config, rows

    from vdtrain.integrations.trl import VDSFTConfig, VDSFTTrainer

    model, processor, *_ = setup
    with pytest.raises(ValueError, match="encoder-decoder model"):
        VDSFTTrainer(
            model=model,
            args=config(VDSFTConfig, tmp_path, vd_start=0.0),
            train_dataset=rows(),
            processing_class=processor,
        )


def test_filter_scores_of_an_encoder_decoder_batch(setup):
    """`vdtrain filter`'s scorer on an encoder-decoder model: d of every label at its own position, per sample."""
    from vdtrain.data.samples import collate_samples, prepare_sample
    from vdtrain.filtering.scoring import score_batch
    from vdtrain.method.noise import add_diffusion_noise
    from vdtrain.models.base import pad_token_id

    model, processor, adapter, _, tmp_path = setup
    samples = [
        prepare_sample(record, index, adapter, processor, tmp_path, max_length=256, seed=1)
        for index, record in enumerate(records())
    ]
    batch = collate_samples(samples, pad_token_id(processor))
    stats = score_batch(model.eval(), batch, noise_step=900, pixel_key="pixel_values")

    inputs = dict(batch["inputs"])
    labels, clean = inputs.pop("labels"), inputs.pop("pixel_values")
    noisy = add_diffusion_noise(clean, 900, noise=batch["noise"])
    with torch.no_grad():
        logps = [
            F.log_softmax(model(**inputs, pixel_values=pixels, labels=labels).logits.float(), -1).gather(
                -1, labels.clamp(min=0)[..., None]
            )[..., 0]
            for pixels in (clean, noisy)
        ]
    mask = labels != -100
    d = torch.sign(logps[0] - logps[1]) * (1 - torch.exp(-(logps[0] - logps[1]).abs())) * mask
    d = d * batch[HAS_IMAGE][:, None]
    per_sample = torch.zeros(len(samples), dtype=torch.float64).index_add_(0, batch["owner"], d.sum(dim=1).double())
    counts = torch.zeros(len(samples), dtype=torch.float64).index_add_(0, batch["owner"], mask.sum(dim=1).double())
    assert torch.allclose(stats[:, 0], per_sample, atol=1e-5) and stats[:3, 0].abs().gt(1e-3).all()
    assert torch.equal(stats[:, 1], counts) and stats[3, 0] == 0  # every label counted; the text-only sample: d = 0


# (a tiny Florence-2 ends at once)
@pytest.mark.parametrize("family", ["t5gemma2", "udop", "vision_encoder_decoder", "pix2struct"])
def test_generation_decodes_the_decoder_tokens_only(family, tmp_path):
    """`vdtrain eval`'s greedy generation on an encoder-decoder model: the answer is every token the decoder wrote
    after its prefix (start token, and the question where the encoder reads pixels only), not cut by the encoder's
    prompt length."""
    from PIL import Image

    from vdtrain.evaluation.decoding import DecodingOptions
    from vdtrain.evaluation.generate import generate_batch

    model, processor = zoo_encdec.build(family)
    adapter, tokenizer = get_adapter(model, processor), processor.tokenizer
    images = [Image.new("RGB", (40, 32), "red"), Image.new("RGB", (32, 40), "blue")]
    questions = ["what color is it?", "describe this picture for me."]
    options = DecodingOptions(max_new_tokens=4)
    answers = generate_batch(model, processor, adapter, questions, images, options)
    expected = []  # each prompt alone, unpadded (a learned-position decoder reads a padded prompt shifted)
    for question, image in zip(questions, images):
        inputs = adapter.generation_inputs(processor, [adapter.prompt(question, processor)], [image])
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        prefix = inputs["decoder_input_ids"].shape[1] if "decoder_input_ids" in inputs else 1  # the start token
        assert output.shape[1] == prefix + 4 and inputs.get("input_ids", output).shape[1] > 4  # the old cut: none
        expected.append(tokenizer.decode(output[0, prefix:], skip_special_tokens=True).strip())
    assert answers == expected
    assert all(answers) and not any("Question" in answer for answer in answers)
    with pytest.raises(ValueError, match="encoder-decoder"):
        generate_batch(model, processor, adapter, questions, images, DecodingOptions(decoding="vcd"))


@pytest.mark.parametrize("family", ["t5gemma2", "florence2", "udop", "vision_encoder_decoder", "pix2struct"])
def test_lora_targets_are_text_linears_only(family):
    """The adapter's LoRA regex (PEFT full-matches module names) picks the text encoder's and the decoder's linears,
    attention and MLP, and no module of the vision side."""
    import re

    model, processor = zoo_encdec.build(family)
    adapter = get_adapter(model, processor)
    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    picked = [name for name in linears if re.fullmatch(adapter.lora_target_modules, name)]
    vision = ("vision", "patch", "projector")
    seen = [name for name in picked if any(part in name for part in vision) or name.startswith("encoder.layers.")]
    assert picked and not seen  # (a vision encoder-decoder's ViT is its `encoder.layers`)
    assert any("decoder" in name for name in picked)
    assert any(re.search(r"\.(q_proj|q|query)$", name) for name in picked)
    attention = [name for name in linears if "decoder" in name and re.search(r"attn|attention", name, re.IGNORECASE)]
    assert attention and not [name for name in attention if name not in picked]
    # the vision fragments (frozen with freeze_vision_tower) name no text parameter
    params = [name for name, _ in model.named_parameters()]
    frozen = [name for name in params if any(fragment in name for fragment in adapter.vision_modules)]
    assert not [name for name in frozen if "decoder" in name or "language_model" in name or "text_model" in name]


def test_pix2struct_vqa_processor_is_refused():
    """A Pix2Struct VQA processor renders the question into the image, which the noisy pass would erase with it: the
    adapter says so instead of training on `d` of image and question together; a captioning one gives patches whose
    row and column channels the collator declares as coordinates."""
    from PIL import Image

    from vdtrain.errors import UsageError
    from vdtrain.models.base import COORDINATE_DIMS

    model, processor = zoo_encdec.build("pix2struct")
    adapter = get_adapter(model, processor)
    inputs = adapter.image_inputs(processor, [Image.new("RGB", (48, 32), "red")])
    assert inputs[COORDINATE_DIMS] == {"flattened_patches": 2}
    patches = inputs["flattened_patches"][0]
    rows, columns = patches[inputs["attention_mask"][0].bool(), :2].T
    assert rows.min() == columns.min() == 1 and rows.max() * columns.max() <= patches.shape[0]  # 1-based indices
    processor.image_processor.is_vqa = True
    with pytest.raises(UsageError, match="VQA"):
        adapter.image_inputs(processor, [Image.new("RGB", (48, 32), "red")])
