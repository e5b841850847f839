"""VDTrainer against the vanilla Trainer, the forward-pass budget, accumulation and the weighted loss by hand."""

import copy
import math

import pytest
import torch
from tiny import tiny_llava, write_conversations, write_images
from transformers import Trainer, TrainingArguments

from vdtrain import VDTrainer, VDTrainingArguments, target_logprobs, token_weights, visual_dependence
from vdtrain.data import SupervisedDataset, VDDataCollator, load_conversations
from vdtrain.keys import LOSS_ONLY_KEYS
from vdtrain.models import get_adapter


@pytest.fixture()
def setup(tmp_path):
    model, processor = tiny_llava()
    names = write_images(tmp_path / "images", 4)
    write_conversations(tmp_path / "data.json", names, turns=2, text_only=1)
    records = load_conversations(tmp_path / "data.json")
    dataset = SupervisedDataset(records, get_adapter(model), processor, tmp_path / "images", max_length=256)
    return model, processor, dataset, VDDataCollator.for_processor(processor), tmp_path


def vd_args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        vd_start=0.0,
        seed=3,
        remove_unused_columns=False,
        save_strategy="no",
        disable_tqdm=True,
    )
    return VDTrainingArguments(**{**defaults, **kwargs})


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def num_items(batch):
    return batch["labels"][:, 1:].ne(-100).sum()


@pytest.mark.parametrize("options", [{"vd_weighting": "none"}, {"vd_weighting": "neg", "vd_temperature": 0.0}])
def test_equals_vanilla_trainer_loss_and_gradients(setup, options):
    model, _, dataset, collator, tmp_path = setup
    batch = collator([dataset[i] for i in range(3)])
    plain = {k: v for k, v in batch.items() if k not in LOSS_ONLY_KEYS}

    vanilla_model = copy.deepcopy(model).train()
    vanilla = Trainer(model=vanilla_model, args=TrainingArguments(str(tmp_path / "v"), use_cpu=True, report_to="none"))
    loss_vanilla = vanilla.compute_loss(vanilla_model, plain, num_items_in_batch=num_items(batch))
    loss_vanilla.backward()

    vd_model = copy.deepcopy(model).train()
    trainer = VDTrainer(model=vd_model, args=vd_args(tmp_path, **options))
    trainer.state.max_steps = 10
    assert trainer.vd_active()
    loss = trainer.compute_loss(vd_model, batch, num_items_in_batch=num_items(batch))
    loss.backward()

    assert torch.allclose(loss, loss_vanilla, atol=1e-6)
    expected, got = grads(vanilla_model), grads(vd_model)
    assert expected.keys() == got.keys() and len(got) > 10
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-6), name


class CountingForwards:
    def __init__(self, model):
        self.grad, self.no_grad, self.training_flags, self.kwargs = 0, 0, [], []
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        if torch.is_grad_enabled():
            self.grad += 1
        else:
            self.no_grad += 1
        self.training_flags.append(module.training)
        self.kwargs.append(kwargs)


@pytest.mark.parametrize("clean_pass,extra_per_step", [("train", 1), ("eval", 2)])
def test_extra_forward_only_after_vd_start(setup, clean_pass, extra_per_step):
    model, _, dataset, collator, tmp_path = setup
    counter = CountingForwards(model)
    args = vd_args(
        tmp_path, max_steps=4, vd_start=0.5, per_device_train_batch_size=2, logging_steps=1, vd_clean_pass=clean_pass
    )
    trainer = VDTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    assert counter.grad == 4  # one training forward per step
    assert counter.no_grad == 2 * extra_per_step  # steps 2 and 3 only
    no_grad_calls = [flag for flag, kw in zip(counter.training_flags, counter.kwargs) if not flag]
    assert len(no_grad_calls) == counter.no_grad  # the extra passes run in eval mode
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [("vd_mean" in entry) for entry in logged] == [False, False, True, True]
    for entry in logged[2:]:
        assert -1 <= entry["vd_mean"] <= 1 and entry["vd_weight_max"] >= 1.0
        assert abs(entry["vd_frac_pos"] + entry["vd_frac_neg"] + entry["vd_frac_inv"] - 1) < 1e-6


def _train_one_step(model, dataset, collator, tmp_path, batch, accumulation):
    args = vd_args(
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        vd_temperature=2.0,
    )
    model = copy.deepcopy(model)
    VDTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    return dict(model.named_parameters())


