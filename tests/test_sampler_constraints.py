"""gp-simplex and ``optimize_simplex`` under hard constraints: every proposal feasible, optima on constraint faces."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import optuna
import pytest

from dmo_search import optimize_simplex, simplex
from dmo_search.constraints import MixtureConstraints
from dmo_search.sampler import SimplexGPSampler
from dmo_search.sampling import make_sampler

NAMES = ["a", "b", "c"]


def _quadratic(target: list[float]) -> Callable[[list[float]], float]:
    t = np.asarray(target)
    return lambda w: -float(np.sum((np.asarray(w) - t) ** 2))


def test_optimum_on_a_cap_face_is_found_and_every_trial_is_feasible() -> None:
    c = MixtureConstraints.build(NAMES, max_weight={"a": 0.5})
    res = optimize_simplex(_quadratic([0.8, 0.1, 0.1]), 3, 12, constraints=c, seed=0)
    weights = [t.user_attrs["weights"] for t in res.study.trials]
    assert all(c.contains(w, tol=1e-9) for w in weights)
    # the constrained optimum is the projection of the target: a = 0.5 exactly, b = c = 0.25
    assert res.recommended == pytest.approx([0.5, 0.25, 0.25], abs=0.03)
    assert c.contains(res.recommended, tol=1e-9)


def test_group_and_minimum_constraints_hold_in_the_gp_phase_and_batches() -> None:
    c = MixtureConstraints.build(NAMES, min_weight={"c": 0.2}, groups=[(["a", "b"], None, 0.7)])
    sampler = SimplexGPSampler(3, seed=1, constraints=c)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    f = _quadratic([0.6, 0.4, 0.0])
    for _ in range(8):
        trial = study.ask()
        w = simplex.params_to_weights({p: trial.suggest_float(p, 0.0, 1.0) for p in simplex.param_names(3)}, 3)
        assert c.contains(w, tol=1e-9), (trial.number, w)
        study.tell(trial, f(w))
    batch = sampler.propose_batch(study, 3)
    assert len(batch) == 3 and all(c.contains(w, tol=1e-9) for w in batch)
    rec = sampler.recommend(study)
    assert c.contains(rec, tol=1e-9)
    assert rec[2] == pytest.approx(0.3, abs=0.05)  # the face a + b = 0.7


def test_designs_respect_the_constraints(caplog: pytest.LogCaptureFixture) -> None:
    c = MixtureConstraints.build(NAMES, max_weight={"a": 0.3})
    with caplog.at_level(logging.WARNING):
        sampler = SimplexGPSampler(3, constraints=c, initial_design="paper")
    kept = [list(p) for p in sampler._design_list]
    assert 0 < len(kept) < 21 and all(c.contains(p) for p in kept)
    assert "the paper's design: dropped" in caplog.text
    assert SimplexGPSampler(3, constraints=c)._design_list[0].tolist() == pytest.approx([0.3, 0.35, 0.35])
    loo = SimplexGPSampler(3, constraints=c, initial_design="leave-one-out")._design_list
    assert len(loo) == 4 and all(c.contains(p) for p in loo)
    assert loo[3].tolist() == pytest.approx([0.3, 0.6, 0.1])  # (0.5, 0.5, 0) projected under the cap
    with pytest.raises(ValueError, match=r"initial_design mixture 0 violates the study's constraints: w\[a\] = 0\.8"):
        SimplexGPSampler(3, constraints=c, initial_design=[[0.8, 0.1, 0.1]])


def test_grid_drops_infeasible_designs_and_listed_designs_are_checked() -> None:
    c = MixtureConstraints.build(NAMES, min_weight={"b": 0.3})
    res = optimize_simplex(_quadratic([0.2, 0.4, 0.4]), 3, 30, sampler="grid", constraints=c)
    ws = [t.user_attrs["weights"] for t in res.study.trials]
    assert len(ws) == len([p for p in simplex.paper_design(3) if c.contains(p)]) and all(c.contains(w) for w in ws)
    with pytest.raises(ValueError, match="designs\\[0\\] violates"):
        optimize_simplex(_quadratic([0.2, 0.4, 0.4]), 3, 2, designs=[[0.5, 0.1, 0.4]], constraints=c)


def test_cube_samplers_are_refused_with_constraints() -> None:
    c = MixtureConstraints.build(NAMES, max_weight={"a": 0.3})
    for name in ("tpe", "random", "optuna-gp"):
        with pytest.raises(ValueError, match="cannot respect the constraints"):
            make_sampler(name, 3, constraints=c)
    assert isinstance(
        make_sampler("tpe", 3, constraints=MixtureConstraints.unconstrained(NAMES)), optuna.samplers.TPESampler
    )
