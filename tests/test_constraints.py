"""Constraints on a mixture: building, refusing an empty set with its arithmetic, testing, projecting, sampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dmo_search.constraints import DataCaps, InfeasibleConstraintsError, MixtureConstraints, _hit_and_run

NAMES = ["a", "b", "c", "d"]


def _mixed() -> MixtureConstraints:
    return MixtureConstraints.build(
        NAMES,
        min_weight={"a": 0.1},
        max_weight={"b": 0.3},
        data_caps=DataCaps({"c": 1000}, sft_samples=10000, max_epochs=2.0),
        groups=[(["a", "d"], None, 0.6)],
    )


def test_data_cap_is_epochs_times_size_over_samples() -> None:
    c = MixtureConstraints.build(NAMES, max_weight={"c": 0.5}, data_caps=DataCaps({"c": 1000, "d": 9000}, 10000, 2.0))
    assert c.upper == pytest.approx((1.0, 1.0, 0.2, 1.0))  # c: min(0.5, 2 * 1000 / 10000); d: 1.8 is no cap
    assert "2 epochs x 1000 examples / 10000 SFT samples" in c.upper_why[2]
    assert not c.is_trivial and MixtureConstraints.unconstrained(NAMES).is_trivial


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"min_weight": {"a": 0.7, "b": 0.5}}, "0.7 (a) + 0.5 (b) = 1.2 > 1"),
        ({"max_weight": dict.fromkeys(NAMES, 0.2)}, "= 0.8 < 1"),
        (
            {"data_caps": DataCaps(dict.fromkeys(NAMES, 100), 10000)},
            "1 epochs x 100 examples / 10000 SFT samples = 0.01",
        ),
        ({"min_weight": {"a": 0.4}, "max_weight": {"a": 0.3}}, "min_weight 0.4 exceeds its maximum 0.3"),
        ({"min_weight": {"a": 0.4, "b": 0.4}, "groups": [(["a", "b"], None, 0.5)]}, "already sum to 0.8"),
        ({"max_weight": {"a": 0.1, "b": 0.1}, "groups": [(["a", "b"], 0.5, None)]}, "sum to only 0.2"),
        ({"groups": [(["a", "b"], 0.9, None), (["c", "d"], 0.5, None)]}, "no mixture satisfies all the constraints"),
    ],
)
def test_infeasible_sets_are_refused_with_the_arithmetic(kwargs: dict, shown: str) -> None:
    with pytest.raises(InfeasibleConstraintsError) as info:
        MixtureConstraints.build(NAMES, **kwargs)
    assert shown in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"min_weight": {"zz": 0.1}}, "unknown domains ['zz']"),
        ({"max_weight": {"a": 1.5}}, "must lie in [0, 1]"),
        ({"groups": [(["a"], None, None)]}, "sets neither min nor max"),
        ({"groups": [(["a", "a"], None, 0.5)]}, "distinct domains"),
    ],
)
def test_bad_input_names_the_problem(kwargs: dict, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        MixtureConstraints.build(NAMES, **kwargs)
    assert shown in str(info.value)


def test_check_names_each_violation_and_the_nearest_feasible_mixture() -> None:
    c = _mixed()
    assert c.check([0.2, 0.3, 0.2, 0.3]) == pytest.approx([0.2, 0.3, 0.2, 0.3])
    with pytest.raises(ValueError) as info:
        c.check([0.05, 0.3, 0.3, 0.35], "--weights")
    msg = str(info.value)
    assert "--weights violates" in msg and "w[a] = 0.05 < min 0.1" in msg and "w[c] = 0.3 > max 0.2" in msg
    assert "nearest feasible mixture is a=0.1000, b=0.3000, c=0.2000, d=0.4000" in msg
    assert c.violations([0.5, 0.0, 0.0, 0.5]) == ["w[a] + w[d] = 1 > 0.6"]


def test_projection_is_feasible_and_nearest() -> None:
    c = _mixed()
    cloud = c.sample(20000, seed=3)
    rng = np.random.default_rng(0)
    for w in [*np.eye(4), *rng.dirichlet(np.ones(4), 20)]:
        p = np.asarray(c.project(w))
        assert c.contains(p, tol=1e-9) and abs(p.sum() - 1) < 1e-12
        # no feasible point of a dense cloud is nearer (up to the cloud's resolution)
        assert np.linalg.norm(p - w) <= np.linalg.norm(cloud - w, axis=1).min() + 1e-9
    inside = cloud[0]
    assert c.project(inside) == pytest.approx(inside, abs=1e-9)


def test_samples_are_feasible_and_uniform() -> None:
    c = _mixed()  # about 1.4% of Dirichlet(1) draws are feasible: exact rejection
    s = c.sample(2000, seed=1)
    assert s.shape == (2000, 4) and all(c.contains(x, tol=1e-9) for x in s)
    assert np.array_equal(s, c.sample(2000, seed=1)) and not np.array_equal(s, c.sample(2000, seed=2))
    # hit-and-run, used when rejection would need too many draws, draws from the same distribution
    walk = _hit_and_run(c, 4000, np.random.default_rng(5))
    assert all(c.contains(x, tol=1e-7) for x in walk)
    ref = c.sample(20000, seed=9)
    assert np.abs(walk.mean(axis=0) - ref.mean(axis=0)).max() < 0.01
    assert np.abs(walk.std(axis=0) - ref.std(axis=0)).max() < 0.01


def test_tight_sets_use_hit_and_run() -> None:
    names = [f"d{i}" for i in range(6)]
    c = MixtureConstraints.build(names, min_weight={"d0": 0.3, "d1": 0.3}, max_weight={"d2": 0.05})
    s = c.sample(500, seed=0)  # < 0.2% of Dirichlet draws are feasible
    assert all(c.contains(x, tol=1e-7) for x in s)
    assert s[:, 2].max() <= 0.05 + 1e-9 and s[:, :2].min() >= 0.3 - 1e-9
    assert s.std(axis=0).min() > 0.005  # it moved: not 500 copies of the start


def test_degenerate_set_is_a_single_mixture() -> None:
    c = MixtureConstraints.build(["a", "b", "c"], min_weight={"a": 0.5, "b": 0.3, "c": 0.2})
    assert c.centre() == pytest.approx([0.5, 0.3, 0.2])
    assert np.allclose(c.sample(10, seed=0), [0.5, 0.3, 0.2], atol=1e-9)


def test_centre_is_the_uniform_mixture_when_feasible() -> None:
    assert _mixed().centre() == pytest.approx([0.2666667, 0.2666667, 0.2, 0.2666667])
    loose = MixtureConstraints.build(NAMES, max_weight={"a": 0.5})
    assert loose.centre() == [0.25] * 4


def test_botorch_rows_are_the_groups() -> None:
    c = MixtureConstraints.build(NAMES, groups=[(["a", "d"], 0.2, 0.6)])
    rows = c.botorch_inequalities()
    assert [(r[0].tolist(), r[1].tolist(), r[2]) for r in rows] == [
        ([0, 3], [-1.0, -1.0], -0.6),
        ([0, 3], [1.0, 1.0], 0.2),
    ]


@settings(max_examples=40, deadline=None)
@given(
    lows=st.lists(st.floats(0.0, 0.2), min_size=4, max_size=4),
    caps=st.lists(st.floats(0.3, 1.0), min_size=4, max_size=4),
    w=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4).filter(lambda x: sum(x) > 0.1),
    group_cap=st.floats(0.45, 1.0),
)
def test_projection_of_anything_is_feasible(
    lows: list[float], caps: list[float], w: list[float], group_cap: float
) -> None:
    try:
        c = MixtureConstraints.build(
            NAMES,
            min_weight=dict(zip(NAMES, lows, strict=True)),
            max_weight=dict(zip(NAMES, caps, strict=True)),
            groups=[(["b", "c"], None, group_cap)],
        )
    except InfeasibleConstraintsError:
        assume(False)
        return
    x = np.asarray(w) / sum(w)
    p = c.project(x)
    assert c.contains(p, tol=1e-7), (c.describe(), x, p)
