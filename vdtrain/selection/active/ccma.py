"""CCMA, conformal cross-modal acquisition: a frozen vision-language teacher's disagreement with a vision-only
student, over their prediction sets, then diversity by clustering.

Steps (as the official code runs them, with the two threshold modes of `conformal.py`):
1. optionally a subpool: k-means on the teacher-space embeddings, each cluster contributing in proportion to its size;
2. prediction sets Γ_S, Γ_T: `mode="conformal"` calibrates split-conformal thresholds on labelled samples
   (coverage ≥ 1 − α for the frozen teacher; for the student, pass `calibration` held out from its training),
   `mode="target-size"` bisects thresholds to mean set sizes `student_size`/`teacher_size` (no guarantee);
3. δ = w·JS(p̃_S‖p̃_T) + (1 − w)·H(p_S), keep the top κ·b;
4. k-means with b clusters on the student features of those, and the candidate nearest each centroid.
"""

from __future__ import annotations

import torch

from vdtrain.selection.active.conformal import (
    disagreement_scores,
    prediction_sets,
    split_conformal_threshold,
    target_size_threshold,
)
from vdtrain.selection.active.strategies import Query
from vdtrain.selection.cluster import cluster_quotas, kmeans, nearest_centroid

MODES = ("conformal", "target-size")


class CCMA:
    """The CCMA strategy over a pool whose teacher probabilities are known.

    Args:
        teacher_probs (`Tensor`): `(N, C)` the teacher's class probabilities for every pool row (zero-shot CLIP or
            SigLIP: `teacher.ZeroShotTeacher`, or the user's own).
        mode (`str`, defaults to `"conformal"`): `"conformal"` (split conformal, 1 − α) or `"target-size"`.
        alpha (`float`, defaults to 0.1): miscoverage of the conformal mode.
        student_size (`float`, defaults to 5) / teacher_size (`float`, defaults to 3): mean set sizes of the
            target-size mode (the official code's values).
        kappa (`int`, defaults to 20): oversampling factor: the top κ·b scores are clustered.
        student (`str`, *optional*): the modality whose head is the student (e.g. `"image"`); the fusion head if None.
        space (`Tensor`, *optional*): `(N, D)` teacher-space embeddings for the subpool; needed with `subpool`.
        subpool (`int`, *optional*): score only this many candidates, drawn across `subpool_clusters` k-means clusters.
        calibration (`tuple`, *optional*): `(student_probs, teacher_probs, labels)` held-out calibration data; by
            default the labelled samples of the query.
    """

    def __init__(
        self,
        teacher_probs: torch.Tensor,
        *,
        mode: str = "conformal",
        alpha: float = 0.1,
        student_size: float = 5.0,
        teacher_size: float = 3.0,
        kappa: int = 20,
        student: str | None = None,
        space: torch.Tensor | None = None,
        subpool: int | None = None,
        subpool_clusters: int = 10,
        calibration: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown CCMA mode {mode!r}: choose one of {', '.join(MODES)}")
        if subpool is not None and space is None:
            raise ValueError("a CCMA subpool needs `space`, the teacher-space embeddings to cluster")
        self.teacher_probs = torch.as_tensor(teacher_probs).double()
        self.mode, self.alpha, self.kappa = mode, alpha, int(kappa)
        self.student_size, self.teacher_size = student_size, teacher_size
        self.student, self.space, self.subpool, self.subpool_clusters = student, space, subpool, subpool_clusters
        self.calibration = calibration

    def _student(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        if self.student is None:
            return outputs.probs, torch.cat(list(outputs.features.values()), dim=1)
        if self.student not in outputs.modality_probs:
            raise ValueError(f"CCMA student {self.student!r} is not a modality head of the model")
        return outputs.modality_probs[self.student], outputs.features[self.student]

    def thresholds(
        self, query: Query, student_probs: torch.Tensor, teacher_probs: torch.Tensor
    ) -> tuple[float, float]:
        """`(student, teacher)` thresholds on −log p in this query's mode."""
        if self.mode == "target-size":
            return target_size_threshold(student_probs, self.student_size), target_size_threshold(
                teacher_probs, self.teacher_size
            )
        if self.calibration is not None:
            cal_student, cal_teacher, labels = self.calibration
        else:
            if query.labelled is None or query.labels is None or query.labelled_positions is None:
                raise ValueError("conformal CCMA needs labelled samples (or `calibration`) to calibrate on")
            cal_student = self._student(query.labelled)[0]
            cal_teacher, labels = self.teacher_probs[query.labelled_positions], query.labels
        return (
            split_conformal_threshold(cal_student, labels, self.alpha),
            split_conformal_threshold(cal_teacher, labels, self.alpha),
        )

    def _subpool(self, positions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Rows (into the candidates) of a subpool drawn across k-means clusters of the teacher space."""
        n = len(positions)
        if self.subpool is None or self.subpool >= n:
            return torch.arange(n)
        space = torch.as_tensor(self.space)[positions].float()
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        labels = kmeans(space, min(self.subpool_clusters, n), seed=seed).labels
        quotas = cluster_quotas(torch.bincount(labels, minlength=int(labels.max()) + 1), self.subpool)
        order = torch.randperm(n, generator=generator)
        picks = [order[labels[order] == c][: int(q)] for c, q in enumerate(quotas.tolist())]
        return torch.cat(picks).sort().values

    def scores(self, query: Query) -> torch.Tensor:
        """`(n,)` δ for every candidate."""
        student_probs = self._student(query.candidates)[0]
        teacher_probs = self.teacher_probs[self._positions(query)]
        t_student, t_teacher = self.thresholds(query, student_probs, teacher_probs)
        sets_s, sets_t = prediction_sets(student_probs, t_student), prediction_sets(teacher_probs, t_teacher)
        return disagreement_scores(student_probs, teacher_probs, sets_s, sets_t)

    def _positions(self, query: Query) -> torch.Tensor:
        if query.candidate_positions is None:
            raise ValueError("CCMA needs the candidates' pool positions (Query.candidate_positions)")
        return torch.as_tensor(query.candidate_positions, dtype=torch.long)

    def __call__(self, query: Query, budget: int, generator: torch.Generator) -> list[int]:
        """Pick `budget` candidates: subpool, top κ·b by δ, then the nearest to each of b k-means centroids."""
        n = len(query.candidates.probs)
        budget = min(budget, n)
        if budget == 0:
            return []
        if self.subpool is not None and self.subpool < budget:
            raise ValueError(f"a CCMA subpool of {self.subpool} cannot hold a budget of {budget}")
        rows = self._subpool(self._positions(query), generator)
        scores = self.scores(query)[rows]
        top = rows[torch.sort(-scores, stable=True).indices[: min(self.kappa * budget, len(rows))]]
        if len(top) <= budget:
            return top.tolist()
        features = self._student(query.candidates)[1][top].double()
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        centroids = kmeans(features, budget, seed=seed).centroids
        taken: list[int] = []
        free = torch.ones(len(top), dtype=torch.bool)
        for centre in centroids:
            _, sq = nearest_centroid(features, centre[None])
            sq[~free] = torch.inf
            best = int(torch.argmin(sq))
            free[best] = False
            taken.append(int(top[best]))
        return taken
