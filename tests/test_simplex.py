"""Simplex geometry: the cube <-> simplex encoding, vertices and faces, designs, validation."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from dmo_search import simplex

REFERENCE = Path(__file__).parents[2] / "shared/reference/mixture_weights.csv"


def _mixtures(k: int) -> list[list[float]]:
    rng = np.random.default_rng(k)
    out = [list(map(float, w)) for w in rng.dirichlet(np.ones(k), 50)]
    out += [list(map(float, w)) for w in rng.dirichlet(np.full(k, 0.5), 50)]  # nearer the faces
    out += [*simplex.vertices(k), simplex.centre(k)]
    for w in rng.dirichlet(np.ones(k), 20):  # exactly on faces
        w[rng.random(k) < 0.4] = 0.0
        if w.sum() > 0:
            out.append(list(map(float, w / w.sum())))
    return out


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_weights_round_trip_through_params(k: int) -> None:
    for w in _mixtures(k):
        params = simplex.weights_to_params(w)
        assert sorted(params) == simplex.param_names(k)
        assert all(0.0 <= u <= 1.0 for u in params.values())
        back = simplex.params_to_weights(params, k)
        # NOTE: u_i = 1 - (1 - z_i)^(K-1-i) rounds to 1 once (1 - z_i)^(K-1-i) < 1e-16, so within
        # about 0.5% of a vertex at K=8 the small weights are lost; these draws stay clear of that.
        np.testing.assert_allclose(back, w, rtol=0, atol=1e-10)
        assert [x == 0.0 for x in back] == [x == 0.0 for x in w]  # exact zeros stay exact


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_any_cube_point_decodes_to_the_simplex(k: int) -> None:
    rng = np.random.default_rng(0)
    for u in rng.random((200, k - 1)):
        w = simplex.params_to_weights(dict(zip(simplex.param_names(k), u, strict=True)), k)
        assert len(w) == k
        assert min(w) >= 0.0
        assert abs(sum(w) - 1.0) < 1e-12


def test_uniform_cube_gives_the_uniform_simplex() -> None:
    # Dirichlet(1): every weight has mean 1/K and P(w_i > 1/2) = 2^-(K-1); a plain normalisation
    # or a stick-breaking without the Beta correction favours the first domains.
    k = 4
    rng = np.random.default_rng(1)
    names = simplex.param_names(k)
    w = np.array([simplex.params_to_weights(dict(zip(names, u, strict=True)), k) for u in rng.random((20000, k - 1))])
    np.testing.assert_allclose(w.mean(axis=0), 1 / k, atol=0.01)
    np.testing.assert_allclose((w > 0.5).mean(axis=0), 0.5 ** (k - 1), atol=0.015)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_vertices_and_faces_are_reachable(k: int) -> None:
    names = simplex.param_names(k)
    assert simplex.params_to_weights(dict.fromkeys(names, 0.0), k) == simplex.vertices(k)[-1]
    assert simplex.params_to_weights({**dict.fromkeys(names, 0.0), names[0]: 1.0}, k) == simplex.vertices(k)[0]
    for j, e in enumerate(simplex.vertices(k)):
        assert simplex.params_to_weights(simplex.weights_to_params(e), k) == e, j
    face = [0.0, *[1.0 / (k - 1)] * (k - 1)]  # the face opposite vertex 0
    decoded = simplex.params_to_weights(simplex.weights_to_params(face), k)
    assert decoded[0] == 0.0
    assert all(x > 0 for x in decoded[1:])


def test_centre_and_vertices() -> None:
    assert simplex.centre(4) == [0.25] * 4
    assert simplex.vertices(3) == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_leave_one_out_drops_each_domain_once() -> None:
    assert simplex.leave_one_out(3) == [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    assert sorted(simplex.leave_one_out(2)) == sorted(simplex.vertices(2))
    for i, w in enumerate(simplex.leave_one_out(6)):
        assert w[i] == 0.0 and sum(w) == pytest.approx(1.0)
        assert [x for j, x in enumerate(w) if j != i] == pytest.approx([0.2] * 5)
    with pytest.raises(ValueError, match="at least 2 domains"):
        simplex.leave_one_out(1)


def test_grid_design_sizes() -> None:
    assert len(simplex.grid_design(2, 8)) == 7
    assert len(simplex.grid_design(3, 8)) == 21
    for k, step in [(3, 4), (4, 8), (8, 2)]:
        grid = simplex.grid_design(k, step, interior=False)
        assert len(grid) == math.comb(step + k - 1, k - 1)
        assert all(abs(sum(w) - 1) < 1e-12 and min(w) >= 0 for w in grid)


def test_dirichlet_design_is_reproducible_and_rounded() -> None:
    a = simplex.dirichlet_design(4, 5, seed=3, decimals=4)
    assert a == simplex.dirichlet_design(4, 5, seed=3, decimals=4)
    assert all(round(x, 4) == x for w in a for x in w)
    assert all(abs(sum(w) - 1) < 1e-9 for w in a)


def _reference_rows() -> list[dict[str, str]]:
    if not REFERENCE.exists():
        pytest.skip(f"the paper's reference designs are not at {REFERENCE}")
    with REFERENCE.open() as f:
        return list(csv.DictReader(f))


def test_paper_designs_equal_the_reference_csv() -> None:
    rows = _reference_rows()
    matched = 0
    for k in (2, 3, 4):
        design = simplex.paper_design(k)
        ref = {
            int(r["array_index"]): [float(x) for x in r["weights"].split("|")] for r in rows if int(r["n_domains"]) == k
        }
        for i, w in enumerate(design):
            np.testing.assert_allclose(w, ref[i], rtol=0, atol=1e-12, err_msg=f"K={k} design {i}")
            matched += 1
        # Rows beyond the paper's design are the centre (evaluated, not in the printed results).
        for i in set(ref) - set(range(len(design))):
            np.testing.assert_allclose(ref[i], simplex.centre(k), atol=1e-6)
    assert matched == 48


def test_paper_design_exists_only_for_2_to_4_domains() -> None:
    with pytest.raises(ValueError, match="2, 3 and 4 domains"):
        simplex.paper_design(5)


@pytest.mark.parametrize(
    ("weights", "n_domains", "message"),
    [
        ([0.5, 0.5], 3, "expected 3 weights"),
        ([1.0], None, "at least 2 domains"),
        ([0.5, float("nan")], None, "finite"),
        ([float("inf"), 0.0], None, "finite"),
        ([1.2, -0.2], None, ">= 0"),
        ([0.5, 0.6], None, "sum to 1"),
        ([0.2, 0.2], None, "sum to 1"),
    ],
)
def test_check_weights_rejects(weights: list[float], n_domains: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simplex.check_weights(weights, n_domains)


def test_check_weights_clips_rounding_noise_and_renormalises() -> None:
    w = simplex.check_weights([0.5 + 1e-10, 0.5, -1e-12])
    assert w[2] == 0.0
    assert sum(w) == pytest.approx(1.0, abs=1e-15)


def test_project_to_simplex() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5))
    p = simplex.project_to_simplex(x)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(simplex.project_to_simplex(p), p, atol=1e-12)  # idempotent
    assert simplex.simplex_distance([1, 0], [0, 1]) == pytest.approx(math.sqrt(2))


def test_data_moved_is_the_share_of_the_data_that_changes_domain() -> None:
    assert simplex.data_moved(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert simplex.data_moved(np.array([0.5, 0.3, 0.2]), np.array([0.5, 0.2, 0.3])) == pytest.approx(0.1)
    points = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.98, 0.01, 0.01]])
    np.testing.assert_allclose(simplex.data_moved(points, np.array([1.0, 0.0, 0.0])), [0.0, 1.0, 0.02])
