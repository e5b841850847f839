"""`VDLossMixin` on a project's own `Trainer` subclass: one line turns it into a visual-dependence trainer.

    python examples/custom_trainer.py      # offline: a tiny random LLaVA on generated images, 6 steps

What the host trainer must provide:

- Its loss is the per-token causal-LM NLL of `labels`, reduced as `transformers.Trainer` reduces it (summed over
  supervised tokens and divided by their count, or by `num_items_in_batch`). Label smoothing or a
  `compute_loss_func` replace that loss and are refused while the VD loss is on.
- Batches hold `input_ids`, `attention_mask`, `labels` aligned with `input_ids` (-100 where unsupervised) and the
  model's pixel input (`pixel_key=`, else `args.vd_pixel_key`, else `pixel_values`/`images`/...). Other model
  inputs (`token_type_ids`, `image_grid_thw`, ...) pass through to both forwards. Optional, taken out before the
  forward: `end_of_turn_mask` `(B, L)` (the EOS floor; else the tokens equal to `end_of_turn_id`) and `has_image`
  `(B,)` (text-only rows keep d = 0). Names in `vdtrain.keys`.
- One sample per row: packed rows (position_ids restarting inside a row) are refused while the VD loss is active.
- Its `args` may be any `TrainingArguments`; the `vd_*` fields it has are used, the others take their defaults.

Put the mixin first: `class VDMyTrainer(VDLossMixin, MyTrainer)`. Before `vd_start` a host that overrides
`compute_loss` runs its own step untouched; one that leaves it to `Trainer` gets the same loss from logits at the
supervised positions only (`vd_masked_logits`).
"""

from __future__ import annotations

import random
import tempfile

import torch
from PIL import Image
from transformers import Trainer

from vdtrain import VDLossMixin, VDTrainingArguments
from vdtrain.data import SupervisedDataset, VDDataCollator
from vdtrain.demo.model import SPECIAL_TOKENS, DemoModelConfig, bpe_tokenizer, demo_model, demo_processor
from vdtrain.models import get_adapter


class MyTrainer(Trainer):
    """A project's trainer: here it only counts its steps, as a stand-in for whatever a project adds."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.steps_seen = getattr(self, "steps_seen", 0) + 1
        return super().training_step(model, inputs, num_items_in_batch)


class VDMyTrainer(VDLossMixin, MyTrainer):
    """`MyTrainer` with the visual-dependence loss."""


def tiny_setup(folder: str):
    """A tiny random LLaVA, its processor and adapter, and a dataset of generated images in `folder`."""
    words = "there is a red cat on blue mat dog sits next to tree two apples in box".split()
    answers = [" ".join(random.Random(i).sample(words, 8)) + "." for i in range(8)]
    config = DemoModelConfig(text_hidden=64, text_layers=2)
    processor = demo_processor(bpe_tokenizer(answers + ["USER: ASSISTANT: describe"], 400, SPECIAL_TOKENS), config)
    model = demo_model(processor, config)
    records = []
    for i, answer in enumerate(answers):
        Image.new("RGB", (32, 32), tuple(random.Random(i).randrange(256) for _ in range(3))).save(f"{folder}/{i}.png")
        turns = [{"from": "human", "value": "<image>\ndescribe this image."}, {"from": "gpt", "value": answer}]
        records.append({"id": str(i), "image": f"{i}.png", "conversations": turns})
    adapter = get_adapter(model)
    dataset = SupervisedDataset(records, adapter, processor, folder, max_length=256)
    return model, processor, adapter, dataset


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        model, processor, adapter, dataset = tiny_setup(folder)
        args = VDTrainingArguments(
            output_dir=f"{folder}/out",
            max_steps=6,
            per_device_train_batch_size=4,
            learning_rate=1e-3,
            vd_start=0.5,
            vd_temperature=1.0,
            use_cpu=True,
            report_to="none",
            logging_steps=1,
            remove_unused_columns=False,
            save_strategy="no",
        )
        trainer = VDMyTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=VDDataCollator.for_processor(processor),
            **adapter.trainer_kwargs(processor),  # projector_modules, end_of_turn_id, pixel_key
        )
        torch.manual_seed(0)
        trainer.train()
        print("host steps:", trainer.steps_seen)
        for entry in trainer.state.log_history:
            if "loss" in entry:
                print({key: entry[key] for key in ("step", "loss", "vd_mean", "vd_weight_max") if key in entry})


if __name__ == "__main__":
    main()
