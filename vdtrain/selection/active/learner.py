"""What a strategy needs from a model (`Outputs`), the `Learner` protocol the loop trains, and the late-fusion
linear learner of BMMAL (thesis eq. 3.1): one linear head per modality and one on the concatenation, trained on the
mean of their cross-entropies."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from vdtrain.selection.active.pool import Pool


@dataclass
class Outputs:
    """A trained model's view of some samples: what every strategy reads.

    Args:
        probs (`Tensor`): `(n, C)` class probabilities of the fusion (multimodal) head.
        features (`dict[str, Tensor]`): `{modality: (n, D_m)}` the features the fusion head reads, concatenated in
            this order (z_mm = z_1 ⊕ z_2 ⊕ ...).
        modality_probs (`dict[str, Tensor]`, *optional*): `{modality: (n, C)}` the uni-modal heads' probabilities.
        fusion_weight (`Tensor`, *optional*): `(C, ΣD_m)` the fusion head's weight (BADGE/BMMAL, Shapley).
        fusion_bias (`Tensor`, *optional*): `(C,)` its bias.
    """

    probs: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    modality_probs: dict[str, torch.Tensor] = field(default_factory=dict)
    fusion_weight: torch.Tensor | None = None
    fusion_bias: torch.Tensor | None = None

    def modality_logits(self) -> dict[str, torch.Tensor]:
        """`{modality: (n, C)}` each modality's additive share W_m z_m of the fusion logits (bias excluded)."""
        if self.fusion_weight is None:
            raise ValueError("these outputs carry no fusion head weight (fusion_weight); BMMAL and Shapley need it")
        shares, start = {}, 0
        for name, z in self.features.items():
            width = z.shape[1]
            shares[name] = z @ self.fusion_weight[:, start : start + width].T
            start += width
        if start != self.fusion_weight.shape[1]:
            raise ValueError(f"features have {start} columns in all, the fusion weight {self.fusion_weight.shape[1]}")
        return shares

    def subset(self, positions: Sequence[int] | torch.Tensor) -> Outputs:
        """The same outputs restricted to rows `positions`."""
        index = torch.as_tensor(positions, dtype=torch.long)
        return Outputs(
            self.probs[index],
            {k: v[index] for k, v in self.features.items()},
            {k: v[index] for k, v in self.modality_probs.items()},
            self.fusion_weight,
            self.fusion_bias,
        )


@runtime_checkable
class Learner(Protocol):
    """A model the loop re-trains every round: `fit` on the labelled positions, `outputs` on any positions."""

    def fit(self, positions: Sequence[int], labels: Sequence[int], *, seed: int = 0) -> None:
        """Train from scratch on pool rows `positions` with class `labels`."""

    def outputs(self, positions: Sequence[int]) -> Outputs:
        """The model's `Outputs` on pool rows `positions`."""


class LateFusionLinear(torch.nn.Module):
    """Late fusion by concatenation with three (M + 1) linear heads, trained on the mean of their CEs (eq. 3.1).

    Features are standardised per modality with the pool's mean and standard deviation (all rows are known in
    pool-based AL), so a zero vector, BMMAL's "absent modality", is the pool mean. Re-initialised by every `fit`.

    Args:
        pool (`Pool`): the samples, with their per-modality embeddings.
        num_classes (`int`): C.
        epochs (`int`, defaults to 300): full-batch Adam steps per fit.
        lr (`float`, defaults to 0.01): Adam's learning rate.
        weight_decay (`float`, defaults to 1e-3): L2 penalty (AdamW) on the weights.
    """

    def __init__(
        self, pool: Pool, num_classes: int, *, epochs: int = 300, lr: float = 0.01, weight_decay: float = 1e-3
    ):
        super().__init__()
        self.pool, self.num_classes = pool, int(num_classes)
        self.epochs, self.lr, self.weight_decay = int(epochs), float(lr), float(weight_decay)
        self.modalities = pool.modalities
        raw = pool.embeddings
        self._mean = {m: raw[m].mean(dim=0) for m in self.modalities}
        self._std = {
            m: raw[m].std(dim=0).clamp_min(1e-6) if len(pool) > 1 else torch.ones(raw[m].shape[1])
            for m in self.modalities
        }
        widths = [raw[m].shape[1] for m in self.modalities]
        self.heads = torch.nn.ModuleDict(
            {m: torch.nn.Linear(w, self.num_classes) for m, w in zip(self.modalities, widths)}
        )
        self.fusion = torch.nn.Linear(sum(widths), self.num_classes)

    def standardised(self, positions: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """`{modality: (n, D_m)}` the features the heads read."""
        raw = self.pool.features(positions)
        return {m: (raw[m] - self._mean[m]) / self._std[m] for m in self.modalities}

    def _reset(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for layer in [*self.heads.values(), self.fusion]:
            bound = 1.0 / layer.in_features**0.5
            with torch.no_grad():
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                layer.bias.zero_()

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fusion logits `(n, C)` and `{modality: (n, C)}` uni-modal logits."""
        fused = self.fusion(torch.cat([features[m] for m in self.modalities], dim=1))
        return fused, {m: self.heads[m](features[m]) for m in self.modalities}

    def fit(self, positions: Sequence[int], labels: Sequence[int], *, seed: int = 0) -> None:
        """Re-initialise (seeded) and train on `positions` with `labels` by full-batch AdamW on eq. 3.1."""
        self._reset(seed)
        features = self.standardised(positions)
        target = torch.as_tensor(list(labels), dtype=torch.long)
        if len(target) == 0:
            return
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.train()
        for _ in range(self.epochs):
            fused, single = self(features)
            loss = F.cross_entropy(fused, target) + sum(F.cross_entropy(v, target) for v in single.values())
            loss = loss / (1 + len(single))  # eq. 3.1: the mean of the M + 1 cross-entropies
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.eval()

    @torch.no_grad()
    def outputs(self, positions: Sequence[int]) -> Outputs:
        """Fusion and per-modality probabilities, standardised features and the fusion head at `positions`."""
        features = self.standardised(positions)
        fused, single = self(features)
        return Outputs(
            probs=fused.softmax(dim=-1),
            features=features,
            modality_probs={m: v.softmax(dim=-1) for m, v in single.items()},
            fusion_weight=self.fusion.weight.detach().clone(),
            fusion_bias=self.fusion.bias.detach().clone(),
        )

    def save(self, path: str | os.PathLike) -> None:
        """The heads' weights (a `torch.save` state dict) for the round's record."""
        torch.save({k: v.detach().clone() for k, v in self.state_dict().items()}, path)

    def load(self, path: str | os.PathLike) -> None:
        """The heads' weights of a round's `model.pt` (a model trained on the same pool's modalities)."""
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.eval()
