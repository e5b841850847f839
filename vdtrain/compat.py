"""Names that move between transformers releases, read from the installed library instead of hard-coded.

transformers 5.24 renamed the KV-cache keyword of every decoder forward and `prepare_inputs_for_generation`, and the
cache field of the model outputs, from `past_key_values` to `cache`. vdtrain asks the objects it is given which name
they use. docs/compatibility.md lists every such dependency and the test that guards it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

_CACHE_NAMES = ("cache", "past_key_values")  # newest first


def cache_keyword(fn: Callable[..., Any]) -> str:
    """The keyword `fn` takes its KV cache under: `cache` (transformers >= 5.24) or `past_key_values` (earlier)."""
    parameters = inspect.signature(fn).parameters
    return next((name for name in _CACHE_NAMES if name in parameters), _CACHE_NAMES[-1])


def output_cache(outputs: Any) -> Any:
    """The KV cache held by a model output, whatever its field is called (None when it holds none)."""
    from transformers.cache_utils import Cache

    return next((value for value in outputs.values() if isinstance(value, Cache)), None)


def output_fields(output_class: type, outputs: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The entries of `outputs` that `output_class` declares, to build one output from another without naming them."""
    import dataclasses

    names = {field.name for field in dataclasses.fields(output_class)} - set(drop)
    return {key: value for key, value in outputs.items() if key in names}


# TrainingArguments fields transformers renamed (old name, new name); recipes may use either spelling.
TRAINING_ARGUMENT_RENAMES = (
    ("gradient_checkpointing", "activation_checkpointing"),  # 5.24: the old name is a deprecated alias
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)


def spell_training_fields(values: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """`values` with each renamed `TrainingArguments` field spelled as the installed release declares it (`known`:
    its field names), so a recipe neither trips a deprecation warning on new releases nor fails on old ones."""
    values = dict(values)
    for old, new in TRAINING_ARGUMENT_RENAMES:
        if old in values and new in known and new not in values:
            values[new] = values.pop(old)
        elif new in values and new not in known and old in known:
            values[old] = values.pop(new)
    return values


def list_feature(feature: Any) -> Any:
    """A `datasets` list-of-`feature` column: `datasets.List` (datasets 4) or `datasets.Sequence` (datasets 3)."""
    import datasets

    return getattr(datasets, "List", datasets.Sequence)(feature)


def list_feature_types() -> tuple[type, ...]:
    """The `datasets` feature classes of list columns in the installed release (`List` exists from datasets 4)."""
    import datasets

    return tuple(kind for kind in (getattr(datasets, "List", None), datasets.Sequence) if kind is not None)
