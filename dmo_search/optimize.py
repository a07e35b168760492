"""``optimize_simplex``: search the mixture weights of a plain Python function with one call.

The function receives a list of K weights (non-negative, summing to 1) and returns a score. The
search is an Optuna study whose trials carry the weights as the cube parameters of
:mod:`dmo_search.simplex` and, as a record, in the user attribute ``weights``; studies and the CLI
build their sampler with the same factory, :func:`dmo_search.sampling.make_sampler`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from dmo_search import simplex
from dmo_search.sampler import VALUE_SE_ATTR, SimplexGPSampler, feasible_designs
from dmo_search.sampling import make_sampler

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from dmo_search.constraints import MixtureConstraints
    from dmo_search.warmstart import WarmStart

__all__ = ["SimplexOptimizationResult", "default_grid_design", "optimize_simplex"]

WEIGHTS_ATTR = "weights"
"""Trial user attribute holding the weights a trial evaluated."""

# The default grid for K >= 5 is never finer than the paper's 1/8.
_MAX_GRID_STEP = 8


@dataclasses.dataclass(frozen=True)
class SimplexOptimizationResult:
    """What :func:`optimize_simplex` found.

    Attributes:
        recommended: the mixture to use: the argmax of the GP posterior mean for ``gp-simplex``
            (robust to observation noise), the best observed mixture for the other samplers.
        best_observed: ``(weights, value)`` of the best completed trial (with several objectives,
            the value is their mean).
        study: the Optuna study, with every trial.
    """

    recommended: list[float]
    best_observed: tuple[list[float], float]
    study: optuna.Study


def default_grid_design(n_domains: int, n_trials: int) -> list[list[float]]:
    """The designs the ``grid`` sampler runs when none are given.

    The paper's design for K = 2..4 (:func:`dmo_search.simplex.paper_design`); for larger K, the
    finest full grid (weights multiples of ``1/step``, zeros allowed) with at most ``n_trials``
    points, and at least the vertices.
    """
    if 2 <= n_domains <= 4:
        return simplex.paper_design(n_domains)

    def size(step: int) -> int:  # the number of mixtures whose weights are multiples of 1/step
        return math.comb(step + n_domains - 1, n_domains - 1)

    step = 1
    while step < _MAX_GRID_STEP and size(step + 1) <= n_trials:
        step += 1
    return simplex.grid_design(n_domains, step, interior=False)


def optimize_simplex(
    fn: Callable[[list[float]], float | Sequence[float]],
    n_domains: int,
    n_trials: int,
    *,
    sampler: str | optuna.samplers.BaseSampler = "gp-simplex",
    seed: int = 0,
    storage: str | BaseStorage | None = None,
    maximize: bool = True,
    designs: Sequence[Sequence[float]] | None = None,
    study_name: str | None = None,
    n_objectives: int = 1,
    catch: tuple[type[Exception], ...] = (),
    show_progress_bar: bool = False,
    constraints: MixtureConstraints | None = None,
    warm_start: WarmStart | None = None,
    noise_sd: float | None = None,
) -> SimplexOptimizationResult:
    """Search the mixture weights that maximise (or minimise) ``fn``.

    Example:
        >>> from dmo_search import optimize_simplex
        >>> def score(w):
        ...     return 1.0 - (w[0] - 0.5) ** 2 - (w[1] - 0.3) ** 2 - (w[2] - 0.2) ** 2
        >>> result = optimize_simplex(score, 3, 12)  # doctest: +SKIP
        >>> [round(x, 2) for x in result.recommended]  # doctest: +SKIP
        [0.5, 0.3, 0.2]

    Args:
        fn: scores a mixture: takes K floats summing to 1 and returns a float (or, with
            ``n_objectives > 1``, a sequence of that many floats, e.g. one score per domain). A NaN
            marks the trial failed; an exception is re-raised unless its type is in ``catch``.
        n_domains: K (2 or more).
        n_trials: the number of trials run by this call, enqueued designs included.
        sampler: ``"gp-simplex"`` (simplex-native BO, the default), ``"optuna-gp"``, ``"tpe"``,
            ``"random"``, ``"grid"`` (the designs only), or an Optuna sampler.
        seed: the sampler's seed. Defaults to 0.
        storage: an Optuna storage or URL (e.g. ``"sqlite:///study.db"``); :obj:`None` keeps the
            study in memory. An existing study of the same name is continued.
        maximize: maximise ``fn`` (else minimise). Defaults to :obj:`True`.
        designs: mixtures evaluated first (enqueued in order, up to ``n_trials`` waiting; ones the study
            already holds are skipped). For ``"grid"`` they are the whole search and default to
            :func:`default_grid_design`.
        study_name: the study's name in ``storage``. Defaults to :obj:`None` (a generated name).
        n_objectives: the number of values ``fn`` returns. Defaults to 1; with more, the study is
            multi-objective and the recommendation maximises their mean.
        catch: exception types of ``fn`` that mark a trial failed instead of stopping the search.
        show_progress_bar: show Optuna's progress bar. Defaults to :obj:`False`.
        constraints: hard constraints on the weights (:class:`dmo_search.constraints.MixtureConstraints`):
            ``gp-simplex`` proposes only feasible mixtures, ``grid`` drops infeasible designs (with a
            message), listed ``designs`` must be feasible, cube samplers are refused.
        warm_start: trials of an earlier study mapped onto these domains
            (:func:`dmo_search.warmstart.warm_start_from_study`): recorded in the study, their best
            mixtures enqueued first and their posterior mean used as the GP's prior mean.
        noise_sd: the standard deviation of ``fn``'s observation noise, when known (e.g. the standard
            error of a score on a validation subset); recorded on every trial as ``value_se``, as the
            worker does. Above zero, ``gp-simplex`` gives its GP's noise a flat prior instead of the
            near-noiseless default. Defaults to :obj:`None` (unknown).

    Returns:
        the recommended mixture, the best observed one and the study.

    Raises:
        ValueError: for a bad argument (named), or when no trial completed.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got n_trials={n_trials}")
    if n_objectives < 1:
        raise ValueError(f"n_objectives must be >= 1, got n_objectives={n_objectives}")
    if noise_sd is not None and not (math.isfinite(noise_sd) and noise_sd >= 0):
        raise ValueError(f"noise_sd must be a finite number >= 0 (or None: unknown), got noise_sd={noise_sd}")
    names = simplex.param_names(n_domains)
    if constraints is not None and constraints.n_domains != n_domains:
        raise ValueError(f"constraints are over {constraints.n_domains} domains, not n_domains={n_domains}")
    if isinstance(sampler, str):
        sampler_obj = make_sampler(sampler, n_domains, seed=seed, constraints=constraints)
    else:
        sampler_obj = sampler
    direction = StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
    study = optuna.create_study(
        storage=storage,
        sampler=sampler_obj,
        study_name=study_name,
        directions=[direction] * n_objectives,
        load_if_exists=True,
    )
    if designs is None and sampler == "grid":
        designs = default_grid_design(n_domains, n_trials)
        if constraints is not None and not constraints.is_trivial:
            designs = feasible_designs(designs, constraints, "the grid design")
    checked = [simplex.check_weights(d, n_domains) for d in designs or []]
    if constraints is not None:
        checked = [constraints.check(w, f"designs[{i}]") for i, w in enumerate(checked)]
    if warm_start is not None:
        from dmo_search.warmstart import apply_warm_start, mark_designs_enqueued

        checked = [*apply_warm_start(study, warm_start), *checked]

    def n_waiting() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    for w in checked:
        if n_waiting() >= n_trials:
            break  # this call runs no more than n_trials trials; leave no design waiting
        study.enqueue_trial(simplex.weights_to_params(w), user_attrs={WEIGHTS_ATTR: w}, skip_if_exists=True)
    if warm_start is not None:
        mark_designs_enqueued(study)
    if sampler == "grid":
        n_trials = min(n_trials, n_waiting())

    def objective(trial: optuna.Trial) -> float | Sequence[float]:
        params = {name: trial.suggest_float(name, 0.0, 1.0) for name in names}
        w = simplex.params_to_weights(params, n_domains)
        enqueued = trial.user_attrs.get(WEIGHTS_ATTR)
        if enqueued is not None and simplex.simplex_distance(enqueued, w) < 1e-9:
            w = list(enqueued)  # the design's exact weights, not their round trip
        trial.set_user_attr(WEIGHTS_ATTR, w)
        values = np.atleast_1d(np.asarray(fn(list(w)), dtype=np.float64)).tolist()
        if len(values) != n_objectives:
            raise ValueError(f"fn returned {len(values)} values, expected n_objectives={n_objectives}")
        if noise_sd is not None:
            trial.set_user_attr(VALUE_SE_ATTR, float(noise_sd))
        return values[0] if n_objectives == 1 else values

    if n_trials > 0:  # 0 when "grid" finds every design already run
        study.optimize(objective, n_trials=n_trials, catch=catch, show_progress_bar=show_progress_bar)
    best = _best_trial(study)
    best_w = _weights_of(best, n_domains)
    best_value = float(sum(best.values) / len(best.values))
    if isinstance(sampler_obj, SimplexGPSampler):
        recommended = sampler_obj.recommend(study)
    else:
        recommended = best_w
    return SimplexOptimizationResult(recommended=recommended, best_observed=(best_w, best_value), study=study)


def _weights_of(trial: FrozenTrial, n_domains: int) -> list[float]:
    """The weights a trial evaluated: its ``weights`` attribute, else its decoded parameters."""
    recorded = trial.user_attrs.get(WEIGHTS_ATTR)
    if recorded is not None:
        return simplex.check_weights(recorded, n_domains)
    return simplex.params_to_weights(trial.params, n_domains)


def _best_trial(study: optuna.Study) -> FrozenTrial:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"no trial of study {study.study_name!r} completed; every trial failed or was pruned")
    sign = 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0
    return max(complete, key=lambda t: sign * sum(t.values) / len(t.values))
