"""Every image-text-to-text family transformers maps is accounted for: in one zoo module's `FAMILIES` (tested there)
or in one module's `LEFT` with the reason it is not, so the README's family count and its list of families left out
cannot drift from what the tests run.

The zoo modules are `tests/zoo*.py`; a family key is its `model_type` with `-` and `.` written `_`. A transformers
release newer than the one surveyed may map families nobody has tried yet: those are reported as a warning, not a
failure, so a new release alone does not turn CI red (they are the next ones to add).
"""

from __future__ import annotations

import importlib
import pathlib
import warnings

import transformers
from packaging.version import Version
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

SURVEYED = Version("5.25.0")  # every family this release maps was tried (docs: README "Supported families")
MODULES = sorted(path.stem for path in pathlib.Path(__file__).parent.glob("zoo*.py"))


def key(model_type: str) -> str:
    return model_type.replace("-", "_").replace(".", "_")


def accounted() -> tuple[dict[str, str], dict[str, str]]:
    """`(family -> module that tests it, family -> why it is left out)` over every zoo module."""
    tested, left = {}, {}
    for name in MODULES:
        module = importlib.import_module(name)
        for family in module.FAMILIES:
            assert family not in tested, f"{family} is in both {tested[family]} and {name}"
            tested[family] = name
        for family, reason in module.LEFT.items():
            assert family not in left, f"{family} is left out twice"
            assert len(reason.split()) >= 4, f"{name}.LEFT[{family!r}] does not say why"
            left[family] = reason
    return tested, left


def test_a_family_is_tested_or_left_out_with_a_reason_never_both():
    tested, left = accounted()
    assert not set(tested) & set(left)
    assert len(MODULES) >= 2 and "zoo" in MODULES


def test_every_family_transformers_maps_is_accounted_for():
    tested, left = accounted()
    missing = sorted({key(model_type) for model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES} - {*tested, *left})
    if missing and Version(transformers.__version__) > SURVEYED:
        warnings.warn(
            f"transformers {transformers.__version__} maps families not surveyed yet: {missing}", stacklevel=1
        )
    else:
        assert not missing, f"families neither in a zoo nor in a LEFT list: {missing}"
