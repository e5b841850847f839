"""Pool-based multimodal active learning: a resumable loop, the late-fusion learner of BMMAL (thesis eq. 3.1),
oracles, and the strategies random, entropy, margin, CoreSet, BADGE, BMMAL (thesis ch. 3) and CCMA.

Imports only torch and numpy; `teacher.ZeroShotTeacher` imports transformers when one is built.
"""

from vdtrain.selection.active.balance import sample_dominance, write_dominance
from vdtrain.selection.active.ccma import CCMA
from vdtrain.selection.active.gradients import GradientEmbeddings
from vdtrain.selection.active.learner import LateFusionLinear, Learner, Outputs
from vdtrain.selection.active.loop import LoopResult, evaluate, round_seed, run_loop
from vdtrain.selection.active.oracle import ArrayOracle, FileOracle, Oracle
from vdtrain.selection.active.pool import Pool, load_matrix
from vdtrain.selection.active.shapley import (
    bmmal_weights,
    contributions,
    dominance,
    modality_shapley,
    shapley_exact,
    shapley_permutations,
)
from vdtrain.selection.active.strategies import BMMAL, STRATEGIES, Query, Strategy

__all__ = [
    "BMMAL",
    "CCMA",
    "STRATEGIES",
    "ArrayOracle",
    "FileOracle",
    "GradientEmbeddings",
    "LateFusionLinear",
    "Learner",
    "LoopResult",
    "Oracle",
    "Outputs",
    "Pool",
    "Query",
    "Strategy",
    "bmmal_weights",
    "contributions",
    "dominance",
    "evaluate",
    "load_matrix",
    "modality_shapley",
    "round_seed",
    "run_loop",
    "sample_dominance",
    "shapley_exact",
    "shapley_permutations",
    "write_dominance",
]
