"""The training application behind `vdtrain train`: data, model, LoRA, `VDTrainer`, checkpoints."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import transformers

from vdtrain.data import SupervisedDataset, VDDataCollator
from vdtrain.data.cached import has_images
from vdtrain.data.sources import load_source, source_name
from vdtrain.data.tokenized import main_process_first, plain_progress
from vdtrain.errors import InputError, Terminated
from vdtrain.io import atomic_write_text, file_sha256, writing
from vdtrain.models.loading import load_model_and_processor, prepare_for_training
from vdtrain.models.merge import BASE_MODEL_FILE, base_model_text
from vdtrain.training.checkpoints import MANIFEST_NAME, write_manifest
from vdtrain.training.config import DataArguments, ModelArguments, VDTrainingArguments
from vdtrain.training.finite import check_finite_weights
from vdtrain.training.teardown import end_process_group
from vdtrain.training.termination import SaveOnSigterm
from vdtrain.training.trainer import VDTrainer

logger = logging.getLogger("vdtrain")


def build_trainer(
    model_args: ModelArguments, data_args: DataArguments, training_args: VDTrainingArguments
) -> VDTrainer:
    """Everything up to `trainer.train()`: checked data, the wrapped model and a configured `VDTrainer`."""
    transformers.set_seed(training_args.seed)
    _ = training_args.device  # a launch's process group exists before the main process builds the data first
    name = source_name(data_args.data_path, data_args.dataset_name, data_args.split)
    with main_process_first(), plain_progress():  # the others then read the Arrow table datasets made of the file
        source = load_source(
            data_args.data_path,
            dataset_name=data_args.dataset_name,
            dataset_config=data_args.dataset_config,
            split=data_args.split,
            max_samples=data_args.max_samples,
        )
    folder = data_args.image_folder
    if data_args.check_images and folder is not None and not Path(folder).is_dir() and has_images(source):
        raise FileNotFoundError(f"{name}: the image folder {folder} does not exist (image_folder)")
    model, processor, adapter = load_model_and_processor(
        model_args.model_name_or_path,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=model_args.trust_remote_code,
    )
    if adapter.pixel_key not in _forward_parameters(model):
        raise InputError(
            f"{model_args.model_name_or_path}: {type(model).__name__}.forward has no {adapter.pixel_key!r} input; "
            "its adapter does not match the model."
        )
    started = time.monotonic()
    with main_process_first():  # one build of the examples; the other ranks load its cache
        dataset = SupervisedDataset(
            source,
            adapter,
            processor,
            folder,
            data_args.max_length,
            source=name,
            drop_truncated=data_args.drop_truncated,
            drop_invalid=data_args.drop_invalid,
            allow_external_images=data_args.allow_external_images,
            check_images=data_args.check_images,
            num_proc=data_args.dataset_num_proc,
            cache_dir=data_args.dataset_cache_dir,
            lazy=data_args.lazy_preprocess,
        )
    logger.info(
        "vdtrain: %d training sequences (%d samples dropped), examples %s %s in %.0f s",
        len(dataset),
        len(dataset.dropped),
        "reused from" if dataset.reused_cache else "built into",
        dataset.cache_dir,
        time.monotonic() - started,
    )
    # transformers 5.24 renamed gradient_checkpointing to activation_checkpointing (the old name stays an alias)
    checkpointing = getattr(training_args, "activation_checkpointing", None) or training_args.gradient_checkpointing
    model = prepare_for_training(model, adapter, model_args, bool(checkpointing))
    if training_args.vd_pixel_key is None:
        training_args.vd_pixel_key = adapter.pixel_key
    training_args.remove_unused_columns = False
    trainer = VDTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=VDDataCollator.for_processor(processor),
        processing_class=processor,
        **adapter.trainer_kwargs(processor),
    )
    model_path = Path(model_args.model_name_or_path)  # a local folder wherever it is named from; a hub id as is
    model_name = str(model_path.resolve()) if model_path.exists() else model_args.model_name_or_path
    data_file = Path(data_args.data_path) if data_args.data_path else None
    data = file_sha256(data_file) if data_file is not None and data_file.is_file() else name  # a hub dataset: its name
    trainer.vd_run_extra = {"model": model_name, "data_sha256": data}
    return trainer


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: VDTrainingArguments) -> Any:
    """Train, then save the final adapter (with projector) and processor in `output_dir`."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)  # messages say vdtrain
    trainer = build_trainer(model_args, data_args, training_args)
    with SaveOnSigterm() as sigterm:
        trainer.add_callback(sigterm)
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if sigterm.received:  # a checkpoint of the last step is saved; the final adapter is left to the resumed run
        end_process_group(trainer)
        raise Terminated("SIGTERM")
    output_dir = Path(training_args.output_dir)
    check_finite_weights(trainer.model, f"the adapter was not saved in {output_dir}")
    with writing(output_dir):  # a full disk: one line naming the output_dir, whichever library was saving
        if trainer.is_world_process_zero():  # an earlier run's marker must not vouch for this save until it is done
            (output_dir / MANIFEST_NAME).unlink(missing_ok=True)
        trainer.save_model(str(output_dir))
        if trainer.is_world_process_zero():
            trainer.processing_class.save_pretrained(str(output_dir))
            atomic_write_text(output_dir / BASE_MODEL_FILE, base_model_text(model_args.model_name_or_path) + "\n")
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            write_manifest(output_dir, recursive=False, run=trainer._run_record())  # last: the adapter is complete
    end_process_group(trainer)  # gloo's threads end here: left to interpreter exit they can abort a finished run
    return result


def _forward_parameters(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)
