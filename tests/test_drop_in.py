"""A true drop-in: where the VD loss cannot apply (a text-only causal LM, a classifier), `VDTrainer` and
`VDSFTTrainer` with `vd_start: 0` train exactly as `Trainer` and `SFTTrainer` do, through a representative set of
the trainers' own behaviours (gradient accumulation, evaluation, callbacks, checkpoint/resume, label smoothing);
`trainer.args` is the object passed; the library snippet without `remove_unused_columns=False` still sees pixels."""

from __future__ import annotations

import dataclasses
import logging
import pickle

import pytest
import torch
from datasets import Dataset
from tiny import tiny_tokenizer, write_conversations, write_images
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from trl import SFTConfig, SFTTrainer

from vdtrain import VDTrainer, VDTrainingArguments
from vdtrain.data import SupervisedDataset, VDDataCollator, load_conversations
from vdtrain.integrations.trl import VDSFTConfig, VDSFTTrainer
from vdtrain.models.loading import load_model_and_processor

TOKENIZER = tiny_tokenizer()
LENGTH = 12
# entries of the log history that measure time, not training
TIMING = ("runtime", "per_second", "total_flos")


def _config(**kwargs) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(TOKENIZER),
        max_position_embeddings=64,
        pad_token_id=TOKENIZER.pad_token_id,
        bos_token_id=TOKENIZER.bos_token_id,
        eos_token_id=TOKENIZER.eos_token_id,
        **kwargs,
    )


def causal_lm():
    torch.manual_seed(0)
    return LlamaForCausalLM(_config())


def classifier():
    torch.manual_seed(0)
    return LlamaForSequenceClassification(_config(num_labels=3))


def regressor():
    torch.manual_seed(0)
    return LlamaForSequenceClassification(_config(num_labels=1))


def multi_label():
    torch.manual_seed(0)
    return LlamaForSequenceClassification(_config(num_labels=3, problem_type="multi_label_classification"))


def _ids(count: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, len(TOKENIZER), (count, LENGTH), generator=generator).tolist()