def test_batch_two_equals_two_accumulated_batches_of_one(setup):
    model, _, dataset, collator, tmp_path = setup
    before = dict(model.named_parameters())
    a = _train_one_step(model, dataset, collator, tmp_path, batch=2, accumulation=1)
    b = _train_one_step(model, dataset, collator, tmp_path, batch=1, accumulation=2)
    changed = 0
    for name, param in a.items():
        assert torch.allclose(param, b[name], atol=1e-5), name
        changed += not torch.equal(param, before[name])
    assert changed > 10


class Capture(VDTrainer):
    """Overrides the documented hook to record d and the weights."""

    def compute_token_weights(self, d, mask, end_of_turn_mask):
        self.seen = (d.clone(), mask.clone(), end_of_turn_mask.clone())
        self.weights = super().compute_token_weights(d, mask, end_of_turn_mask)
        return self.weights


def test_weighted_loss_equals_hand_computation(setup):
    model, _, dataset, collator, tmp_path = setup
    batch = collator([dataset[0], dataset[1], dataset[4]])  # two image samples and the text-only one
    assert batch["has_image"].tolist() == [True, True, False]
    model.train()
    counter = CountingForwards(model)
    trainer = Capture(model=model, args=vd_args(tmp_path, vd_temperature=1.5, vd_eos_min_weight=1.2))
    trainer.state.max_steps = 10
    n = num_items(batch)
    loss = trainer.compute_loss(model, batch, num_items_in_batch=n)

    assert counter.training_flags == [False, True]  # the noisy pass runs first, before the training graph
    noisy_pixels = counter.kwargs[0]["pixel_values"]
    assert not torch.equal(noisy_pixels, batch["pixel_values"])
    labels = batch["labels"]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        lc = target_logprobs(model(**inputs).logits, labels)
        model.eval()
        ln = target_logprobs(model(**{**inputs, "pixel_values": noisy_pixels}).logits, labels)
        model.train()
    mask = labels != -100
    mask[:, 0] = False
    d = visual_dependence(lc, ln) * mask * batch["has_image"][:, None]
    eot = batch["end_of_turn_mask"]
    w = token_weights(d, mask, scheme="neg", temperature=1.5, end_of_turn_mask=eot, eos_min_weight=1.2)
    expected = -(w * lc).sum() / n
    assert torch.allclose(loss, expected, atol=1e-5)
    d_seen, _, _ = trainer.seen
    assert torch.allclose(d_seen, d, atol=1e-5)
    eot = batch["end_of_turn_mask"]
    text_only = trainer.weights[2][mask[2]]
    assert (d_seen[2] == 0).all() and torch.equal(text_only, torch.where(eot[2][mask[2]], 1.2, 1.0))
    assert eot.sum() == 5 and (trainer.weights[eot] >= 1.2).all()  # 2 + 2 turns + 1 text-only turn
    logs = {"loss": 1.0}  # the step's vd_* metrics, as the next log line carries them
    trainer.log(logs)
    values = d[mask]
    expected = {
        "vd_mean": values.mean(),
        "vd_frac_pos": (values > 0.25).float().mean(),
        "vd_frac_neg": (values < -0.25).float().mean(),
        "vd_weight_max": w[mask].max(),
    }
    for name, value in expected.items():  # logged values are rounded to 4 decimals
        assert math.isclose(logs[name], value.item(), abs_tol=6e-5), name

    # a collator without `has_image` (the user's own): the image rows come from the config's image token
    plain = Capture(model=model, args=vd_args(tmp_path, vd_temperature=1.5, vd_eos_min_weight=1.2))
    plain.state.max_steps = 10
    no_flags = {k: v for k, v in batch.items() if k != "has_image"}
    assert torch.allclose(plain.compute_loss(model, no_flags, num_items_in_batch=n), loss, atol=1e-6)
    assert torch.equal(plain.seen[0], d_seen) and (plain.seen[0][2] == 0).all()


def test_projector_learning_rate_group(setup):
    model, _, dataset, collator, tmp_path = setup
    args = vd_args(tmp_path, vd_projector_lr=1e-5, learning_rate=1e-3, weight_decay=0.1)
    trainer = VDTrainer(model=model, args=args, projector_modules=("multi_modal_projector",))
    optimizer = trainer.create_optimizer()
    projector = {id(p) for n, p in model.named_parameters() if "multi_modal_projector" in n}
    for group in optimizer.param_groups:
        in_projector = {id(p) in projector for p in group["params"]}
        assert len(in_projector) == 1
        assert group["lr"] == (1e-5 if in_projector.pop() else 1e-3)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_missing_pixel_key_is_a_clear_error(setup):
    model, _, dataset, collator, tmp_path = setup
    batch = collator([dataset[0], dataset[1]])
    batch["pixels"] = batch.pop("pixel_values")
    trainer = VDTrainer(model=model.train(), args=vd_args(tmp_path))
    trainer.state.max_steps = 10
    with pytest.raises(KeyError, match="vd_pixel_key"):
        trainer.compute_loss(model, batch)


