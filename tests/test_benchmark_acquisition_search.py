"""The acquisition-search benchmark: its second search is recorded per proposal and changes no proposal."""

from __future__ import annotations

import math

import optuna

from benchmarks import acquisition_search as acq
from dmo_search import sampler as sampler_module

K, N_TRIALS = 2, 6


def _study_weights(pairs: list[tuple[float, float, float, float]] | None) -> list[tuple[float, ...]]:
    land = acq.bench.make_landscape("interior", K, 0)
    study = optuna.create_study(direction="maximize", sampler=acq.SimplexGPSampler(K, seed=0))
    if pairs is None:
        study.optimize(lambda t: _score(land, t), n_trials=N_TRIALS)
    else:
        with acq._second_search(4, 64, pairs):
            study.optimize(lambda t: _score(land, t), n_trials=N_TRIALS)
    return [tuple(t.params.values()) for t in study.trials]


def _score(land: acq.bench.LandscapeBase, trial: optuna.Trial) -> float:
    from dmo_search import simplex

    w = simplex.params_to_weights({p: trial.suggest_float(p, 0.0, 1.0) for p in simplex.param_names(K)}, K)
    return float(land.f(w)[0])


def test_the_second_search_is_recorded_and_the_study_keeps_the_default_proposal() -> None:
    original = sampler_module.maximise_on_simplex
    pairs: list[tuple[float, float, float, float]] = []
    assert _study_weights(pairs) == _study_weights(None)
    assert sampler_module.maximise_on_simplex is original, "the default search is restored"
    assert len(pairs) == N_TRIALS - (K + 1)  # one per GP proposal, none during the initial design
    for default, larger, apart, seconds in pairs:
        assert math.isfinite(default) and math.isfinite(larger)  # qUCB values (the objective is noiseless)
        assert 0.0 <= apart <= 1.0 and seconds > 0.0


def test_the_defaults_are_the_samplers() -> None:
    s = acq.SimplexGPSampler(K)
    assert (s._n_restarts, s._raw_samples) == (acq.DEFAULT_RESTARTS, acq.DEFAULT_RAW)
