"""Multi-fidelity scoring: score a candidate on a small nested subset first, prune it when it cannot
beat the best, and finish survivors on the full subset.

``objective.fidelities: [n_1, ..., n_full]`` (off by default). At each size but the last the trial
reports its aggregate (``trial.report(value, step=n)``) and :class:`BestBoundPruner` decides. The
subsets are nested seeded samples of the study's fixed subset, the same examples for every candidate,
so a candidate's small-subset score is compared with the best trial's score on the *same* examples.

A pruned trial ends PRUNED with ``scores``, ``value_se``, ``n_examples`` and ``pruned_at`` from its
last level; a study's ``n_trials`` counts COMPLETE trials only. The ``gp-simplex`` sampler models a
PRUNED trial at its last reported value: the mean over a random sample of the examples the COMPLETE
trials are scored on, so an unbiased (if noisier) estimate of the same quantity, not a different
one. Left out of the GP (as at first), the pruned mixtures stayed attractive to the acquisition and
were proposed again and again (toy world, ``prune_z`` 0.5: 100 PRUNED for 8 COMPLETE).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from dmo_search.sampler import VALUE_SE_ATTR

if TYPE_CHECKING:
    from dmo_search.backends import Backend
    from dmo_search.objectives import Objective, ObjectiveResult

__all__ = ["BestBoundPruner", "evaluate_with_fidelities"]


class BestBoundPruner(BasePruner):
    """Prune a trial whose score at a fidelity, plus ``z`` standard errors, is below the best
    COMPLETE trial's score at that fidelity (its final value if it has none there).

    Args:
        z: how many bootstrap standard errors of benefit of the doubt a candidate gets. Defaults to 2.
        n_startup_trials: COMPLETE trials needed before anything is pruned. Defaults to 3.
    """

    def __init__(self, *, z: float = 2.0, n_startup_trials: int = 3) -> None:
        if z < 0 or n_startup_trials < 1:
            raise ValueError(f"need z >= 0 and n_startup_trials >= 1, got z={z}, n_startup_trials={n_startup_trials}")
        self.z = z
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether ``trial`` (maximised) cannot beat the best COMPLETE trial at its last reported step."""
        step = trial.last_step
        if step is None:
            return False
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.n_startup_trials:
            return False
        levels = trial.user_attrs.get("fidelity", {})
        se = float(levels.get(str(step), {}).get("value_se", 0.0))
        best = max(t.intermediate_values.get(step, t.value) for t in done if t.value is not None)
        return trial.intermediate_values[step] + self.z * se < best


def evaluate_with_fidelities(
    trial: optuna.Trial,
    backend: Backend,
    objective: Objective,
    fidelities: list[int],
    *,
    pruner: BasePruner | None = None,
) -> ObjectiveResult:
    """Score the backend's current model level by level; the full-subset result if the trial survives.

    Args:
        trial: the running trial (single-objective study, maximised).
        backend: the engine already serving the trial's mixture.
        objective: scores ``n`` examples per domain with ``evaluate(backend, n=n)``.
        fidelities: increasing subset sizes; the last is the objective's full subset.
        pruner: decides after each level but the last. Defaults to :class:`BestBoundPruner` with
            ``z = objective.prune_z`` (2 when unset).

    Raises:
        optuna.TrialPruned: the trial cannot beat the best; its last level's scores are stored.
        ValueError: the study is multi-objective (Optuna cannot prune those).
    """
    if len(trial.study.directions) > 1:
        raise ValueError("objective.fidelities needs a single-objective study; remove objective.fidelities")
    if pruner is None:
        z = getattr(objective, "prune_z", None)
        pruner = BestBoundPruner(z=2.0 if z is None else float(z))
    levels: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for n in fidelities[:-1]:
        res = objective.evaluate(backend, n=n)
        levels[str(n)] = {"value": res.value, "value_se": res.value_se, "scores": res.scores}
        trial.set_user_attr("fidelity", levels)
        trial.report(res.value, step=n)
        frozen = trial.study._storage.get_trial(trial._trial_id)
        if pruner.prune(trial.study, frozen):
            trial.set_user_attr("scores", res.scores)
            trial.set_user_attr(VALUE_SE_ATTR, res.value_se)  # gp-simplex reads it
            trial.set_user_attr("n_examples", res.n_examples)
            trial.set_user_attr("pruned_at", n)
            trial.set_user_attr("eval_seconds", time.perf_counter() - t0)
            raise optuna.TrialPruned(f"{res.value:.4f} +- {res.value_se:.4f} on {n} examples cannot beat the best")
    return objective.evaluate(backend, n=fidelities[-1])
