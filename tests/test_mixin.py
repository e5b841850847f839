"""`VDLossMixin` on hosts other than `Trainer`, the memory-light loss before `vd_start`, and the renamed options."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch
from tiny import tiny_llava, write_conversations, write_images
from transformers import Trainer, TrainingArguments

from vdtrain import VDLossMixin, VDTrainer, VDTrainingArguments, token_weights
from vdtrain.commands.train import load_config, parser
from vdtrain.data import SupervisedDataset, VDDataCollator, load_conversations
from vdtrain.keys import LOSS_ONLY_KEYS
from vdtrain.models import get_adapter
from vdtrain.training.config import vd_options


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mixin")
    model, processor = tiny_llava()
    names = write_images(tmp_path / "images", 4)
    write_conversations(tmp_path / "data.json", names, turns=2, text_only=1)
    records = load_conversations(tmp_path / "data.json")
    dataset = SupervisedDataset(records, get_adapter(model), processor, tmp_path / "images", max_length=256)
    batch = VDDataCollator.for_processor(processor)([dataset[i] for i in range(3)])
    return model, batch, tmp_path


class OwnLoss(Trainer):
    """A project's own trainer: its compute_loss is the causal-LM loss plus bookkeeping of its own."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.own_calls = getattr(self, "own_calls", 0) + 1
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class Noting(Trainer):
    """A project's own trainer that leaves the loss to Trainer and adds a log field."""

    def log(self, logs, start_time=None):
        logs["host_note"] = 1.0
        super().log(logs, start_time)


class VDOwnLoss(VDLossMixin, OwnLoss):
    pass


class VDNoting(VDLossMixin, Noting):
    pass


class Forwards:
    def __init__(self, model):
        self.kwargs = []
        self.handle = model.register_forward_pre_hook(
            lambda module, args, kwargs: self.kwargs.append(kwargs), with_kwargs=True
        )

    def close(self):
        self.handle.remove()


def _args(tmp_path, **kwargs):
    return VDTrainingArguments(
        **{"output_dir": str(tmp_path / "out"), "use_cpu": True, "report_to": "none", "seed": 3, **kwargs}
    )


def _loss_and_grads(trainer_cls, model, args, batch, active: bool, **kwargs):
    model = copy.deepcopy(model).train()
    trainer = trainer_cls(model=model, args=args, **kwargs)
    trainer.state.max_steps = 10
    if hasattr(trainer, "vd_active"):
        assert trainer.vd_active() == active
    forwards = Forwards(model)
    inputs = batch if isinstance(trainer, VDLossMixin) else {k: v for k, v in batch.items() if k not in LOSS_ONLY_KEYS}
    loss = trainer.compute_loss(model, dict(inputs), num_items_in_batch=batch["labels"][:, 1:].ne(-100).sum())
    loss.backward()
    forwards.close()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, trainer, forwards.kwargs


def _assert_equal(got, expected, rtol_loss=1e-6, atol_grad=1e-5):
    (loss, grads), (loss_ref, grads_ref) = got, expected
    assert torch.allclose(loss, loss_ref, rtol=rtol_loss, atol=0), (loss, loss_ref)
    assert grads.keys() == grads_ref.keys() and len(grads) > 10
    for name in grads:
        assert torch.allclose(grads[name], grads_ref[name], atol=atol_grad), name


@pytest.mark.parametrize("host,vd_host", [(OwnLoss, VDOwnLoss), (Noting, VDNoting)])
def test_mixin_on_another_host_neutral_weights_equal_the_host(setup, host, vd_host):
    model, batch, tmp_path = setup
    plain = TrainingArguments(str(tmp_path / "host"), use_cpu=True, report_to="none", seed=3)
    loss_ref, grads_ref, _, _ = _loss_and_grads(host, model, plain, batch, active=False)
    for options in ({"vd_weighting": "none"}, {"vd_temperature": 0.0}):
        loss, grads, trainer, calls = _loss_and_grads(
            vd_host, model, _args(tmp_path, vd_start=0.0, **options), batch, active=True
        )
        _assert_equal((loss, grads), (loss_ref, grads_ref))
        assert len(calls) == 2 and trainer._vd_metrics  # the training forward and the noisy one


def test_before_vd_start_a_host_with_its_own_loss_is_untouched(setup):
    model, batch, tmp_path = setup
    loss, grads, trainer, calls = _loss_and_grads(VDOwnLoss, model, _args(tmp_path, vd_start=1.0), batch, active=False)
    assert trainer.own_calls == 1 and len(calls) == 1 and "logits_to_keep" not in calls[0]
    plain = TrainingArguments(str(tmp_path / "host"), use_cpu=True, report_to="none")
    loss_ref, grads_ref, _, _ = _loss_and_grads(OwnLoss, model, plain, batch, active=False)
    assert torch.equal(loss, loss_ref)


