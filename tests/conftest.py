"""Shared test setup: offline hub, NLTK data from ../shared, tiny model directories built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))
_SHARED_NLTK = Path(__file__).resolve().parents[2] / "shared" / "nltk_data"
if "NLTK_DATA" not in os.environ and _SHARED_NLTK.is_dir():
    os.environ["NLTK_DATA"] = str(_SHARED_NLTK)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A tiny LLaVA saved with `save_pretrained` (model + processor), loaded by path in tests."""
    from tiny import tiny_llava

    model, processor = tiny_llava()
    path = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
