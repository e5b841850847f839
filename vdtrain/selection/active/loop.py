"""The pool-based active-learning loop: round after round, train the learner on what is labelled, let a strategy
pick `budget` unlabelled samples, ask the oracle, and record the round. Every round is written atomically
(`rounds/NNN/`: queried ids, labels, metrics, model) and the loop resumes after a kill with the same picks: the
learner and the strategy are seeded per round, and a round's pending queries are kept in `pending.json`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vdtrain.errors import InputError
from vdtrain.io import atomic_write_json, read_json
from vdtrain.selection.active.learner import Learner, Outputs
from vdtrain.selection.active.oracle import Oracle
from vdtrain.selection.active.pool import Pool
from vdtrain.selection.active.shapley import contributions, modality_shapley
from vdtrain.selection.active.strategies import STRATEGIES, Query, Strategy

logger = logging.getLogger(__name__)
RUN_FILE, PENDING_FILE, ROUNDS_DIR = "run.json", "pending.json", "rounds"


@dataclass
class LoopResult:
    """Where the loop stopped: `rounds` finished (their `queried` ids and `metrics`), and the ids still `waiting`
    for labels (the file oracle's round; empty when done)."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)

    @property
    def labelled_ids(self) -> list[str]:
        """Every id labelled so far, in query order."""
        return [i for r in self.rounds for i in r["queried"]]


def round_seed(seed: int, round_index: int) -> int:
    """The seed of round `round_index` (learner initialisation and the strategy's draws)."""
    return (int(seed) * 1_000_003 + round_index) % (2**63 - 1)


def evaluate(outputs: Outputs, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy of the fusion head and of each modality head, and each modality's mean contribution Φ to the true
    class's probability (thesis Fig. 3.1), with `phi_gap` = max − min of those means."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    metrics = {"accuracy": float((outputs.probs.argmax(1) == labels).double().mean())}
    for name, probs in outputs.modality_probs.items():
        metrics[f"accuracy_{name}"] = float((probs.argmax(1) == labels).double().mean())
    if outputs.fusion_weight is not None:
        phi = contributions(modality_shapley(outputs, target=labels)).mean(dim=0)
        for name, value in zip(outputs.features, phi.tolist()):
            metrics[f"phi_{name}"] = value
        metrics["phi_gap"] = float(phi.max() - phi.min())
    return metrics


def _fingerprint(pool_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(pool_ids).encode()).hexdigest()


def _check_run(output_dir: Path, config: dict[str, Any]) -> None:
    path = output_dir / RUN_FILE
    if path.is_file():
        recorded = read_json(path)
        changed = {k: (recorded.get(k), v) for k, v in config.items() if recorded.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise InputError(f"{output_dir} holds a loop run with other settings ({detail}); use another directory")
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, config)


def _finished_rounds(output_dir: Path) -> list[dict[str, Any]]:
    """The complete rounds on disk, in order; half-written ones (a kill during the write) are removed."""
    rounds_dir = output_dir / ROUNDS_DIR
    rounds_dir.mkdir(parents=True, exist_ok=True)
    for leftover in rounds_dir.glob("*.tmp"):
        shutil.rmtree(leftover)
    done = []
    while (rounds_dir / f"{len(done):03d}" / "round.json").is_file():
        done.append(read_json(rounds_dir / f"{len(done):03d}" / "round.json"))
    return done


def _write_round(output_dir: Path, record: dict[str, Any], learner: Learner) -> None:
    final = output_dir / ROUNDS_DIR / f"{record['round']:03d}"
    staging = final.with_name(final.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    if hasattr(learner, "save"):
        learner.save(staging / "model.pt")
    atomic_write_json(staging / "round.json", record)
    os.replace(staging, final)  # the round appears whole or not at all


def run_loop(
    pool: Pool,
    learner: Learner,
    strategy: str | Strategy,
    oracle: Oracle,
    output_dir: str | os.PathLike,
    *,
    budget: int,
    rounds: int,
    initial: int | Sequence[Any] = 0,
    seed: int = 0,
    evaluation: tuple[Sequence[Any], Sequence[int]] | None = None,
    strategy_name: str | None = None,
) -> LoopResult:
    """Run (or resume) `rounds` query rounds after an initial labelled set, recording each under `output_dir`.

    Args:
        pool (`Pool`): the samples; `learner` reads its rows.
        learner (`Learner`): re-trained from scratch every round, seeded by `round_seed`.
        strategy (`str` or callable): a name of `STRATEGIES` or a `(query, budget, generator) -> positions` callable.
        oracle (`Oracle`): answers each round's queries; a `FileOracle` without the labels yet stops the loop
            (`LoopResult.waiting`), and the same call resumes once `labels.jsonl` holds them.
        output_dir (`str`): `run.json`, `pending.json` and `rounds/NNN/{round.json, model.pt}`.
        budget (`int`): samples queried per round.
        rounds (`int`): query rounds after round 0 (the initial set).
        initial (`int` or ids): round 0: a seeded random draw of this many candidates, or these ids.
        seed (`int`, defaults to 0): seeds round 0's draw, the learner and the strategy.
        evaluation (`tuple`, *optional*): `(ids, labels)` of held-out pool rows, never queried, scored every round.
        strategy_name (`str`, *optional*): how `run.json` names a callable strategy.
    """
    output_dir = Path(output_dir)
    name = strategy if isinstance(strategy, str) else (strategy_name or type(strategy).__name__)
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
        strategy = STRATEGIES[strategy]
    eval_positions = pool.positions(evaluation[0]) if evaluation else []
    eval_labels = torch.as_tensor(list(evaluation[1]), dtype=torch.long) if evaluation else None
    initial_ids = None if isinstance(initial, int) else [str(i) for i in initial]
    config = {
        "strategy": name,
        "budget": int(budget),
        "initial": len(initial_ids) if initial_ids is not None else int(initial),
        "initial_ids_sha256": _fingerprint(initial_ids) if initial_ids is not None else None,
        "seed": int(seed),
        "pool_size": len(pool),
        "pool_ids_sha256": _fingerprint(pool.ids),
        "evaluation_size": len(eval_positions),
    }
    available = len(pool) - len(set(eval_positions))
    if initial_ids is None and not 0 <= int(initial) <= available:
        raise InputError(f"an initial set of {initial} is larger than the {available} candidates")
    _check_run(output_dir, config)
    result = LoopResult(rounds=_finished_rounds(output_dir))
    excluded = set(eval_positions)
    labelled = [p for r in result.rounds for p in pool.positions(r["queried"])]
    labels = [y for r in result.rounds for y in r["labels"]]
    fitted = False  # whether `learner` holds the previous round's model (else it is re-trained, same seed)
    for round_index in range(len(result.rounds), rounds + 1):
        generator = torch.Generator().manual_seed(round_seed(seed, round_index))
        taken = set(labelled) | excluded
        candidates = [p for p in range(len(pool)) if p not in taken]
        queried = _pending(output_dir, round_index)
        if queried is None:
            if round_index == 0:
                picks = _initial(pool, candidates, initial_ids, int(initial), generator)
            else:
                if not fitted:
                    learner.fit(labelled, labels, seed=round_seed(seed, round_index - 1))
                picks = _query(learner, strategy, candidates, labelled, labels, budget, generator)
            queried = [pool.ids[p] for p in picks]
            atomic_write_json(output_dir / PENDING_FILE, {"round": round_index, "queried": queried})
        answers = oracle.label(queried, round_index)
        if answers is None:
            result.waiting = queried
            return result
        if len(answers) != len(queried):
            raise InputError(f"the oracle answered {len(answers)} labels for {len(queried)} queried ids")
        labelled += pool.positions(queried)
        labels += [int(y) for y in answers]
        learner.fit(labelled, labels, seed=round_seed(seed, round_index))
        fitted = True
        record = {"round": round_index, "queried": queried, "labels": [int(y) for y in answers]}
        record["metrics"] = {"labelled": len(labelled)}
        if eval_positions:
            record["metrics"].update(evaluate(learner.outputs(eval_positions), eval_labels))
        _write_round(output_dir, record, learner)
        (output_dir / PENDING_FILE).unlink(missing_ok=True)
        result.rounds.append(record)
        logger.info("round %d: %d queried, metrics %s", round_index, len(queried), record["metrics"])
    return result


def _pending(output_dir: Path, round_index: int) -> list[str] | None:
    path = output_dir / PENDING_FILE
    if not path.is_file():
        return None
    pending = read_json(path)
    return list(pending["queried"]) if pending.get("round") == round_index else None


def _initial(pool, candidates: list[int], ids: list[str] | None, size: int, generator: torch.Generator) -> list[int]:
    if ids is not None:
        return pool.positions(ids)
    if size > len(candidates):
        raise InputError(f"an initial set of {size} is larger than the {len(candidates)} candidates")
    order = torch.randperm(len(candidates), generator=generator)[:size]
    return [candidates[i] for i in order.tolist()]


def _query(learner, strategy, candidates, labelled, labels, budget, generator) -> list[int]:
    query = Query(
        candidates=learner.outputs(candidates),
        labelled=learner.outputs(labelled) if labelled else None,
        labels=torch.as_tensor(labels, dtype=torch.long),
        candidate_positions=torch.as_tensor(candidates, dtype=torch.long),
        labelled_positions=torch.as_tensor(labelled, dtype=torch.long),
    )
    return [candidates[i] for i in strategy(query, budget, generator)]