def test_eos_selective_needs_end_of_turn_id(tmp_path):
    model, _ = tiny_llava()
    with pytest.raises(ValueError, match="end_of_turn_id"):
        VDTrainer(model=model, args=vd_args(tmp_path, vd_eos_selective=True))


def test_eos_selective_loss_in_the_trainer(setup):
    model, processor, dataset, collator, tmp_path = setup
    batch = collator([dataset[0], dataset[1]])
    eos = processor.tokenizer.eos_token_id
    model.train()
    trainer = VDTrainer(model=model, args=vd_args(tmp_path, vd_start=1.0, vd_eos_selective=True), end_of_turn_id=eos)
    trainer.state.max_steps = 10
    assert not trainer.vd_active()
    loss = trainer.compute_loss(model, batch, num_items_in_batch=num_items(batch))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        logits = model(**inputs).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits, targets = logits[keep], targets[keep]
    logits[targets != eos, eos] = float("-inf")
    expected = torch.nn.functional.cross_entropy(logits, targets, reduction="sum") / keep.sum()
    assert torch.allclose(loss, expected, atol=1e-5)
    plain = torch.nn.functional.cross_entropy(model(**inputs).logits[:, :-1][keep], targets, reduction="sum")
    assert loss < plain / keep.sum()  # removing EOS from the softmax raises every non-EOS token's probability


def test_eos_selective_with_vd_measures_d_over_the_full_softmax(setup):
    """The loss drops EOS from non-EOS softmaxes, but p_clean in d is the model's: d as with an eval clean pass."""
    model, processor, dataset, collator, tmp_path = setup
    batch = collator([dataset[0], dataset[1]])
    eos = processor.tokenizer.eos_token_id
    seen = {}
    for clean_pass in ("train", "eval"):  # the tiny model has no dropout: train- and eval-mode forwards agree
        args = vd_args(tmp_path, vd_eos_selective=True, vd_clean_pass=clean_pass)
        trainer = Capture(model=model.train(), args=args, end_of_turn_id=eos)
        trainer.state.max_steps = 10
        trainer.compute_loss(model, batch, num_items_in_batch=num_items(batch))
        seen[clean_pass] = trainer.seen[0]
    assert seen["train"].abs().sum() > 0
    assert torch.allclose(seen["train"], seen["eval"], atol=1e-5)


def test_drop_in_with_plain_training_arguments(setup):
    model, _, dataset, collator, tmp_path = setup
    trainer = VDTrainer(model=model, args=TrainingArguments(str(tmp_path / "plain"), use_cpu=True, report_to="none"))
    assert isinstance(trainer.args, VDTrainingArguments) and trainer.args.output_dir == str(tmp_path / "plain")
    assert (trainer.args.vd_weighting, trainer.args.vd_temperature, trainer.args.vd_start) == ("neg", 0.5, 0.5)
    assert VDTrainer(model=model).args.vd_noise_step == 900  # no args at all, as Trainer allows
    trainer.state.max_steps = 10
    assert not trainer.vd_active()
    with pytest.raises(ValueError, match="label_smoothing_factor"):
        VDTrainer(model=model, args=vd_args(tmp_path, label_smoothing_factor=0.1))


def test_vd_metrics_of_the_last_steps_reach_the_final_log(setup):
    model, _, dataset, collator, tmp_path = setup
    args = vd_args(tmp_path, max_steps=3, logging_steps=2, per_device_train_batch_size=2, learning_rate=1e-3)
    trainer = VDTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "vd_mean" in entry]
    assert [("loss" in entry, "train_loss" in entry) for entry in logged] == [(True, False), (False, True)]
    assert logged[0]["step"] == 2 and logged[1]["step"] == 3


def test_group_by_length_uses_the_dataset_lengths_without_reading_items(setup, monkeypatch):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    model, _, dataset, collator, tmp_path = setup
    args = vd_args(tmp_path, train_sampling_strategy="group_by_length", per_device_train_batch_size=2)
    trainer = VDTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    monkeypatch.setattr(type(dataset), "__getitem__", lambda self, i: pytest.fail("an item was read"))
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == dataset.lengths
    assert sorted(sampler) == list(range(len(dataset))) and len(set(dataset.lengths)) > 1
