"""The acquisition functions of :class:`dmo_search.sampler.SimplexGPSampler` and their maximisation
on the simplex (bounds ``[0, 1]``, ``sum w = 1``, and a study's linear constraints)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from dmo_search import simplex
from dmo_search.constraints import MixtureConstraints

if TYPE_CHECKING:
    import torch
    from botorch.acquisition import AcquisitionFunction
    from botorch.models import SingleTaskGP

__all__ = ["best_mixtures", "build_acquisition", "drop_negligible_weights", "maximise_on_simplex"]

# NOTE: qLogNEHVI's box decompositions grow exponentially with the number of objectives; BoTorch
# recommends it up to about 4 objectives, so more objectives use qLogNParEGO (random Chebyshev
# scalarisations, one per trial).
_MAX_HYPERVOLUME_OBJECTIVES = 4
# qUCB's beta for a noiseless objective: the posterior mean plus sqrt(2) posterior sds (of the
# standardised score). The common fixed choice, not tuned here (only 2 was measured).
_UCB_BETA = 2.0
# drop_negligible_weights scores every subset of up to this many small weights (1023 mixtures).
_MAX_SUBSET_WEIGHTS = 10


def build_acquisition(
    model: SingleTaskGP,
    X: torch.Tensor,
    Y: torch.Tensor,
    pending: NDArray[np.float64],
    seed: int,
    *,
    n_mc_samples: int,
    noisy: bool = True,
) -> AcquisitionFunction:
    """qLogNEI (one noisy objective), qUCB (one noiseless objective), qLogNEHVI (up to four objectives)
    or qLogNParEGO, with ``pending`` as ``X_pending``.

    ``noisy`` says whether the trials report a standard error above zero. Without noise, qLogNEI fell
    short on the flattest landscape (an 8-domain optimum deep in the interior, whose whole spread is
    0.007 in score: regret 0.071 after 30 trials); qUCB with ``beta = 2`` (mean + 1.41 sd) gives the
    posterior sd a fixed weight.
    Measured side by side with ``benchmarks/sampler_efficiency.py``'s noiseless landscapes (docs/sampler.md
    has the figures): K = 8 interior, seeds 10-39, regret after 30 trials median 0.009 -> 0.008, worst
    0.071 -> 0.042, after 40 worst 0.024 -> 0.008 (slower after 15 trials, median 0.049 -> 0.067); K = 8
    faces and vertices (seeds 20-29) the same or better after 30 trials; K = 3 after 12 trials and K = 4
    faces after 18 the same. Noisy objectives keep qLogNEI: its improvement is measured against the
    posterior at the observed mixtures, not against their noisy scores.

    NOTE: a one-shot knowledge gradient (16 fantasies, 4 SLSQP starts on the simplex), which values a
    mixture by how much it would raise the maximum of the posterior mean (the recommendation), was
    measured in place of qLogNEI for noisy objectives: noise sd 0.01, K = 2-4, seeds 0-9,
    median-regret checkpoints 9 better and 15 worse by > 0.005 (K=3 face after 9 trials 0.109 -> 0.025,
    K=2 vertex after 4 0.025 -> 0.152, K=4 interior after 30 0.073 -> 0.135), 2x fewer trials than
    TPE in 30 of 36 cells against 28, and 1.8 times the studies' run time (2808 s against 1571 s); not kept.
    """
    import torch
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.sampling import SobolQMCNormalSampler

    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([n_mc_samples]), seed=seed)
    X_pending = torch.from_numpy(pending) if len(pending) else None
    n_objectives = Y.shape[-1]
    if n_objectives == 1 and not noisy:
        from botorch.acquisition.monte_carlo import qUpperConfidenceBound

        # A batch is worth the expected best of its members' bounds, so a mixture beside a pending
        # one adds little to it: pending mixtures are avoided as with qLogNEI.
        return qUpperConfidenceBound(model, beta=_UCB_BETA, sampler=sampler, X_pending=X_pending)
    if n_objectives == 1:
        return qLogNoisyExpectedImprovement(
            model, X_baseline=X, sampler=sampler, X_pending=X_pending, prune_baseline=True
        )
    if n_objectives <= _MAX_HYPERVOLUME_OBJECTIVES:
        from botorch.acquisition.multi_objective.logei import (
            qLogNoisyExpectedHypervolumeImprovement,
        )
        from botorch.acquisition.multi_objective.utils import get_default_partitioning_alpha
        from botorch.utils.multi_objective.hypervolume import infer_reference_point
        from botorch.utils.multi_objective.pareto import is_non_dominated

        ref_point = infer_reference_point(Y[is_non_dominated(Y)])
        return qLogNoisyExpectedHypervolumeImprovement(
            model,
            ref_point=ref_point,
            X_baseline=X,
            sampler=sampler,
            X_pending=X_pending,
            prune_baseline=True,
            alpha=get_default_partitioning_alpha(n_objectives),
        )
    from botorch.acquisition.multi_objective.parego import qLogNParEGO
    from botorch.utils.sampling import sample_simplex

    weights = sample_simplex(n_objectives, n=1, seed=seed, dtype=torch.float64)[0]
    return qLogNParEGO(
        model,
        X_baseline=X,
        scalarization_weights=weights,
        sampler=sampler,
        X_pending=X_pending,
        prune_baseline=True,
    )


def best_mixtures(model: SingleTaskGP, X: torch.Tensor, n: int = 3) -> torch.Tensor:
    """The ``n`` observed mixtures with the highest posterior mean (averaged over objectives)."""
    import torch

    with torch.no_grad():
        mean = model.posterior(X).mean.mean(dim=-1)
    return X[torch.argsort(mean, descending=True)[:n]]


def maximise_on_simplex(
    acqf: AcquisitionFunction,
    n_domains: int,
    *,
    q: int,
    anchors: torch.Tensor,
    seed: int,
    n_restarts: int,
    raw_samples: int,
    constraints: MixtureConstraints | None = None,
) -> NDArray[np.float64]:
    """Maximise ``acqf`` over ``q`` points of the simplex (sequential greedy for ``q > 1``).

    Args:
        acqf: the acquisition function.
        n_domains: K.
        q: the number of candidates.
        anchors: ``a x K`` mixtures around which starts are also drawn.
        seed: seeds the starts.
        n_restarts: SLSQP starts.
        raw_samples: uniform draws scored to choose the starts.
        constraints: per-domain bounds and group rows (bounds and inequality constraints of SLSQP).

    Returns:
        ``q x K`` candidates on the simplex (the sampler clips and renormalises them).
    """
    import torch
    from botorch.optim import optimize_acqf

    k = n_domains
    if constraints is None:
        bounds = torch.stack([torch.zeros(k, dtype=torch.float64), torch.ones(k, dtype=torch.float64)])
    else:
        bounds = torch.tensor([constraints.lower, constraints.upper], dtype=torch.float64)
    sum_to_one = [(torch.arange(k), torch.ones(k, dtype=torch.float64), 1.0)]
    inequalities = constraints.botorch_inequalities() if constraints is not None else None
    candidates, _ = optimize_acqf(
        acqf,
        bounds=bounds,
        q=q,
        num_restarts=n_restarts,
        raw_samples=raw_samples,
        equality_constraints=sum_to_one,
        inequality_constraints=inequalities or None,
        ic_generator=functools.partial(
            _simplex_initial_conditions, anchors=anchors, seed=seed, constraints=constraints
        ),
        sequential=q > 1,
        options={"maxiter": 200},
        retry_on_optimization_warning=False,
    )
    return candidates.detach().numpy().reshape(q, k)


def _simplex_initial_conditions(
    acq_function: AcquisitionFunction,
    bounds: torch.Tensor,
    q: int,
    num_restarts: int,
    raw_samples: int,
    *,
    anchors: torch.Tensor,
    seed: int,
    constraints: MixtureConstraints | None = None,
    **_unused: Any,
) -> torch.Tensor:
    """Starts for SLSQP on the simplex (an ``ic_generator`` for ``optimize_acqf``).

    Scores ``raw_samples`` uniform draws, ``raw_samples // 2`` draws on random faces, the vertices and
    perturbations of ``anchors``, and picks ``num_restarts`` of them by Boltzmann sampling on the
    acquisition value (the best is always kept). With ``constraints`` the uniform draws are drawn inside
    the feasible set and the other points are projected onto its bounds (those outside a group row
    are dropped).

    Returns:
        ``num_restarts x q x K`` starts, each row on the simplex.
    """
    import torch
    from botorch.optim.initializers import initialize_q_batch

    k = bounds.shape[-1]
    rng = np.random.default_rng(seed)
    uniform = rng.dirichlet(np.ones(k), size=raw_samples)
    faces = rng.dirichlet(np.ones(k), size=max(raw_samples // 2, 1))
    drop = rng.random(faces.shape) < 0.5
    drop[np.arange(len(faces)), np.argmax(faces, axis=1)] = False  # keep at least one domain
    faces[drop] = 0.0
    faces /= faces.sum(axis=1, keepdims=True)
    parts = [uniform, faces, np.eye(k)]
    a = anchors.detach().numpy()
    if len(a):
        for scale in (0.02, 0.1):
            centre = a[rng.integers(len(a), size=max(raw_samples // 8, 1))]
            parts.append(simplex.project_to_simplex(centre + rng.normal(scale=scale, size=centre.shape)))
    if constraints is not None:
        cloud = constraints.sample(4 * raw_samples, seed=0)  # drawn once per process (cached), subsampled here
        inside = cloud[rng.choice(len(cloud), size=raw_samples, replace=False)]
        extra = constraints.project_boxes(np.concatenate(parts[1:]))
        keep = [x for x in extra if constraints.contains(x)]
        parts = [inside, *([np.asarray(keep)] if keep else [])]
    pool = np.concatenate(parts)
    n = (len(pool) // q) * q
    X = torch.from_numpy(pool[rng.permutation(len(pool))[:n]]).to(bounds).reshape(-1, q, k)
    with torch.no_grad():
        values = torch.cat([acq_function(batch) for batch in X.split(256)])
    starts, _ = initialize_q_batch(X, values, n=min(num_restarts, len(X)), eta=2.0)
    return starts


def drop_negligible_weights(
    model: SingleTaskGP,
    w: NDArray[np.float64],
    *,
    below: float,
    constraints: MixtureConstraints | None = None,
) -> NDArray[np.float64]:
    """``w`` with its weights under ``below`` set to zero where the posterior cannot tell the difference.

    Candidates: ``w`` with any non-empty subset of its weights in ``(0, below)`` set to zero and the
    rest renormalised (feasible under ``constraints``); with more than ``_MAX_SUBSET_WEIGHTS`` such
    weights, only the ``j`` smallest for each ``j`` (the subsets would be too many to score). Of those
    whose posterior mean is below ``w``'s by at most one posterior sd of the difference, the one with
    the most zeros (then the highest mean) is returned; ``w`` when there is none. One objective only.
    """
    import torch
    from botorch.posteriors.gpytorch import GPyTorchPosterior

    candidates: list[tuple[int, NDArray[np.float64]]] = []
    for subset in _negligible_subsets(w, below):
        c = w.copy()
        c[list(subset)] = 0.0
        if c.sum() <= 0.0:
            continue
        c /= c.sum()
        if constraints is None or constraints.contains(c):
            candidates.append((len(subset), c))
    if not candidates:
        return w
    points = torch.from_numpy(np.stack([w] + [c for _, c in candidates]))
    with torch.no_grad():
        posterior = model.posterior(points)
        if not isinstance(posterior, GPyTorchPosterior):  # no joint covariance to compare with
            return w
        mean = posterior.mean.reshape(-1)
        cov = posterior.mvn.covariance_matrix.reshape(len(points), len(points))
    drop = mean[0] - mean[1:]
    sd = torch.sqrt(torch.clamp(cov[0, 0] + torch.diagonal(cov)[1:] - 2.0 * cov[0, 1:], min=0.0))
    best: tuple[tuple[int, float], NDArray[np.float64]] | None = None
    for j, (size, c) in enumerate(candidates):
        key = (size, float(mean[1 + j]))
        if float(drop[j]) <= float(sd[j]) and (best is None or key > best[0]):
            best = (key, c)
    return w if best is None else best[1]


def _negligible_subsets(w: NDArray[np.float64], below: float) -> Iterable[tuple[int, ...]]:
    """The index sets :func:`drop_negligible_weights` tries to zero: every non-empty subset of the
    weights in ``(0, below)``, or past ``_MAX_SUBSET_WEIGHTS`` of them the ``j`` smallest for each ``j``
    (nested, in the order of the weights; ties in index order)."""
    import itertools

    small = [i for i, x in enumerate(w) if 0.0 < x < below]
    if len(small) <= _MAX_SUBSET_WEIGHTS:
        return (s for size in range(1, len(small) + 1) for s in itertools.combinations(small, size))
    by_weight = sorted(small, key=lambda i: w[i])  # stable: ties keep index order
    return (tuple(by_weight[:size]) for size in range(1, len(small) + 1))
