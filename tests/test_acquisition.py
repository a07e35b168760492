"""Acquisition functions and their maximisation on the simplex."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from botorch.acquisition.analytic import PosteriorMean

from dmo_search import gp
from dmo_search.acquisition import best_mixtures, build_acquisition, maximise_on_simplex
from dmo_search.constraints import MixtureConstraints

torch.set_num_threads(1)


def _model(target: list[float], n: int = 10, m: int = 1) -> tuple[torch.Tensor, torch.Tensor, object]:
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(len(target)), size=n)
    Y = np.stack([-np.sum((X - target) ** 2, axis=1) * (j + 1) for j in range(m)], axis=1)
    with gp.torch_context(0):
        return gp.fit_values(X, Y)


@pytest.mark.parametrize(
    ("m", "name"),
    [
        (1, "qLogNoisyExpectedImprovement"),
        (2, "qLogNoisyExpectedHypervolumeImprovement"),
        (5, "qLogNParEGO"),
    ],
)
def test_the_acquisition_follows_the_number_of_objectives(m: int, name: str) -> None:
    """... and a pending mixture is worth less than when it was not pending (it is as good as run)."""
    X, Y, model = _model([0.6, 0.3, 0.1], m=m)
    pending = np.array([[0.6, 0.3, 0.1]])
    values = []
    for p in (np.zeros((0, 3)), pending):
        acqf = build_acquisition(model, X, Y, p, seed=0, n_mc_samples=64)  # type: ignore[arg-type]
        assert type(acqf).__name__ == name
        with torch.no_grad():
            values.append(float(acqf(torch.from_numpy(pending).unsqueeze(0))))
    assert values[1] < values[0] - 1.0, values  # log-acquisition values


def test_the_posterior_mean_is_maximised_on_a_face_of_the_simplex() -> None:
    X, _, model = _model([0.7, 0.3, 0.0])
    anchors = best_mixtures(model, X)  # type: ignore[arg-type]
    assert anchors.shape == (3, 3)
    best = maximise_on_simplex(
        PosteriorMean(model),  # type: ignore[arg-type]
        3,
        q=1,
        anchors=anchors,
        seed=0,
        n_restarts=4,
        raw_samples=128,
    )
    assert best.shape == (1, 3)
    assert best.sum() == pytest.approx(1.0, abs=1e-9) and best.min() >= -1e-9
    np.testing.assert_allclose(best[0], [0.7, 0.3, 0.0], atol=0.05)


def test_a_batch_respects_the_constraints_and_reaches_a_cap_face() -> None:
    X, Y, model = _model([0.8, 0.1, 0.1])
    c = MixtureConstraints.build(["a", "b", "c"], max_weight={"a": 0.5}, min_weight={"c": 0.2})
    acqf = build_acquisition(model, X, Y, np.zeros((0, 3)), seed=0, n_mc_samples=16)  # type: ignore[arg-type]
    batch = maximise_on_simplex(acqf, 3, q=2, anchors=X[:2], seed=0, n_restarts=4, raw_samples=128, constraints=c)
    assert batch.shape == (2, 3)
    for w in batch:
        assert c.contains(w / w.sum(), tol=1e-6), w
    assert batch[0][0] == pytest.approx(0.5, abs=1e-6)  # the target lies beyond the cap: on its face