def dataset_for(kind: str, count: int = 8, seed: int = 0) -> Dataset:
    """Fixed-length rows with the labels each head takes (an unused column, as Trainer's column filter removes)."""
    ids = _ids(count, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    if kind == "causal_lm":
        labels = [[-100] * 4 + row[4:] for row in ids]  # a prompt of 4 unsupervised tokens
    elif kind == "classifier":
        labels = torch.randint(0, 3, (count,), generator=generator).tolist()
    elif kind == "regressor":
        labels = torch.randn(count, generator=generator).tolist()
    else:
        labels = torch.randint(0, 2, (count, 3), generator=generator).float().tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": labels, "note": ["unused"] * count})


MODELS = {"causal_lm": causal_lm, "classifier": classifier, "regressor": regressor, "multi_label": multi_label}


class Recorder(TrainerCallback):
    """Every callback event with the step it came at: the same sequence for both trainers."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.events.append(("step_end", state.global_step))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.events.append(("evaluate", state.global_step))

    def on_save(self, args, state, control, **kwargs):
        self.events.append(("save", state.global_step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.events.append(("log", state.global_step))


def train(trainer_cls, kind: str, output_dir, *, vd: bool, resume: str | None = None, **overrides):
    """`(log history without timings, final weights, callback events, trainer)` of one short run."""
    options = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        max_steps=4,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="no",
        seed=7,
    )
    options.update(overrides)
    args = VDTrainingArguments(vd_start=0.0, **options) if vd else TrainingArguments(**options)
    recorder = Recorder()
    model = MODELS[kind]()
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset_for(kind),
        eval_dataset=dataset_for(kind, 4, seed=9),
        callbacks=[recorder],
    )
    trainer.train(resume_from_checkpoint=resume)
    history = [{k: v for k, v in entry.items() if not k.endswith(TIMING)} for entry in trainer.state.log_history]
    return history, {n: p.detach().clone() for n, p in model.named_parameters()}, recorder.events, trainer


def assert_same_run(vd_run, vanilla_run) -> None:
    """Identical logs (losses, eval losses, grad norms, learning rates), weights and callback events."""
    assert vd_run[0] == vanilla_run[0]
    assert vd_run[0] and any("eval_loss" in entry for entry in vd_run[0])
    assert vd_run[1].keys() == vanilla_run[1].keys()
    for name, weight in vd_run[1].items():
        assert torch.equal(weight, vanilla_run[1][name]), name
    assert vd_run[2] == vanilla_run[2]


@pytest.mark.parametrize("kind", list(MODELS))
def test_vdtrainer_trains_as_trainer_where_the_vd_loss_cannot_apply(tmp_path, kind, caplog):
    """Accumulation 2, evaluation every 2 steps, a callback; the multi-label classifier with label smoothing, which
    Trainer itself switches off for that model (VDTrainer refused it before)."""
    smoothing = {"label_smoothing_factor": 0.1} if kind in ("multi_label", "causal_lm") else {}
    vanilla = train(Trainer, kind, tmp_path / "vanilla", vd=False, **smoothing)
    with caplog.at_level(logging.WARNING, logger="vdtrain"):
        vd = train(VDTrainer, kind, tmp_path / "vd", vd=True, **smoothing)
    assert_same_run(vd, vanilla)
    assert vd[3].vd_off_reason is not None and not vd[3].vd_active()
    off = [record.getMessage() for record in caplog.records if "VD loss is off" in record.getMessage()]
    reason = "no image input" if kind == "causal_lm" else "no language-model head"
    assert len(off) == 1 and reason in off[0] and "Trainer's own loss" in off[0]
    assert not any("vd_mean" in entry for entry in vd[0])


@pytest.mark.parametrize("kind", ["causal_lm", "classifier"])
def test_resume_from_a_checkpoint_as_trainer(tmp_path, kind):
    """Save every 2 steps, then a fresh trainer resumes from checkpoint-2: the same end as Trainer's resume."""
    runs = {}
    for name, cls in (("vanilla", Trainer), ("vd", VDTrainer)):
        folder = tmp_path / name
        train(cls, kind, folder, vd=name == "vd", save_strategy="steps", save_steps=2, max_steps=2)
        runs[name] = train(cls, kind, folder, vd=name == "vd", resume=str(folder / "checkpoint-2"))
    assert_same_run(runs["vd"], runs["vanilla"])
    assert runs["vd"][3].state.global_step == 4 and ("step_end", 3) in runs["vd"][2]


def test_args_are_the_object_passed(tmp_path):
    """`trainer.args is args` for plain `TrainingArguments` too (given the vd_* defaults in place), so a change
    after construction counts as with Trainer: `args.max_steps = 2` runs 2 steps, not the 4 set before."""
    args = TrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to="none", max_steps=4, disable_tqdm=True)
    trainer = VDTrainer(model=causal_lm(), args=args, train_dataset=dataset_for("causal_lm"))
    assert trainer.args is args and isinstance(args, VDTrainingArguments) and args.vd_start == 0.5
    args.max_steps = 2
    trainer.train()
    assert trainer.state.global_step == 2
    config = SFTConfig(str(tmp_path / "sft"), use_cpu=True, report_to="none", max_steps=1, disable_tqdm=True)
    data = Dataset.from_dict({"text": ["a red cat on a blue mat."] * 4})
    sft = VDSFTTrainer(model=causal_lm(), args=config, train_dataset=data, processing_class=TOKENIZER)
    assert sft.args is config and isinstance(config, VDSFTConfig) and config.vd_temperature == 0.5


