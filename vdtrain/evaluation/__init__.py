"""Hallucination evaluators the field reports, computed as the papers do: CHAIR (captions) and POPE (yes/no probes).

The library behind `vdtrain eval chair | pope | pope-build`; the exact rules are in docs/evaluators.md.
"""

from .chair import CaptionObjects, Synonyms, evaluate_chair, extract_objects, load_synonyms
from .chair_truth import build_ground_truth, coco_annotation_files
from .lemmatize import caption_lemmas, singularize
from .nltk_check import MissingNLTKDataError, require_nltk_data
from .pope import average_metrics, evaluate_pope, parse_answer, pope_metrics
from .pope_build import build_pope
from .questions import load_captions

__all__ = [
    "CaptionObjects",
    "MissingNLTKDataError",
    "Synonyms",
    "average_metrics",
    "build_ground_truth",
    "build_pope",
    "caption_lemmas",
    "coco_annotation_files",
    "evaluate_chair",
    "evaluate_pope",
    "extract_objects",
    "load_captions",
    "load_synonyms",
    "parse_answer",
    "pope_metrics",
    "require_nltk_data",
    "singularize",
]
