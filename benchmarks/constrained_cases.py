"""Constrained cases of ``sampler_efficiency.py --constrained``: the optimum lies on a constraint face.

Each case takes an ``interior`` landscape of :mod:`sampler_efficiency` (optimum ``w*`` with every weight
> 0.005) and adds a constraint that cuts ``w*`` off, so the constrained optimum lies on its face:

* ``cap``: the largest domain gets ``max_weight = 0.6 w*_j`` (a finite-data cap);
* ``floor``: the smallest domain gets ``min_weight = w*_j + 0.15`` (a must-have domain);
* ``group``: the two largest domains together get at most ``0.7 (w*_a + w*_b)``.

Samplers compared, each scored by the normalised regret of its recommendation against the
*constrained* optimum ``(f*_c - f(rec)) / (f*_c - mean f over the feasible set)``:

* ``gp-simplex``: BO inside the feasible polytope (bounds + group rows in the acquisition optimiser);
* ``random-feasible``: uniform draws inside the polytope (exact), best observed;
* ``tpe-projected``: Optuna's TPE on the whole simplex, each proposal projected onto the feasible set
  before it is scored (what one does with a sampler that cannot take constraints), best observed;
* ``grid-feasible``: the paper's design (K = 3, 4) without its infeasible points, best observed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import numpy as np
import optuna
from numpy.typing import NDArray
from scipy.optimize import minimize

from dmo_search import simplex
from dmo_search.constraints import MixtureConstraints
from dmo_search.sampler import VALUE_SE_ATTR, SimplexGPSampler

CASES = ("cap", "floor", "group")
SAMPLERS = ("gp-simplex", "random-feasible", "tpe-projected", "grid-feasible")


@dataclasses.dataclass(frozen=True)
class Case:
    """A landscape, constraints that cut off its optimum, and the constrained optimum."""

    kind: str
    land: object  # sampler_efficiency.Landscape
    constraints: MixtureConstraints
    f_star: float
    w_star: tuple[float, ...]
    f_mean: float

    def regret(self, w: Sequence[float]) -> float:
        value = float(self.land.f(np.asarray(w, dtype=np.float64))[0])  # type: ignore[attr-defined]
        return max(self.f_star - value, 0.0) / (self.f_star - self.f_mean)


def make_case(kind: str, land: object, seed: int) -> Case:
    """Add the ``kind`` constraint to an interior landscape and find the constrained optimum."""
    w = np.asarray(land.w_star)  # type: ignore[attr-defined]
    k = len(w)
    names = [f"d{i}" for i in range(k)]
    order = np.argsort(-w)
    if kind == "cap":
        c = MixtureConstraints.build(names, max_weight={names[order[0]]: 0.6 * w[order[0]]})
    elif kind == "floor":
        j = int(order[-1])
        c = MixtureConstraints.build(names, min_weight={names[j]: min(w[j] + 0.15, 0.9)})
    elif kind == "group":
        a, b = int(order[0]), int(order[1])
        c = MixtureConstraints.build(names, groups=[([names[a], names[b]], None, 0.7 * (w[a] + w[b]))])
    else:
        raise ValueError(kind)
    f_star, w_star = _maximise_constrained(land, c, seed)
    f_mean = float(land.f(c.sample(20000, seed=seed)).mean())  # type: ignore[attr-defined]
    return Case(kind, land, c, f_star, tuple(float(x) for x in w_star), f_mean)


def _maximise_constrained(land: object, c: MixtureConstraints, seed: int) -> tuple[float, NDArray[np.float64]]:
    k = c.n_domains
    cands = np.concatenate([c.sample(20000, seed=seed + 1), [np.asarray(c.centre())]])
    values = land.f(cands)  # type: ignore[attr-defined]
    best_w, best_f = cands[int(np.argmax(values))], float(values.max())
    a, b = c._rows()
    cons = [
        {"type": "eq", "fun": lambda x: np.array([x.sum() - 1.0]), "jac": lambda x: np.ones((1, k))},
        {"type": "ineq", "fun": lambda x: b[2 * k :] - a[2 * k :] @ x, "jac": lambda x: -a[2 * k :]},
    ]

    def neg(x: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        value, grad = land._f_and_grad(x[None, :])  # type: ignore[attr-defined]
        return -float(value[0]), -grad[0]

    for x0 in cands[np.argsort(values)[::-1][:10]]:
        res = minimize(
            neg,
            x0,
            jac=True,
            method="SLSQP",
            bounds=list(zip(c.lower, c.upper, strict=True)),
            constraints=cons,
            options={"maxiter": 500, "ftol": 1e-13},
        )
        x = np.asarray(c.project(res.x))
        value = float(land.f(x)[0])  # type: ignore[attr-defined]
        if value > best_f:
            best_w, best_f = x, value
    return best_f, best_w


def run_case(
    sampler_name: str, case: Case, *, noise: float, seed: int, n_trials: int
) -> tuple[dict[int, float], float]:
    """Regret of the sampler's recommendation after each trial, and the run's seconds."""
    c, land = case.constraints, case.land
    k = c.n_domains
    noise_rng = np.random.default_rng([seed, 7919])
    regret: dict[int, float] = {}
    t0 = time.perf_counter()

    def score(w: Sequence[float]) -> float:
        return float(land.f(np.asarray(w))[0]) + noise * float(noise_rng.normal())  # type: ignore[attr-defined]

    if sampler_name in ("random-feasible", "grid-feasible"):
        if sampler_name == "random-feasible":
            points = c.sample(n_trials, seed=seed + 17)
        else:
            points = np.asarray([p for p in simplex.paper_design(k) if c.contains(p)])
        best_y, best_w = -math.inf, None
        for n, w in enumerate(points, start=1):
            y = score(w)
            if y > best_y:
                best_y, best_w = y, w
            regret[n] = case.regret(best_w)  # type: ignore[arg-type]
        return regret, time.perf_counter() - t0
    names = simplex.param_names(k)
    if sampler_name == "gp-simplex":
        sampler: optuna.samplers.BaseSampler = SimplexGPSampler(k, seed=seed, constraints=c)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    best_y, best_w = -math.inf, None
    for n in range(1, n_trials + 1):
        trial = study.ask()
        w = simplex.params_to_weights({p: trial.suggest_float(p, 0.0, 1.0) for p in names}, k)
        if sampler_name == "tpe-projected":
            w = c.project(w)
        assert c.contains(w), (sampler_name, w, c.violations(w))
        y = score(w)
        if noise > 0:  # the score's standard error, as the worker records it (gp-simplex reads it)
            trial.set_user_attr(VALUE_SE_ATTR, noise)
        study.tell(trial, y)
        if y > best_y:
            best_y, best_w = y, w
        if sampler_name == "gp-simplex":
            rec = sampler.recommend(study)  # type: ignore[attr-defined]
            assert c.contains(rec), rec
            regret[n] = case.regret(rec)
        else:
            regret[n] = case.regret(best_w)  # type: ignore[arg-type]
    return regret, time.perf_counter() - t0
