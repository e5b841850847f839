"""Adapters of the visual-dependence loss to other trainers (`vdtrain.integrations.trl`: TRL's `SFTTrainer`)."""
