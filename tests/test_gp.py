"""The GP surrogate: what it reads, how it scales the values, what it returns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmo_search import gp

torch.set_num_threads(1)


def test_values_are_divided_by_their_spread_or_a_constant_by_its_size() -> None:
    Y = np.array([[1.0, 5.0, 0.0, 3e-9], [3.0, 5.0, 0.0, 1e-9]])
    np.testing.assert_allclose(gp.value_scale(Y), [1.0, 5.0, 1.0, 1e-9])
    np.testing.assert_allclose(gp.unit_scaled(Y), Y / gp.value_scale(Y))
    np.testing.assert_allclose(gp.unit_scaled(Y[:1]), Y[:1])  # one row: nothing to scale by
    # a constant up to round-off is divided by its size, not by the round-off
    Y = np.array([[1.0], [1.0 + 1e-15]])
    assert gp.value_scale(Y)[0] == pytest.approx(1.0)


def test_fit_values_is_the_same_model_for_f_and_c_times_f() -> None:
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=8)
    y = -np.sum((X - [0.6, 0.3, 0.1]) ** 2, axis=1, keepdims=True)
    points = torch.from_numpy(rng.dirichlet(np.ones(3), size=5))
    means = []
    for c in (1.0, 2.0, 1e-9):
        with gp.torch_context(0):
            Xt, Yt, model = gp.fit_values(X, c * y)
            torch.testing.assert_close(Xt, torch.from_numpy(X))
            torch.testing.assert_close(Yt, torch.from_numpy(gp.unit_scaled(c * y)))
            with torch.no_grad():
                means.append(model.posterior(points).mean.squeeze(-1))
    torch.testing.assert_close(means[0], means[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(means[0], means[2], atol=1e-4, rtol=1e-4)


def test_the_gp_reads_the_weights_and_their_roots() -> None:
    """The kernel's inputs are the weights, then their roots in [0, 1] (steep at a zero weight); the
    warm-start prior mean still reads the weights."""
    W = torch.tensor([[0.0, 0.25, 0.75], [1.0, 0.0, 0.0], [0.5, 0.49, 0.01], [0.2, 0.3, 0.5]], dtype=torch.float64)
    F = gp.mixture_features(W)
    torch.testing.assert_close(F[:, :3], W)
    roots = F[:, 3:]
    assert bool((roots[W == 0] == 0).all()) and bool((roots[W == 1] == 1).all())
    assert float(roots[2, 2]) > 0.05  # 1% of the weight moves its root by over 5% of the range
    assert bool((torch.diff(roots[W[:, 1].argsort(), 1]) > 0).all())  # the roots keep the weights' order

    y = torch.tensor([[0.1], [0.4], [0.3], [0.2]], dtype=torch.float64)
    model = gp.fit_gp(W, y)
    torch.testing.assert_close(model.train_inputs[0], F)  # eval mode holds the transformed inputs
    assert model.covar_module.lengthscale.shape[-1] == 6  # one lengthscale per feature

    source = gp.fit_gp(W[:, :2] / W[:, :2].sum(-1, keepdim=True), y)
    mean = gp._prior_mean(source, 0.25, 0.1, shared=(0, 1))
    mass = W[:, :2].sum(-1)
    expected = mean.constant + mean.scale * mass * (source.posterior(W[:, :2] / mass[:, None]).mean[:, 0] - 0.25) / 0.1
    with torch.no_grad():
        torch.testing.assert_close(mean(F), expected.detach())


def test_a_noiseless_gp_calibrates_its_lengthscale_prior_on_the_simplex() -> None:
    """Hvarfner's prior scales lengthscales with the root of the cube's dimension, as far apart as the
    cube's uniform points lie. The simplex's features lie about as far apart as a 3.5-dimensional
    cube's at any K (checked against Monte Carlo), so a noiseless GP's prior is set by that spread; a
    noisy GP keeps the cube's ``d = 2K``."""
    rng = np.random.default_rng(0)
    for k in (2, 4, 8):
        a, b = (torch.from_numpy(rng.dirichlet(np.ones(k), size=200_000)) for _ in range(2))
        spread = 6.0 * float(((gp.mixture_features(a) - gp.mixture_features(b)) ** 2).sum(-1).mean())
        assert gp.effective_dims(k) == pytest.approx(spread, rel=0.01)
        assert 3.0 < gp.effective_dims(k) < 4.0
        W = torch.from_numpy(rng.dirichlet(np.ones(k), size=4))
        y = torch.arange(4.0, dtype=torch.float64)[:, None]
        for noisy, d in ((False, gp.effective_dims(k)), (True, 2 * k)):
            kernel = gp.fit_gp(W, y, noisy=noisy).covar_module
            assert kernel.lengthscale.shape[-1] == 2 * k
            assert float(kernel.lengthscale_prior.loc) == pytest.approx(math.sqrt(2) + 0.5 * math.log(d))


def test_a_noise_floor_holds_the_fitted_noise_at_that_sd_in_the_values_units() -> None:
    """``noise_floor`` is a noise sd in the values' units: the same floor for ``f`` and ``c * f`` with
    ``c * floor``, and a fit that would go lower stops there."""
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=10)
    y = -np.sum((X - [0.6, 0.3, 0.1]) ** 2, axis=1, keepdims=True)  # smooth: the free noise is tiny
    floor = 0.3 * float(np.std(y, ddof=1))
    noises = []
    for c in (1.0, 100.0):
        with gp.torch_context(0):
            _, _, free = gp.fit_values(X, c * y, noisy=True)
            _, _, held = gp.fit_values(X, c * y, noisy=True, noise_floor=c * floor)
        assert float(free.likelihood.noise.detach().mean()) < 0.3**2 / 2
        noises.append(float(held.likelihood.noise.detach().mean()))
    assert noises[0] == pytest.approx(0.3**2, rel=1e-3)
    assert noises[1] == pytest.approx(noises[0], rel=1e-6)
    with gp.torch_context(0):  # a floor far below the default lower bound leaves the default
        _, _, low = gp.fit_values(X, y, noisy=True, noise_floor=1e-9)
    assert float(low.likelihood.noise_covar.raw_noise_constraint.lower_bound) == pytest.approx(1e-4)
