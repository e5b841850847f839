"""The thesis' analysis for any model (section 5.2): where objects fall by visual dependence (Fig. 5.2, 5.5) and
how much image and text pass to each kind of token (saliency, Eq. 5.2, Fig. 5.3, 5.4). `vdtrain analyze ...`.

The names below load on first use (PEP 562), so the commands' `--help` reads `vdtrain.analysis.prompts` without
importing torch."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "analyze_dependence": "vdtrain.analysis.object_dependence",
    "dependence_totals": "vdtrain.analysis.object_dependence",
    "distance_shares": "vdtrain.analysis.object_dependence",
    "analyze_saliency": "vdtrain.analysis.saliency",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vdtrain.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