def test_model_init_and_predict_as_trainer(tmp_path):
    """`model_init=` instead of a model (the hyperparameter-search path), then `predict`: the same predictions."""
    results = []
    for cls in (Trainer, VDTrainer):
        args = TrainingArguments(
            str(tmp_path / cls.__name__), use_cpu=True, report_to="none", disable_tqdm=True, max_steps=2,
            per_device_train_batch_size=4, learning_rate=1e-2, save_strategy="no", seed=7,
        )  # fmt: skip
        trainer = cls(model_init=classifier, args=args, train_dataset=dataset_for("classifier"))
        trainer.train()
        results.append(trainer.predict(dataset_for("classifier", 4, seed=9)))
    assert torch.equal(torch.as_tensor(results[0].predictions), torch.as_tensor(results[1].predictions))
    assert results[0].metrics["test_loss"] == results[1].metrics["test_loss"]


@dataclasses.dataclass
class ProjectArguments(TrainingArguments):
    """A project's own arguments class, with a field and a method of its own."""

    curriculum: str = "easy-first"

    def hardest(self) -> bool:
        return self.curriculum == "hard-first"


def test_a_project_arguments_class_keeps_its_identity_fields_and_methods(tmp_path):
    """Given the vd_* fields by a subclass of both classes, made once; the checkpoint's `training_args.bin` (a
    pickle) loads back to the same class and values."""
    args = ProjectArguments(str(tmp_path / "out"), use_cpu=True, report_to="none", curriculum="hard-first")
    trainer = VDTrainer(model=causal_lm(), args=args)
    assert trainer.args is args and isinstance(args, ProjectArguments) and isinstance(args, VDTrainingArguments)
    assert args.hardest() and args.vd_weighting == "neg" and args.to_dict()["curriculum"] == "hard-first"
    other = ProjectArguments(str(tmp_path / "other"), use_cpu=True, report_to="none")
    assert type(VDTrainer(model=causal_lm(), args=other).args) is type(args)
    restored = pickle.loads(pickle.dumps(args))
    assert type(restored) is type(args) and restored.curriculum == "hard-first" and restored.vd_start == 0.5


def test_impossible_requests_are_refused_at_construction(tmp_path):
    """What the user asked for cannot happen on this model: refused when the trainer is built, not at vd_start."""
    args = VDTrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to="none", vd_eos_selective=True)
    with pytest.raises(ValueError, match="vd_eos_selective=True re-weights token labels; LlamaForSequenceClass"):
        VDTrainer(model=classifier(), args=args, end_of_turn_id=TOKENIZER.eos_token_id)
    args = VDTrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to="none", vd_pixel_key="pixel_values")
    with pytest.raises(ValueError, match="'pixel_values' .* is not an input of LlamaForCausalLM.forward"):
        VDTrainer(model=causal_lm(), args=args)
    args = VDTrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to="none", vd_projector_lr=1e-5)
    with pytest.raises(ValueError, match=r"vd_projector_lr=1e-05 needs VDTrainer\(projector_modules=...\)"):
        VDTrainer(model=causal_lm(), args=args)  # the projector's learning rate would silently not apply


def _sft_run(trainer_cls, config_cls, output_dir, model_fn=causal_lm, **extra):
    texts = [" ".join(TOKENIZER.convert_ids_to_tokens(row)).replace("Ġ", " ") for row in _ids(8, 3)]
    config = config_cls(
        str(output_dir),
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        max_steps=3,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="no",
        seed=7,
        **extra,
    )
    recorder = Recorder()
    model = model_fn()
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=Dataset.from_dict({"text": texts}),
        eval_dataset=Dataset.from_dict({"text": texts[:4]}),
        processing_class=TOKENIZER,
        callbacks=[recorder],
    )
    trainer.train()
    history = [{k: v for k, v in entry.items() if not k.endswith(TIMING)} for entry in trainer.state.log_history]
    return history, {n: p.detach().clone() for n, p in model.named_parameters()}, recorder.events, trainer


def test_vdsfttrainer_trains_a_text_only_causal_lm_as_sft_trainer(tmp_path):
    """TRL's text path (its tokenisation, collator, fused loss, entropy/accuracy metrics) is untouched."""
    vanilla = _sft_run(SFTTrainer, SFTConfig, tmp_path / "sft")
    vd = _sft_run(VDSFTTrainer, VDSFTConfig, tmp_path / "vd", vd_start=0.0)
    assert_same_run(vd, vanilla)
    assert "mean_token_accuracy" in vd[0][0] and vd[3].vd_off_reason is not None


