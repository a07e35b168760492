"""Selection: diverse top picks, seeded calibration mixtures far from them."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from dmo_search import simplex
from dmo_search.promote.select import calibration_points, diverse_top, select_candidates
from dmo_search.sampler import VALUE_SE_ATTR, SimplexGPSampler


def test_diverse_top_skips_near_duplicates() -> None:
    pts = [[0.5, 0.5, 0.0], [0.52, 0.48, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]
    scores = [0.9, 0.89, 0.5, 0.1]
    assert diverse_top(pts, scores, 3, min_distance=0.1) == [0, 2, 3]
    assert diverse_top(pts, scores, 3, min_distance=0.0) == [0, 1, 2]
    assert diverse_top(pts, scores, 2, min_distance=2.0) == [0]  # nothing else is far enough


def test_calibration_points_are_seeded_spread_and_far_from_picks() -> None:
    picks = [[0.7, 0.3, 0.0], [0.8, 0.1, 0.1]]
    a = calibration_points(4, 3, avoid=picks, seed=0)
    assert a == calibration_points(4, 3, avoid=picks, seed=0)
    assert len(a) == 4
    for w in a:
        assert abs(sum(w) - 1) < 1e-12 and min(w) >= 0
    nearest = min(simplex.simplex_distance(w, p) for w in a for p in picks)
    # far compared with random mixtures: beats the median nearest-pick distance of Dirichlet draws
    rnd = np.random.default_rng(1).dirichlet(np.ones(3), size=200)
    typical = np.median([min(simplex.simplex_distance(r, p) for p in picks) for r in rnd])
    assert nearest > typical
    spread = min(simplex.simplex_distance(u, v) for u, v in itertools.combinations(a, 2))
    assert spread > 0.3
    assert calibration_points(0, 3) == []


def _study(points: list[list[float]], values: list[float], se: float | None = None) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for w, v in zip(points, values, strict=True):
        study.enqueue_trial(simplex.weights_to_params(w))  # parameters and weights agree, as in a study
        t = study.ask(simplex.distributions(3))
        t.set_user_attr("weights", w)
        if se is not None:
            t.set_user_attr(VALUE_SE_ATTR, se)
        study.tell(t, v)
    return study


def test_select_candidates_top_are_diverse_and_calibration_follows() -> None:
    rng = np.random.default_rng(0)
    pts = [[float(x) for x in r] for r in rng.dirichlet(np.ones(3), size=12)]
    vals = [float(1 - np.linalg.norm(np.asarray(p) - [0.6, 0.3, 0.1])) for p in pts]
    cands = select_candidates(_study(pts, vals), 3, top=3, calibration=2, min_distance=0.2, seed=0)
    assert [c.role for c in cands] == ["top"] * 3 + ["calibration"] * 2
    for u, v in itertools.combinations([c.weights for c in cands[:3]], 2):
        assert simplex.simplex_distance(u, v) >= 0.2
    assert {c.ranked_by for c in cands[:3]} == {"posterior_mean"}
    assert all(c.trial_number is not None and c.observed_value is not None for c in cands[:3])


def test_select_candidates_falls_back_to_observed_values() -> None:
    study = _study([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0.2, 0.7])
    cands = select_candidates(study, 3, top=2, calibration=1, min_distance=0.1, recommended=[0.2, 0.8, 0.0])
    assert [c.ranked_by for c in cands[:2]] == ["observed", "observed"]
    assert [c.trial_number for c in cands[:2]] == [1, 0]
    with pytest.raises(ValueError, match="no completed trial"):
        select_candidates(optuna.create_study(direction="maximize"), 3, top=1, calibration=0, min_distance=0.1)
    with pytest.raises(ValueError, match="minimises its objective"):
        select_candidates(optuna.create_study(direction="minimize"), 3, top=1, calibration=0, min_distance=0.1)


def test_top_picks_are_ranked_by_the_recommending_gp_in_the_scores_units() -> None:
    """The rank scores are the posterior means of the GP behind the recommendation (with the noise
    prior that reported standard errors call for), in the scores' units: scores a billion times
    smaller give the same picks, with rank scores a billion times smaller."""
    rng = np.random.default_rng(3)
    pts = [[float(x) for x in r] for r in rng.dirichlet(np.ones(3), size=10)]
    vals = [float(-np.sum((np.asarray(p) - [0.6, 0.3, 0.1]) ** 2) + 0.01 * rng.normal()) for p in pts]
    picks, scores = {}, {}
    for c in (1.0, 1e-9):
        study = _study(pts, [c * v for v in vals], se=c * 0.01)
        gp = SimplexGPSampler(3, seed=5)
        cands = select_candidates(study, 3, top=3, calibration=0, min_distance=0.05, gp=gp)
        assert {x.ranked_by for x in cands} == {"posterior_mean"}
        scores[c] = [x.rank_score for x in cands]
        assert scores[c] == pytest.approx(gp.posterior_mean(study, [x.weights for x in cands]), rel=1e-9)
        picks[c] = [x.weights for x in cands]
    assert picks[1.0] == picks[1e-9]
    assert scores[1e-9] == pytest.approx([1e-9 * v for v in scores[1.0]], rel=1e-4)


def test_constraints_keep_top_picks_and_calibration_mixtures_inside() -> None:
    from dmo_search.constraints import MixtureConstraints

    c = MixtureConstraints.build(["a", "b", "c"], max_weight={"a": 0.5}, min_weight={"c": 0.1})
    rng = np.random.default_rng(0)
    pts = [[float(x) for x in r] for r in rng.dirichlet(np.ones(3), size=12)]
    # the best observed mixtures have a > 0.5 (run before the constraints were set): they are not promoted
    vals = [float(p[0]) for p in pts]
    cands = select_candidates(_study(pts, vals), 3, top=2, calibration=3, min_distance=0.1, seed=0, constraints=c)
    assert [c_.role for c_ in cands].count("calibration") == 3
    assert all(c.contains(x.weights) for x in cands), [x.weights for x in cands]
    assert len(calibration_points(5, 3, seed=1, constraints=c)) == 5
