"""optimize_simplex: the one-call API over every sampler, designs, storage and results."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

import dmo_search
from dmo_search import simplex
from dmo_search.optimize import SimplexOptimizationResult, default_grid_design, optimize_simplex

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)

TARGET = [0.5, 0.3, 0.2]


def score(w: list[float]) -> float:
    return 1.0 - sum((a - b) ** 2 for a, b in zip(w, TARGET, strict=True))


def test_package_exports_lazily_without_torch() -> None:
    code = (
        "import sys, dmo_search; assert 'torch' not in sys.modules and 'botorch' not in sys.modules; "
        "assert dmo_search.__version__ == '0.1.0'; "
        "assert sorted(dmo_search.__all__) == ['SimplexOptimizationResult', '__version__', 'optimize_simplex']; "
        "dmo_search.optimize_simplex; assert 'botorch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1], timeout=60)
    assert dmo_search.optimize_simplex is optimize_simplex
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dmo_search.nope  # noqa: B018


def test_gp_simplex_finds_the_optimum_and_records_weights() -> None:
    result = optimize_simplex(score, 3, 10, seed=0)
    assert isinstance(result, SimplexOptimizationResult)
    assert simplex.simplex_distance(result.recommended, TARGET) < 0.05
    weights, value = result.best_observed
    assert value == pytest.approx(score(weights))
    assert value == result.study.best_value
    trials = result.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 10
    for t in trials:
        w = t.user_attrs["weights"]
        np.testing.assert_allclose(w, simplex.params_to_weights(t.params, 3), atol=1e-12)
        assert t.value == pytest.approx(score(w))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.recommended = []  # type: ignore[misc]


@pytest.mark.parametrize("sampler", ["optuna-gp", "tpe", "random"])
def test_other_samplers_recommend_the_best_observed(sampler: str) -> None:
    result = optimize_simplex(score, 3, 6, sampler=sampler, seed=1)
    assert result.recommended == result.best_observed[0]
    assert len(result.study.trials) == 6
    for t in result.study.trials:
        w = t.user_attrs["weights"]
        assert min(w) >= 0 and abs(sum(w) - 1) < 1e-9


def test_designs_run_first_with_their_exact_weights() -> None:
    designs = [[0.125, 0.875, 0.0], [0.25, 0.25, 0.5]]
    seen: list[list[float]] = []

    def fn(w: list[float]) -> float:
        seen.append(w)
        return score(w)

    optimize_simplex(fn, 3, 3, sampler="random", designs=designs)
    assert seen[:2] == designs


def test_grid_runs_only_the_designs() -> None:
    result = optimize_simplex(score, 3, 100, sampler="grid")
    assert len(result.study.trials) == 21
    assert [t.user_attrs["weights"] for t in result.study.trials] == simplex.paper_design(3)
    best = max(simplex.paper_design(3), key=score)
    assert result.recommended == best
    capped = optimize_simplex(lambda w: w[0], 2, 3, sampler="grid")
    assert [t.user_attrs["weights"] for t in capped.study.trials] == simplex.paper_design(2)[:3]
    custom = optimize_simplex(score, 3, 10, sampler="grid", designs=[TARGET])
    assert len(custom.study.trials) == 1


def test_default_grid_for_many_domains_fits_the_budget() -> None:
    assert default_grid_design(3, 5) == simplex.paper_design(3)
    grid = default_grid_design(6, 30)  # step 2: 21 points; step 3 would be 56
    assert len(grid) == math.comb(2 + 5, 5)
    assert simplex.vertices(6)[0] in grid
    assert default_grid_design(8, 5) == simplex.grid_design(8, 1, interior=False)  # the vertices


def test_minimise_and_storage_resume(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def loss(w: list[float]) -> float:
        return -score(w)

    first = optimize_simplex(loss, 3, 6, storage=storage, study_name="s", maximize=False, designs=[TARGET])
    assert first.best_observed[1] == pytest.approx(-1.0)  # the design is the optimum
    assert first.recommended == pytest.approx(TARGET, abs=0.05)
    again = optimize_simplex(loss, 3, 2, storage=storage, study_name="s", maximize=False, designs=[TARGET])
    assert len(again.study.trials) == 8  # continued, and the design was not enqueued twice
    assert sum(t.user_attrs["weights"] == TARGET for t in again.study.trials) == 1


def test_failures_become_failed_trials() -> None:
    calls = {"n": 0}

    def flaky(w: list[float]) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("merge failed")
        return float("nan") if calls["n"] == 3 else score(w)

    result = optimize_simplex(flaky, 3, 5, sampler="random", catch=(RuntimeError,))
    assert [t.state for t in result.study.trials].count(TrialState.FAIL) == 2
    with pytest.raises(ValueError, match="no trial of study"):
        optimize_simplex(lambda w: float("nan"), 3, 2, sampler="random")

    def broken(w: list[float]) -> float:
        raise RuntimeError("merge failed")

    with pytest.raises(RuntimeError, match="merge failed"):  # not caught unless asked
        optimize_simplex(broken, 3, 1, sampler="random")


def test_several_objectives() -> None:
    result = optimize_simplex(lambda w: [w[0], w[1] + w[2]], 3, 3, sampler="random", n_objectives=2)
    assert len(result.study.directions) == 2
    assert result.best_observed[1] == pytest.approx(0.5)  # the mean of two scores summing to 1
    with pytest.raises(ValueError, match="expected n_objectives=2"):
        optimize_simplex(lambda w: 1.0, 3, 1, sampler="random", n_objectives=2)


def test_noise_sd_is_recorded_on_every_trial() -> None:
    result = optimize_simplex(score, 3, 3, sampler="random", noise_sd=0.02)
    assert [t.user_attrs["value_se"] for t in result.study.trials] == [0.02] * 3
    assert all("value_se" not in t.user_attrs for t in optimize_simplex(score, 3, 2, sampler="random").study.trials)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_trials": 0}, "n_trials must be >= 1"),
        ({"n_domains": 1}, "at least 2 domains"),
        ({"sampler": "bayes"}, "unknown sampler"),
        ({"designs": [[0.5, 0.5]]}, "expected 3 weights"),
        ({"noise_sd": -0.1}, "noise_sd must be a finite number >= 0"),
        ({"noise_sd": float("nan")}, "noise_sd must be a finite number >= 0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"n_domains": 3, "n_trials": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        optimize_simplex(score, **args)  # type: ignore[arg-type]
