"""Conversation data: LLaVA JSON loading, tokenised supervised datasets, collators."""

from vdtrain.data.conversations import check_images, image_path, load_conversations, load_image, to_messages
from vdtrain.data.dataset import SupervisedDataset, VDDataCollator

__all__ = [
    "SupervisedDataset",
    "VDDataCollator",
    "check_images",
    "image_path",
    "load_conversations",
    "load_image",
    "to_messages",
]
