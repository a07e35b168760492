"""The GP-fit-starts benchmark: each fit recorded, the default fit changes no proposal, the best kept on request."""

from __future__ import annotations

import math

import botorch.fit
import numpy as np
import optuna
import pytest

from benchmarks import gp_fit_starts as starts
from dmo_search import gp, simplex
from dmo_search.sampler import SimplexGPSampler

K, N_TRIALS = 2, 6


def _study_weights(fits: list[starts.Fit] | None) -> list[tuple[float, ...]]:
    land = starts.bench.make_landscape("interior", K, 0)

    def score(trial: optuna.Trial) -> float:
        w = simplex.params_to_weights({p: trial.suggest_float(p, 0.0, 1.0) for p in simplex.param_names(K)}, K)
        return float(land.f(w)[0])

    study = optuna.create_study(direction="maximize", sampler=SimplexGPSampler(K, seed=0))
    if fits is None:
        study.optimize(score, n_trials=N_TRIALS)
    else:
        with starts.fit_starts(2, fits):
            study.optimize(score, n_trials=N_TRIALS)
    return [tuple(t.params.values()) for t in study.trials]


def test_every_fit_is_recorded_and_the_study_keeps_the_default_fit() -> None:
    original = botorch.fit.fit_gpytorch_mll
    fits: list[starts.Fit] = []
    assert _study_weights(fits) == _study_weights(None)
    assert botorch.fit.fit_gpytorch_mll is original, "BoTorch's fit is restored"
    assert [f.n for f in fits] == list(range(K + 1, N_TRIALS))  # one fit per GP proposal, on the trials so far
    for f in fits:
        assert math.isfinite(f.default) and f.best >= f.default and f.seconds > 0.0


@pytest.mark.parametrize("keep_best", [False, True])
def test_the_model_keeps_the_fit_it_is_asked_to(keep_best: bool) -> None:
    # Wiggly noisy data whose MAP objective has a second, higher optimum than the default start reaches.
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=12)
    Y = (np.sin(12 * X[:, 0]) + 0.3 * rng.normal(size=12))[:, None]
    fits: list[starts.Fit] = []
    with gp.torch_context(0), starts.fit_starts(6, fits, keep_best=keep_best):
        _, _, model = gp.fit_values(X, Y, noisy=True)
    (fit,) = fits
    assert fit.best - fit.default > starts.MARGIN
    assert gp._log_evidence(model) == pytest.approx(fit.best if keep_best else fit.default, abs=1e-6)
