"""The thesis' analysis for any model (section 5.2): where objects fall by visual dependence (Fig. 5.2, 5.5) and
how much image and text pass to each kind of token (saliency, Eq. 5.2, Fig. 5.3, 5.4). `vdtrain analyze ...`."""

from vdtrain.analysis.object_dependence import analyze_dependence, dependence_totals, distance_shares
from vdtrain.analysis.saliency import analyze_saliency

__all__ = ["analyze_dependence", "analyze_saliency", "dependence_totals", "distance_shares"]
