"""The training layer: `VDTrainingArguments`, the loss mixin, `VDTrainer`, checkpoints and the `vdtrain train` run."""
