"""BADGE's and BMMAL's gradient embeddings of the fusion head (thesis eqs. 3.3, 3.12, 3.14) and their squared
distances in factorised form, so k-means++ never builds the (n, C·ΣD) matrix.

Row c of sample x's embedding, block m: w_m (p_c − 1[ŷ = c]) z_m, with p the fusion head's softmax (eq. 3.3 prints
the logit f_c; the gradient of the cross-entropy, and the official code, use the probability) and ŷ = argmax p. It is
∂CE(f_mm, ŷ)/∂W with the columns of block m scaled by w_m; BADGE is w = 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vdtrain.selection.active.learner import Outputs
from vdtrain.selection.cluster import factorised_sq_dist


class GradientEmbeddings:
    """The embeddings g of `outputs` (block weights `weights`, `(n, M)`, or 1), held as δ = p − e_ŷ and z_m.

    ‖g_a − g_b‖² = Σ_m [w_a²|δ_a|²|z_a|² − 2 w_a w_b (δ_a·δ_b)(z_a·z_b) + w_b²|δ_b|²|z_b|²]_m, so a column of
    distances costs O(n (C + ΣD)) instead of O(n C ΣD).
    """

    def __init__(self, outputs: Outputs, weights: torch.Tensor | None = None):
        probs = outputs.probs.double()
        self.delta = probs.clone()
        self.delta[torch.arange(len(probs)), probs.argmax(dim=1)] -= 1.0  # δ = p − e_ŷ
        self.blocks = [z.double() for z in outputs.features.values()]
        n, m = len(probs), len(self.blocks)
        self.weights = torch.ones(n, m, dtype=torch.float64) if weights is None else weights.double()
        if self.weights.shape != (n, m):
            raise ValueError(f"weights of shape {tuple(self.weights.shape)} for {n} samples and {m} modalities")
        delta_sq = (self.delta**2).sum(dim=1)
        self.block_sq = torch.stack([(z**2).sum(dim=1) for z in self.blocks], dim=1)  # (n, M) |z_m|²
        self.row_sq = (self.weights**2 * self.block_sq).sum(dim=1) * delta_sq  # (n,) ‖g‖²

    def __len__(self) -> int:
        return len(self.delta)

    def sq_norms(self) -> torch.Tensor:
        """`(n,)` ‖g‖²."""
        return self.row_sq

    def sq_dist_fn(self) -> Callable[[int], torch.Tensor]:
        """`sq_dist(j) -> (n,)` ‖g_i − g_j‖² for every i by the factorised identity, as k-means++ takes it."""
        return factorised_sq_dist([(self.delta, z, self.weights[:, m]) for m, z in enumerate(self.blocks)])

    def materialise(self) -> torch.Tensor:
        """`(n, C·ΣD)` the flattened embeddings themselves (small pools and tests only)."""
        parts = [
            self.weights[:, m, None, None] * self.delta[:, :, None] * z[:, None, :] for m, z in enumerate(self.blocks)
        ]
        return torch.cat(parts, dim=2).reshape(len(self), -1)  # (n, C, ΣD) -> (n, C·ΣD)
