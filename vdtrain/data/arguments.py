"""`DataArguments`: where the conversations and images are, and how samples are checked and truncated."""

from __future__ import annotations

from dataclasses import dataclass, field

from vdtrain.errors import InputError


@dataclass
class DataArguments:
    """Where the conversations and images are."""

    data_path: str = field(metadata={"help": "LLaVA-format conversation JSON (or JSONL)."})
    image_folder: str | None = field(default=None, metadata={"help": "Folder the samples' `image` paths are in."})
    max_length: int = field(default=2048, metadata={"help": "Truncate token sequences to this length."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N samples (debugging)."})
    check_images: bool = field(
        default=True, metadata={"help": "Check every image file exists and has an image header before training."}
    )
    drop_truncated: bool = field(
        default=False,
        metadata={"help": "Drop samples that do not fit max_length (warning) instead of stopping with an error."},
    )
    drop_invalid: bool = field(
        default=False,
        metadata={"help": "Drop samples with bad turns or special-token text (warning) instead of stopping."},
    )
    allow_external_images: bool = field(
        default=False,
        metadata={"help": "Allow image paths that resolve outside image_folder (absolute paths, '../')."},
    )

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise InputError(f"max_length is a number of tokens of at least 1, got {self.max_length}")
        if self.max_samples is not None and self.max_samples < 1:  # -1 would silently leave out the last sample
            raise InputError(f"max_samples is a number of samples of at least 1 (or unset), got {self.max_samples}")
