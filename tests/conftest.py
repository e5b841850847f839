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


# ---------------------------------------------------------------- VDTRAIN_STRICT_DEPRECATIONS=1
# Turns FutureWarning/DeprecationWarning (and transformers' "deprecated" log lines) into errors when the deprecated
# call was made by vdtrain itself: the first stack frame outside the library that warns (and torch's module call and
# the stdlib's wrappers) lies in vdtrain/. Deprecated calls that peft, accelerate or a test make are left alone. Keeps
# vdtrain off deprecated API as the stack moves (docs/compatibility.md).
_PACKAGE = str(Path(__file__).resolve().parents[1] / "vdtrain")
_PASS_THROUGH = ("/torch/", "/warnings.py", "/logging/", "/functools.py", "/contextlib.py", "conftest.py")
# deprecations of an argument the *caller* gave, which vdtrain only hands on (a test asks for them on purpose)
_CALLERS_ARGUMENTS = ("`return_outputs=True`", "`pad_token` is deprecated")


def _library_of(filename: str) -> str | None:
    """`.../site-packages/<library>/` of a frame's file, or None outside site-packages."""
    marker = "site-packages/"
    if marker not in filename:
        return None
    return marker + filename.split(marker, 1)[1].split("/", 1)[0] + "/"


def _called_from_vdtrain() -> bool:
    import inspect as _inspect

    frames = [frame.filename for frame in _inspect.stack()[2:]]
    origin = next((name for name in frames if not any(part in name for part in _PASS_THROUGH)), "")
    if origin.startswith(_PACKAGE):  # vdtrain's own deprecations (old option names): their tests expect them
        return False
    library = _library_of(origin)
    for filename in frames:
        if any(part in filename for part in _PASS_THROUGH) or (library and library in filename):
            continue
        return filename.startswith(_PACKAGE)
    return False


if os.environ.get("VDTRAIN_STRICT_DEPRECATIONS") == "1":
    import logging
    import warnings

    _warn = warnings.warn

    def _strict_warn(message, category=None, stacklevel=1, source=None, **kwargs):
        category = category or (message.__class__ if isinstance(message, Warning) else UserWarning)
        handed_on = any(text in str(message) for text in _CALLERS_ARGUMENTS)
        if issubclass(category, (FutureWarning, DeprecationWarning)) and not handed_on and _called_from_vdtrain():
            raise category(f"deprecated call made by vdtrain: {message}")
        return _warn(message, category, stacklevel + 1, source, **kwargs)

    warnings.warn = _strict_warn

    class _StrictDeprecationHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "deprecat" in record.getMessage().lower() and _called_from_vdtrain():
                raise DeprecationWarning(f"deprecated call made by vdtrain: {record.getMessage()}")

    logging.getLogger("transformers").addHandler(_StrictDeprecationHandler())
