"""`vdtrain demo`: a synthetic object-hallucination benchmark (co-occurrence-biased shapes) for a tiny LLaVA."""

from vdtrain.demo.data import (
    PAIRS,
    DemoConfig,
    DemoPaths,
    build_demo_dataset,
    mentioned_categories,
    partner_hallucination_rate,
    read_synonyms,
)
from vdtrain.demo.shapes import CLASSES

__all__ = [
    "CLASSES",
    "PAIRS",
    "DemoConfig",
    "DemoPaths",
    "build_demo_dataset",
    "mentioned_categories",
    "partner_hallucination_rate",
    "read_synonyms",
]