def test_vdsfttrainer_fails_on_a_classifier_as_sft_trainer(tmp_path):
    """SFTTrainer does not train sequence classifiers; VDSFTTrainer fails the same way, not later or otherwise."""
    errors = []
    for cls, config_cls in ((SFTTrainer, SFTConfig), (VDSFTTrainer, VDSFTConfig)):
        with pytest.raises(Exception) as caught:
            _sft_run(cls, config_cls, tmp_path / cls.__name__, classifier)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1] and "generation_config" in errors[0][1]


class SeenBatches(VDTrainer):
    """Records the keys of every training batch the loss gets."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.seen = [*getattr(self, "seen", []), sorted(inputs)]
        return super().compute_loss(model, inputs, *args, **kwargs)


def _readme_dataset(folder, tiny_llava_dir):
    model, processor, adapter = load_model_and_processor(str(tiny_llava_dir))
    names = write_images(folder / "images", 4)
    write_conversations(folder / "data.json", names)
    dataset = SupervisedDataset(load_conversations(folder / "data.json"), adapter, processor, folder / "images")
    return model, processor, adapter, dataset


def test_readme_snippet_without_remove_unused_columns_trains_with_pixels(tmp_path, tiny_llava_dir):
    """The README's library snippet with a plain `TrainingArguments` default (`remove_unused_columns=True`): the
    column filter keeps SupervisedDataset's images, so pixels reach the model and `d` is measured."""
    model, processor, adapter, dataset = _readme_dataset(tmp_path, tiny_llava_dir)
    args = VDTrainingArguments(
        output_dir=str(tmp_path / "out"), vd_weighting="neg", vd_temperature=0.5, vd_start=0.0, max_steps=2,
        per_device_train_batch_size=2, use_cpu=True, report_to="none", logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    assert args.remove_unused_columns
    trainer = SeenBatches(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=VDDataCollator.for_processor(processor),
        **adapter.trainer_kwargs(processor),
    )
    trainer.train()
    assert len(trainer.seen) == 2 and all("pixel_values" in keys for keys in trainer.seen)
    means = [entry["vd_mean"] for entry in trainer.state.log_history if "vd_mean" in entry]
    assert len(means) == 2 and all(mean != 0 for mean in means)  # one per step (the last one also in the summary)


def test_a_batch_with_images_but_no_pixels_is_refused_at_its_first_step(tmp_path, tiny_llava_dir):
    """A collator of the user's own that loses the pixels: refused at step 1, even for a plain MLE run (vd_start 1)
    where the VD loss never switches on, instead of a silent text-only run."""
    model, processor, adapter, dataset = _readme_dataset(tmp_path, tiny_llava_dir)
    collator = VDDataCollator.for_processor(processor)

    def losing_pixels(features):
        return {key: value for key, value in collator(features).items() if key != "pixel_values"}

    args = VDTrainingArguments(
        output_dir=str(tmp_path / "out"), vd_start=1.0, max_steps=2, per_device_train_batch_size=2, use_cpu=True,
        report_to="none", disable_tqdm=True, remove_unused_columns=False,
    )  # fmt: skip
    trainer = VDTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=losing_pixels, **adapter.trainer_kwargs(processor)
    )
    with pytest.raises(KeyError, match=r"2 sample\(s\) of this batch have an image.*remove_unused_columns"):
        trainer.train()
    assert trainer.state.global_step == 0

    def losing_images(features):  # as a column filter would: the collator then flags no row as having an image
        return collator(
            [{key: value for key, value in feature.items() if key != "image_inputs"} for feature in features]
        )

    assert not losing_images([dataset[0], dataset[1]])["has_image"].any()
    trainer = VDTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=losing_images, **adapter.trainer_kwargs(processor)
    )
    with pytest.raises(KeyError, match=r"2 sample\(s\) of this batch have an image"):  # found from the image tokens
        trainer.train()
