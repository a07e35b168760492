"""Which mixtures to promote: the best candidates, kept diverse, plus calibration mixtures.

Top candidates come from the study's completed trials (and the GP's recommended mixture), ranked by
the GP posterior mean at each point (denoised scores), or by the observed value when there is no
model (fewer than 3 completed trials, or a fit failure). A candidate closer than ``min_distance`` to
one already picked is skipped. Calibration mixtures spread the promoted set over the simplex: a
seeded greedy max-min design over a Dirichlet(1) pool, as far as possible from the picks and from each
other, so that the rank correlation is measured on a spread of scores, not only on near-ties.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import optuna
from numpy.typing import NDArray
from optuna.trial import TrialState

from dmo_search import simplex

if TYPE_CHECKING:
    from dmo_search.constraints import MixtureConstraints
    from dmo_search.sampler import SimplexGPSampler

__all__ = ["Candidate", "calibration_points", "diverse_top", "select_candidates"]

_log = logging.getLogger("dmo_search")
Role = Literal["top", "calibration"]


@dataclass(frozen=True)
class Candidate:
    """A mixture chosen for promotion.

    Attributes:
        weights: K floats summing to 1.
        role: ``'top'`` (a best candidate) or ``'calibration'`` (spread over the simplex).
        rank_score: what the pick was ranked by (posterior mean or observed value); None for calibration.
        ranked_by: ``'posterior_mean'``, ``'observed'`` or ``'design'``.
        trial_number: the completed trial at these weights, if any.
        observed_value: that trial's value (the proxy score), if any.
    """

    weights: list[float]
    role: Role
    rank_score: float | None
    ranked_by: str
    trial_number: int | None
    observed_value: float | None


def diverse_top(
    points: Sequence[Sequence[float]], scores: Sequence[float], k: int, *, min_distance: float
) -> list[int]:
    """Indices of up to ``k`` points, best score first, each at least ``min_distance`` from those kept.

    Ties keep the earlier point. Fewer than ``k`` come back when the points are not spread enough.
    """
    if len(points) != len(scores):
        raise ValueError(f"{len(points)} points but {len(scores)} scores")
    order = sorted(range(len(points)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if len(kept) >= k:
            break
        if all(simplex.simplex_distance(points[i], points[j]) >= min_distance for j in kept):
            kept.append(i)
    return kept


def calibration_points(
    m: int,
    n_domains: int,
    *,
    avoid: Sequence[Sequence[float]] = (),
    seed: int = 0,
    pool_size: int = 4096,
    constraints: MixtureConstraints | None = None,
) -> list[list[float]]:
    """``m`` mixtures spread over the simplex, far from ``avoid`` and from each other.

    Greedy max-min selection from a seeded pool of Dirichlet(1) draws plus the vertices and centre:
    each new point maximises its distance to the nearest point already placed (``avoid`` included).
    With ``constraints`` the pool is drawn inside them and the vertices and centre are projected.

    Args:
        m: how many points.
        n_domains: K.
        avoid: mixtures already promoted (``n x K``).
        seed: seeds the pool; the same seed gives the same points.
        pool_size: Dirichlet draws in the pool.
        constraints: hard constraints every point satisfies.
    """
    if m <= 0:
        return []
    rng = np.random.default_rng(seed)
    pool: NDArray[np.float64] = np.vstack(
        [rng.dirichlet(np.ones(n_domains), size=pool_size), np.eye(n_domains), np.full((1, n_domains), 1 / n_domains)]
    )
    if constraints is not None:
        corners = [constraints.project(x) for x in pool[pool_size:]]
        pool = np.vstack([constraints.sample(pool_size, seed=seed), np.asarray(corners)])
    placed = np.asarray(avoid, dtype=np.float64).reshape(-1, n_domains)
    if len(placed):
        nearest = np.min(np.linalg.norm(pool[:, None, :] - placed[None, :, :], axis=-1), axis=1)
    else:
        nearest = np.full(len(pool), np.inf)
    out: list[list[float]] = []
    for _ in range(m):
        # with nothing placed yet, start from the pool point farthest from the centre (a vertex)
        if not np.isfinite(nearest).any():
            i = int(np.argmax(np.linalg.norm(pool - 1 / n_domains, axis=1)))
        else:
            i = int(np.argmax(nearest))
        w = simplex.check_weights([float(x) for x in pool[i]], n_domains)
        out.append(w)
        nearest = np.minimum(nearest, np.linalg.norm(pool - pool[i], axis=1))
    return out


def select_candidates(
    study: optuna.Study,
    n_domains: int,
    *,
    top: int,
    calibration: int,
    min_distance: float,
    seed: int = 0,
    recommended: Sequence[float] | None = None,
    constraints: MixtureConstraints | None = None,
    gp: SimplexGPSampler | None = None,
) -> list[Candidate]:
    """The mixtures to promote: ``top`` diverse best candidates, then ``calibration`` spread ones.

    Args:
        study: a single-objective dmo-search study (trials carry ``weights`` user attributes).
        n_domains: K.
        top: how many best candidates.
        calibration: how many calibration mixtures.
        min_distance: minimum Euclidean distance between any two promoted mixtures (top picks).
        seed: seeds the calibration design.
        recommended: the study's recommended mixture (argmax of the posterior mean), added to the pool.
        constraints: the study's constraints: top picks outside them (trials run before they were set)
            are skipped, calibration mixtures are drawn inside them.
        gp: the sampler whose GP ranks the top picks (:func:`dmo_search.study.study_gp`: the model that
            recommended ``recommended``); defaults to a ``gp-simplex`` sampler with seed 0.

    Raises:
        ValueError: the study has no completed trial, is multi-objective, or ``top``/``calibration`` < 0.
    """
    if top < 0 or calibration < 0:
        raise ValueError(f"--top ({top}) and --calibration ({calibration}) must be >= 0")
    if len(study.directions) != 1:
        raise ValueError("promotion needs a single-objective study (one aggregate value per trial)")
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"promotion ranks larger scores first, but study {study.study_name!r} minimises its objective")
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and isinstance(t.user_attrs.get("weights"), list)
    ]
    if not done and top > 0:
        raise ValueError(f"study {study.study_name!r} has no completed trial to promote; run `dmo-search resume` first")
    X = np.asarray([t.user_attrs["weights"] for t in done], dtype=np.float64).reshape(-1, n_domains)
    Y = np.asarray([t.value for t in done], dtype=np.float64)
    pool = X
    numbers: list[int | None] = [t.number for t in done]
    values: list[float | None] = [float(v) for v in Y]
    if recommended is not None and (len(X) == 0 or np.min(np.linalg.norm(X - np.asarray(recommended), axis=1)) > 1e-9):
        pool = np.vstack([X, np.asarray(recommended, dtype=np.float64)[None, :]])
        numbers.append(None)
        values.append(None)
    ranked_by = "observed"
    scores = [float(v) for v in Y]
    if len(X) >= 3 and np.ptp(Y) > 0:
        from dmo_search.sampler import SimplexGPSampler

        model = gp or SimplexGPSampler(n_domains, constraints=constraints)
        try:
            scores = model.posterior_mean(study, pool)
            ranked_by = "posterior_mean"
        except Exception as e:  # a GP fit failure falls back to the observations
            _log.warning(f"ranking promotion candidates by observed values: the GP failed ({e!r})")
    if ranked_by == "observed":
        pool = X
    if constraints is not None:  # infeasible mixtures cannot win: rank them last, then drop them
        inside = [constraints.contains(x) for x in pool]
        scores = [s if ok else -np.inf for s, ok in zip(scores, inside, strict=True)]
    picks = diverse_top(pool.tolist(), scores, top, min_distance=min_distance) if top else []
    if constraints is not None:
        picks = [i for i in picks if np.isfinite(scores[i])]
    if len(picks) < top:
        _log.warning(f"only {len(picks)} candidate(s) at least {min_distance} apart; promoting those")
    out = [
        Candidate(
            weights=simplex.check_weights(pool[i].tolist(), n_domains),
            role="top",
            rank_score=scores[i],
            ranked_by=ranked_by,
            trial_number=numbers[i],
            observed_value=values[i],
        )
        for i in picks
    ]
    placed = [c.weights for c in out]
    for w in calibration_points(calibration, n_domains, avoid=placed, seed=seed, constraints=constraints):
        out.append(Candidate(w, "calibration", None, "design", None, None))
    return out
