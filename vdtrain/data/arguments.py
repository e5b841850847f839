"""`DataArguments`: where the conversations and images are, and how samples are checked and truncated."""

from __future__ import annotations

from dataclasses import dataclass, field

from vdtrain.errors import InputError


@dataclass
class DataArguments:
    """Where the conversations and images are."""

    data_path: str | None = field(
        default=None,
        metadata={
            "help": "LLaVA-format conversation JSON (or JSONL), or a folder of parquet/arrow/jsonl files (or one "
            "saved with datasets' save_to_disk) in the LLaVA/ShareGPT `conversations` or TRL `messages` + `images` "
            "format."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A hub dataset id (datasets.load_dataset) instead of data_path."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The hub dataset's configuration name."})
    split: str = field(default="train", metadata={"help": "The split of a folder or hub dataset to train on."})
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes that tokenize and check the data (datasets' num_proc)."}
    )
    dataset_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the tokenized examples are cached (default: $HF_DATASETS_CACHE/vdtrain); a rerun with "
            "the same data, tokenizer and settings reuses them."
        },
    )
    lazy_preprocess: bool = field(
        default=True,
        metadata={
            "help": "Tokenize each sample when the trainer reads it (LLaVA's lazy_preprocess): every sample is still "
            "checked before training, tokenizing only those that may not fit max_length, so any size starts in about "
            "a minute; lengths for group_by_length are estimates. False: tokenize every sample into the cache first "
            "(exact lengths, no tokenizing while training)."
        },
    )
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
        if (self.data_path is None) == (self.dataset_name is None):
            raise InputError("give the conversations as data_path (a file or folder) or dataset_name (a hub id)")
        if self.dataset_num_proc is not None and self.dataset_num_proc < 1:
            raise InputError(f"dataset_num_proc is a number of processes of at least 1, got {self.dataset_num_proc}")
        if self.max_length < 1:
            raise InputError(f"max_length is a number of tokens of at least 1, got {self.max_length}")
        if self.max_samples is not None and self.max_samples < 1:  # -1 would silently leave out the last sample
            raise InputError(f"max_samples is a number of samples of at least 1 (or unset), got {self.max_samples}")
