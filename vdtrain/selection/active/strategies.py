"""Query strategies: which `budget` of the unlabelled candidates to label next.

Each strategy is a callable `(query, budget, generator) -> positions into query.candidates`, usable inside the loop
or on `Outputs` of a model trained elsewhere. `random`, `entropy`, `margin`, `coreset` (k-center greedy on the
fusion features), `badge` (k-means++ on gradient embeddings) and `bmmal` (the same, each modality block scaled by
its Shapley weight, thesis ch. 3); CCMA lives in `ccma.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vdtrain.selection.active.conformal import entropy
from vdtrain.selection.active.gradients import GradientEmbeddings
from vdtrain.selection.active.learner import Outputs
from vdtrain.selection.active.shapley import bmmal_weights, contributions, modality_shapley
from vdtrain.selection.cluster import kcenter_greedy, kmeans_pp


@dataclass
class Query:
    """What a strategy may look at.

    Args:
        candidates (`Outputs`): the model's outputs on the unlabelled candidates (the rows a strategy picks from).
        labelled (`Outputs`, *optional*): its outputs on the labelled samples (CoreSet's centres, calibration).
        labels (`Tensor`, *optional*): `(n_labelled,)` their classes.
        candidate_positions (`Tensor`, *optional*): pool rows of the candidates (strategies holding pool-aligned data,
            such as CCMA's teacher, index with them).
        labelled_positions (`Tensor`, *optional*): pool rows of the labelled samples.
    """

    candidates: Outputs
    labelled: Outputs | None = None
    labels: torch.Tensor | None = None
    candidate_positions: torch.Tensor | None = None
    labelled_positions: torch.Tensor | None = None


Strategy = Callable[[Query, int, torch.Generator], list[int]]


def _check_budget(query: Query, budget: int) -> int:
    n = len(query.candidates.probs)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return min(budget, n)


def _top(scores: torch.Tensor, budget: int) -> list[int]:
    """The `budget` highest scores; ties go to the lower position."""
    order = torch.sort(-scores.double(), stable=True).indices
    return order[:budget].tolist()


def random_strategy(query: Query, budget: int, generator: torch.Generator) -> list[int]:
    """A uniform draw without replacement."""
    n = len(query.candidates.probs)
    return torch.randperm(n, generator=generator)[: _check_budget(query, budget)].tolist()


def entropy_strategy(query: Query, budget: int, generator: torch.Generator) -> list[int]:
    """The highest entropy of the fusion prediction."""
    return _top(entropy(query.candidates.probs), _check_budget(query, budget))


def margin_strategy(query: Query, budget: int, generator: torch.Generator) -> list[int]:
    """The smallest margin between the fusion prediction's two most probable classes."""
    top2 = query.candidates.probs.double().topk(2, dim=1).values
    return _top(-(top2[:, 0] - top2[:, 1]), _check_budget(query, budget))


def coreset_strategy(query: Query, budget: int, generator: torch.Generator) -> list[int]:
    """k-center greedy (Core-Set) on the concatenated fusion features, the labelled samples as initial centres."""
    budget = _check_budget(query, budget)
    candidates = torch.cat(list(query.candidates.features.values()), dim=1)
    labelled = query.labelled
    if labelled is None or len(labelled.probs) == 0:
        return kcenter_greedy(candidates, budget).tolist()
    known = torch.cat(list(labelled.features.values()), dim=1)
    picks = kcenter_greedy(torch.cat([known, candidates]), budget, initial=torch.arange(len(known)))
    return (picks - len(known)).tolist()


def gradient_kmeans_pp(embeddings: GradientEmbeddings, budget: int, generator: torch.Generator) -> list[int]:
    """k-means++ on gradient embeddings: the first centre is the largest norm, then D² sampling (BADGE)."""
    if budget == 0:
        return []
    first = int(torch.argmax(embeddings.sq_norms()))
    return kmeans_pp(len(embeddings), budget, embeddings.sq_dist_fn(), first=first, generator=generator).tolist()


def badge_strategy(query: Query, budget: int, generator: torch.Generator) -> list[int]:
    """BADGE: k-means++ on the fusion head's gradient embeddings for the pseudo-label (eq. 3.3)."""
    return gradient_kmeans_pp(GradientEmbeddings(query.candidates), _check_budget(query, budget), generator)


class BMMAL:
    """BMMAL (thesis ch. 3): BADGE with each modality block of the embedding scaled by w_m (eqs. 3.13, 3.14).

    Args:
        exact_up_to (`int`, defaults to 4): enumerate the 2^M coalitions up to this many modalities, Monte Carlo above.
        num_permutations (`int`, defaults to 64): permutations of the Monte Carlo estimate.
    """

    def __init__(self, exact_up_to: int = 4, num_permutations: int = 64):
        self.exact_up_to, self.num_permutations = exact_up_to, num_permutations

    def weights(self, outputs: Outputs, generator: torch.Generator | None = None) -> torch.Tensor:
        """`(n, M)` w_m of every sample."""
        phi = modality_shapley(
            outputs, exact_up_to=self.exact_up_to, num_permutations=self.num_permutations, generator=generator
        )
        return bmmal_weights(contributions(phi))

    def __call__(self, query: Query, budget: int, generator: torch.Generator) -> list[int]:
        """Pick `budget` candidates by k-means++ on the modulated gradient embeddings."""
        weights = self.weights(query.candidates, generator)
        return gradient_kmeans_pp(
            GradientEmbeddings(query.candidates, weights), _check_budget(query, budget), generator
        )


def bmmal_strategy(query: Query, budget: int, generator: torch.Generator) -> list[int]:
    """BMMAL with its defaults."""
    return BMMAL()(query, budget, generator)


STRATEGIES: dict[str, Strategy] = {
    "random": random_strategy,
    "entropy": entropy_strategy,
    "margin": margin_strategy,
    "coreset": coreset_strategy,
    "badge": badge_strategy,
    "bmmal": bmmal_strategy,
}
