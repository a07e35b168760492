"""Acquisition functions and their maximisation on the simplex."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from botorch.acquisition.analytic import PosteriorMean
from botorch.models import SingleTaskGP
from numpy.typing import NDArray

from dmo_search import gp
from dmo_search.acquisition import (
    _negligible_subsets,
    best_mixtures,
    build_acquisition,
    drop_negligible_weights,
    maximise_on_simplex,
)
from dmo_search.constraints import MixtureConstraints

torch.set_num_threads(1)


def _model(target: list[float], n: int = 10, m: int = 1) -> tuple[torch.Tensor, torch.Tensor, object]:
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(len(target)), size=n)
    Y = np.stack([-np.sum((X - target) ** 2, axis=1) * (j + 1) for j in range(m)], axis=1)
    with gp.torch_context(0):
        return gp.fit_values(X, Y)


@pytest.mark.parametrize(
    ("m", "noisy", "name"),
    [
        (1, True, "qLogNoisyExpectedImprovement"),
        (1, False, "qUpperConfidenceBound"),
        (2, True, "qLogNoisyExpectedHypervolumeImprovement"),
        (2, False, "qLogNoisyExpectedHypervolumeImprovement"),
        (5, True, "qLogNParEGO"),
    ],
)
def test_the_acquisition_follows_the_number_of_objectives_and_the_noise(m: int, noisy: bool, name: str) -> None:
    """... and a pending mixture adds nothing to a batch: the log-acquisitions value it far lower than
    when it was not pending (it is as good as run); qUCB values the batch by its best member."""
    X, Y, model = _model([0.6, 0.3, 0.1], m=m)
    pending = np.array([[0.6, 0.3, 0.1]])
    values = []
    for p in (np.zeros((0, 3)), pending):
        acqf = build_acquisition(model, X, Y, p, seed=0, n_mc_samples=64, noisy=noisy)  # type: ignore[arg-type]
        assert type(acqf).__name__ == name
        with torch.no_grad():
            values.append(float(acqf(torch.from_numpy(pending).unsqueeze(0))))
    if name == "qUpperConfidenceBound":
        # A batch is worth the expected best of its members' bounds: the pending mixture adds nothing
        # to itself (up to the Monte-Carlo error), no mixture is worth less beside it. That a worker
        # beside a pending mixture goes elsewhere is tested in tests/test_sampler.py.
        others = torch.from_numpy(np.random.default_rng(1).dirichlet(np.ones(3), 16)).unsqueeze(1)
        with torch.no_grad():
            gains = acqf(others)
        assert values[1] == pytest.approx(values[0], abs=0.01), values
        assert float(gains.min()) > values[1] - 0.01, gains
    else:
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


def _fitted(f: Callable[[NDArray[np.float64]], float], *, noise: float, n: int = 24) -> SingleTaskGP:
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.dirichlet(np.ones(3), size=n), np.eye(3)])
    Y = np.asarray([f(x) for x in X]) + noise * rng.normal(size=len(X))
    with gp.torch_context(0):
        return gp.fit_values(X, Y[:, None], noisy=noise > 0, noise_floor=noise or None)[2]


def _harmful_third(w: NDArray[np.float64]) -> float:
    return float(-((w[0] - 0.5) ** 2) - (w[1] - 0.5) ** 2 - 0.02 * w[2])


def test_a_small_weight_the_noisy_posterior_cannot_tell_from_zero_is_dropped() -> None:
    model = _fitted(_harmful_third, noise=0.02)
    w = np.array([0.48, 0.48, 0.04])
    out = drop_negligible_weights(model, w, below=0.25 / 3)
    np.testing.assert_allclose(out, [0.5, 0.5, 0.0])
    # a weight at or above ``below`` is never dropped, nor one a constraint keeps above zero
    np.testing.assert_array_equal(drop_negligible_weights(model, w, below=0.04), w)
    c = MixtureConstraints.build(["a", "b", "c"], min_weight={"c": 0.02})
    np.testing.assert_array_equal(drop_negligible_weights(model, w, below=0.25 / 3, constraints=c), w)


def test_a_small_weight_the_posterior_says_matters_is_kept() -> None:
    """Noiseless values that fall steeply as the third weight goes to zero: the posterior is sure."""
    model = _fitted(lambda w: float(np.log(w[2] + 0.01) - (w[0] - w[1]) ** 2), noise=0.0)
    w = np.array([0.48, 0.48, 0.04])
    np.testing.assert_array_equal(drop_negligible_weights(model, w, below=0.25 / 3), w)


def test_up_to_ten_small_weights_every_subset_is_tried() -> None:
    """Three weights under ``below`` (one at it, which is not small): all seven non-empty subsets."""
    w = np.array([0.5, 0.01, 0.3, 0.02, 0.1, 0.03, 0.04])
    subsets = list(_negligible_subsets(w, below=0.04))
    assert sorted(subsets) == sorted([(1,), (3,), (5,), (1, 3), (1, 5), (3, 5), (1, 3, 5)])


def test_past_ten_small_weights_only_the_smallest_are_tried() -> None:
    """Eleven small weights (2047 subsets): the j smallest for each j, in the order of the weights."""
    small = np.array([0.009, 0.002, 0.008, 0.001, 0.007, 0.003, 0.006, 0.004, 0.005, 0.0055, 0.002])
    w = np.concatenate([[1.0 - small.sum()], small])
    subsets = list(_negligible_subsets(w, below=0.01))
    order = [4, 2, 11, 6, 8, 9, 10, 7, 5, 3, 1]  # indices of w by weight; the tie 0.002 in index order
    assert subsets == [tuple(order[:j]) for j in range(1, 12)]


def test_many_small_weights_are_dropped_smallest_first() -> None:
    """End to end past ten small weights (the branch the test above lists the subsets of): on noise alone
    the posterior tells no candidate from ``w``, so the sparsest one, the vertex, is returned."""
    rng = np.random.default_rng(2)
    k = 12
    X = rng.dirichlet(np.ones(k), size=30)
    Y = 0.02 * rng.normal(size=(30, 1))  # noise alone: the posterior tells no mixture from another
    with gp.torch_context(0):
        model = gp.fit_values(X, Y, noisy=True, noise_floor=0.02)[2]
    w = 0.005 + 0.001 * np.arange(k, dtype=np.float64)  # eleven weights under 1 / (4K)
    w[0] = 1.0 - w[1:].sum()
    out = drop_negligible_weights(model, w, below=0.25 / k)
    np.testing.assert_array_equal(out, np.eye(k)[0])