@pytest.mark.parametrize("masked", [None, True, False])
def test_memory_light_loss_before_vd_start_equals_the_vanilla_trainer(setup, masked):
    """The default (`vd_masked_logits` unset) on VDTrainer: logits only at supervised positions, same loss."""
    model, batch, tmp_path = setup
    plain = TrainingArguments(str(tmp_path / "host"), use_cpu=True, report_to="none")
    expected = _loss_and_grads(Trainer, model, plain, batch, active=False)
    args = _args(tmp_path, vd_start=1.0, vd_masked_logits=masked)
    loss, grads, trainer, calls = _loss_and_grads(VDTrainer, model, args, batch, active=False)
    _assert_equal((loss, grads), expected[:2])
    assert len(calls) == 1  # no extra forward
    keep = calls[0].get("logits_to_keep")
    if masked is False:
        assert keep is None
    else:  # the lm_head ran only where a target is predicted
        assert keep.dtype == torch.bool and keep.sum() == batch["labels"][:, 1:].ne(-100).sum()
    model.eval()  # evaluation keeps the host's loss (and full logits for compute_metrics)
    trainer.model.eval()
    forwards = Forwards(trainer.model)
    trainer.compute_loss(trainer.model, dict(batch))
    assert "logits_to_keep" not in forwards.kwargs[0]


def test_vd_options_from_any_arguments_object():
    defaults = vd_options(TrainingArguments("x", use_cpu=True, report_to="none"))
    assert (defaults["vd_weighting"], defaults["vd_start"], defaults["vd_projector_lr"]) == ("neg", 0.5, None)
    own = SimpleNamespace(vd_temperature=2.0, projector_lr=1e-4, eos_selective=True)  # a project's own config
    with pytest.warns(FutureWarning, match="vd_projector_lr"):
        options = vd_options(own)
    assert (options["vd_temperature"], options["vd_projector_lr"], options["vd_eos_selective"]) == (2.0, 1e-4, True)
    with pytest.raises(ValueError, match="vd_start"):
        vd_options(SimpleNamespace(vd_start=1.5))
    with pytest.raises(ValueError, match="both set"):
        vd_options(SimpleNamespace(projector_lr=1e-4, vd_projector_lr=2e-4))


def test_old_option_names_warn_and_still_work(tmp_path):
    with pytest.warns(FutureWarning, match="`eos_selective` is deprecated"):
        args = _args(tmp_path, eos_selective=True, projector_lr=3e-5)
    assert (args.vd_eos_selective, args.vd_projector_lr) == (True, 3e-5)
    assert (args.eos_selective, args.projector_lr) == (True, 3e-5)  # the old attributes keep reading right
    new = _args(tmp_path, vd_eos_selective=True, vd_projector_lr=3e-5)
    assert (new.eos_selective, new.projector_lr) == (True, 3e-5)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: m\ndata_path: d.json\noutput_dir: o\nuse_cpu: true\neos_selective: true\n")
    with pytest.warns(FutureWarning, match="vd_eos_selective"):
        _, _, parsed = load_config(recipe, {"projector_lr": "2e-5"})
    assert parsed.vd_eos_selective and parsed.vd_projector_lr == 2e-5
    _, _, parsed = load_config(recipe, {"vd_projector_lr": "2e-5", "eos_selective": "false"})
    assert not parsed.vd_eos_selective and parsed.vd_projector_lr == 2e-5
    help_text = parser().format_help()
    assert "--vd_eos_selective" in help_text and "--vd_projector_lr" in help_text


def test_token_weights_spec_keyword():
    """SPEC section 3 calls the end-of-turn mask `eos_mask`: one argument with `end_of_turn_mask`, not deprecated."""
    d = torch.tensor([[0.5, -0.5, 0.0, -0.9]])
    mask = torch.tensor([[True, True, True, True]])
    end = torch.tensor([[False, False, False, True]])
    expected = token_weights(d, mask, temperature=2.0, end_of_turn_mask=end, eos_min_weight=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = token_weights(d, mask, temperature=2.0, eos_mask=end, eos_min_weight=1.5)
    assert torch.equal(spec, expected) and expected[0, 3] >= 1.5
    with pytest.raises(ValueError, match="one argument"):
        token_weights(d, mask, end_of_turn_mask=end, eos_mask=end)
