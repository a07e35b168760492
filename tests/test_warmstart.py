"""Warm starts: domain mapping by name, projection onto the new constraints, provenance, and the GP prior."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from dmo_search import optimize_simplex
from dmo_search.constraints import MixtureConstraints
from dmo_search.sampler import SimplexGPSampler
from dmo_search.warmstart import (
    WARM_START_ATTR,
    WarmStartError,
    apply_warm_start,
    map_mixture,
    stored_prior,
    warm_start_from_study,
    warm_start_from_trials,
)

PEAK = np.array([0.6, 0.3, 0.1])


def _f(w: list[float]) -> float:
    return -float(np.sum((np.asarray(w) - PEAK) ** 2))


@pytest.fixture(scope="module")
def source() -> optuna.Study:
    """A finished 3-domain study (names a, b, c) of the quadratic bowl around PEAK."""
    study = optimize_simplex(_f, 3, 14, seed=3, study_name="src").study
    study.set_user_attr("expert_names", ["a", "b", "c"])
    return study


def test_map_mixture_by_name_reordered_missing_and_extra() -> None:
    assert map_mixture([0.5, 0.3, 0.2], ["a", "b", "c"], ["c", "a", "b"]) == ([0.2, 0.5, 0.3], pytest.approx(1.0))
    # the source lacks d: 0 for it; the source's b is dropped and the rest renormalised
    w, mass = map_mixture([0.5, 0.3, 0.2], ["a", "b", "c"], ["a", "c", "d"])
    assert w == pytest.approx([0.5 / 0.7, 0.2 / 0.7, 0.0]) and mass == pytest.approx(0.7)
    assert map_mixture([0.0, 1.0], ["a", "b"], ["a", "c"]) == ([0.0, 0.0], 0.0)


def test_points_with_little_shared_weight_are_left_out_and_no_shared_domain_is_refused() -> None:
    warm = warm_start_from_trials(
        ["a", "b", "z"], [[0.4, 0.4, 0.2], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]], [1.0, 2.0, float("nan")], ["b", "a"]
    )
    assert warm.X == ((0.5, 0.5),) and warm.Y == (1.0,)  # 80% on z: left out; NaN value: skipped
    assert warm.mapping == {"shared": ["b", "a"], "new": [], "dropped": ["z"]}
    with pytest.raises(WarmStartError, match="share none"):
        warm_start_from_trials(["x", "y"], [[0.5, 0.5]], [1.0], ["a", "b"])


def test_minimised_values_are_oriented_and_designs_projected_onto_the_new_constraints() -> None:
    c = MixtureConstraints.build(["a", "b"], max_weight={"a": 0.6})
    warm = warm_start_from_trials(
        ["a", "b"], [[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]], [0.1, 0.5, 0.9], ["a", "b"], maximize=False, constraints=c
    )
    assert warm.Y == (-0.1, -0.5, -0.9)
    assert warm.designs[0] == pytest.approx((0.6, 0.4))  # the best (lowest) one, projected onto a <= 0.6
    assert all(c.contains(d) for d in warm.designs)


def test_superset_source_maps_onto_fewer_domains(source: optuna.Study) -> None:
    warm = warm_start_from_study(source, ["b", "a"])
    assert warm.mapping == {"shared": ["b", "a"], "new": [], "dropped": ["c"]}
    assert all(len(x) == 2 and abs(sum(x) - 1) < 1e-9 for x in warm.X)
    assert warm.source["study"] == "src" and warm.source["domains"] == ["a", "b", "c"]


def test_provenance_is_recorded_and_the_designs_run_first(source: optuna.Study) -> None:
    warm = warm_start_from_study(source, ["c", "a", "b", "d"], storage_label="sqlite:///x.db")
    res = optimize_simplex(lambda w: -abs(w[1] - 0.5), 4, 4, warm_start=warm, seed=0)
    rec = res.study.user_attrs[WARM_START_ATTR]
    assert rec["source"]["study"] == "src" and rec["source"]["storage"] == "sqlite:///x.db"
    assert rec["mapping"] == {"shared": ["c", "a", "b"], "new": ["d"], "dropped": []}
    assert rec["prior"] is True and stored_prior(res.study, 4) is not None
    assert stored_prior(res.study, 4).shared == (0, 1, 2)  # type: ignore[union-attr]  # c, a, b; not d
    designs_only = warm_start_from_study(source, ["c", "a", "b", "d"], prior=False)
    study = optuna.create_study(direction="maximize")
    apply_warm_start(study, designs_only)
    assert study.user_attrs[WARM_START_ATTR]["prior"] is False and stored_prior(study, 4) is None
    first = [t.user_attrs["weights"] for t in res.study.trials[: len(warm.designs)]]
    assert first == [pytest.approx(list(d)) for d in warm.designs]
    assert all(d[3] == 0.25 for d in warm.designs)  # the source never saw d: its uniform share
    # another source is refused; the same one again is a no-op
    other = warm_start_from_trials(["a", "b"], [[0.5, 0.5]], [1.0], ["a", "b"], source={"study": "other"})
    with pytest.raises(WarmStartError, match="was warm-started from 'src'"):
        apply_warm_start(res.study, other)
    assert apply_warm_start(res.study, warm) == []


def test_the_prior_steers_the_gp_before_it_has_data(source: optuna.Study) -> None:
    """Two target trials far from the peak: with the source's prior the recommendation is near the peak;
    without it, the GP has nothing but the two points."""

    def two_trials(warm: bool) -> list[float]:
        study = optuna.create_study(direction="maximize")
        for w in ([0.1, 0.1, 0.8], [0.1, 0.8, 0.1]):
            study.add_trial(
                optuna.trial.create_trial(params={}, distributions={}, value=_f(w), user_attrs={"weights": w})
            )
        if warm:
            apply_warm_start(study, warm_start_from_study(source, ["a", "b", "c"]))
        return SimplexGPSampler(3, seed=0).recommend(study)

    assert np.linalg.norm(np.asarray(two_trials(True)) - PEAK) < 0.1
    assert np.linalg.norm(np.asarray(two_trials(False)) - PEAK) > 0.3


def test_the_gp_takes_over_after_two_trials_with_a_prior(source: optuna.Study) -> None:
    warm = warm_start_from_study(source, ["a", "b", "c"], n_designs=2)
    res = optimize_simplex(_f, 3, 4, warm_start=warm, seed=0)
    # trials 0-1 are the designs, trials 2-3 come from the GP (the space-filling design would propose the
    # centre first); with the prior, the first lands near the peak
    later = np.asarray([t.user_attrs["weights"] for t in res.study.trials[2:]])
    assert np.linalg.norm(later - 1 / 3, axis=1).min() > 0.05, later  # not the centre
    assert np.linalg.norm(later[0] - PEAK) < 0.1, later
