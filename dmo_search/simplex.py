"""Simplex geometry: the map between Optuna's cube parameters and mixture weights, and designs.

The encoding (why it looks like this)
-------------------------------------
A mixture over K domains is a point ``w`` of the simplex (``w_i >= 0``, ``sum w_i = 1``). Optuna
samples independent parameters in boxes, so a trial carries ``K - 1`` cube parameters
``u_0 .. u_{K-2}`` in ``[0, 1]`` and the weights are decoded by a *Dirichlet stick-breaking*:

    z_i = 1 - (1 - u_i) ** (1 / (K - 1 - i))      (z_i ~ Beta(1, K-1-i) when u_i ~ U(0, 1))
    w_i = z_i * (1 - sum_{j<i} w_j),   w_{K-1} = 1 - sum_{j<K-1} w_j

Properties this buys:

* uniform ``u`` gives the uniform (Dirichlet(1)) distribution on the simplex, so Optuna's own
  samplers (random, TPE, GP) explore the simplex evenly instead of favouring the first domains;
* the map is a bijection between the open cube and the open simplex, and the closed cube covers the
  closed simplex: ``u_i = 0`` gives an exact zero, ``u_0 = 1`` gives the vertex ``e_0``, all ``u = 0``
  gives ``e_{K-1}``, so every face and vertex is reachable;
* it is invertible (:func:`weights_to_params`), so any proposed ``w`` (a design, a BoTorch proposal)
  becomes trial parameters, and decoding them gives ``w`` back to ~1e-15.

The exact weights of a trial are also stored in its user attributes (see :mod:`dmo_search.study`);
the parameters are the encoding, the attribute is the record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from optuna.distributions import BaseDistribution, FloatDistribution

__all__ = [
    "END_POINT_DESIGNS",
    "NAMED_DESIGNS",
    "PARAM_PREFIX",
    "centre",
    "check_weights",
    "data_moved",
    "dirichlet_design",
    "distributions",
    "grid_design",
    "leave_one_out",
    "paper_design",
    "param_names",
    "params_to_weights",
    "project_to_simplex",
    "simplex_distance",
    "vertices",
    "weights_to_params",
]

PARAM_PREFIX = "u_"
_TOL = 1e-9


def _check_k(n_domains: int) -> None:
    if n_domains < 2:
        raise ValueError(f"a mixture needs at least 2 domains, got n_domains={n_domains}")


def param_names(n_domains: int) -> list[str]:
    """Names of the ``K - 1`` cube parameters that encode a mixture of ``n_domains`` domains."""
    _check_k(n_domains)
    return [f"{PARAM_PREFIX}{i}" for i in range(n_domains - 1)]


def distributions(n_domains: int) -> dict[str, BaseDistribution]:
    """The Optuna search space of a mixture: ``K - 1`` parameters uniform on ``[0, 1]``."""
    return {name: FloatDistribution(0.0, 1.0) for name in param_names(n_domains)}


def params_to_weights(params: dict[str, float], n_domains: int) -> list[float]:
    """Decode trial parameters into weights on the simplex (see the module docstring).

    Args:
        params: a mapping holding ``u_0 .. u_{K-2}`` (other keys are ignored).
        n_domains: K.

    Returns:
        K non-negative floats that sum to 1.
    """
    names = param_names(n_domains)
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"trial parameters lack {missing}; they encode a {n_domains}-domain mixture")
    weights: list[float] = []
    remaining = 1.0
    for i, name in enumerate(names):
        u = min(max(float(params[name]), 0.0), 1.0)
        z = 1.0 - (1.0 - u) ** (1.0 / (n_domains - 1 - i))
        w = z * remaining
        weights.append(w)
        remaining = max(remaining - w, 0.0)
    weights.append(remaining)
    return weights


def weights_to_params(weights: Sequence[float]) -> dict[str, float]:
    """Encode weights as trial parameters; the inverse of :func:`params_to_weights`.

    Where the remaining stick is empty (all later weights are zero) the later parameters are 0.
    The stick and its remainder are summed from the weights, not left over by subtraction, so an
    empty remainder gives ``u_i = 1`` exactly (exact zeros survive the round trip) and ``1 - z_i``
    keeps its precision near a vertex.
    """
    w = check_weights(weights)
    k = len(w)
    params: dict[str, float] = {}
    for i in range(k - 1):
        rest = math.fsum(w[i + 1 :])  # the stick left after w_i
        stick = w[i] + rest
        if stick <= 1e-15:
            u = 0.0
        else:
            u = 1.0 - min(max(rest / stick, 0.0), 1.0) ** (k - 1 - i)  # (1 - z_i) = rest / stick
        params[f"{PARAM_PREFIX}{i}"] = min(max(u, 0.0), 1.0)
    return params


def check_weights(weights: Sequence[float], n_domains: int | None = None) -> list[float]:
    """Validate weights and return them as floats renormalised to sum exactly to 1.

    Raises:
        ValueError: naming the problem (wrong length, negative, NaN, not summing to 1).
    """
    w = [float(x) for x in weights]
    if n_domains is not None and len(w) != n_domains:
        raise ValueError(f"expected {n_domains} weights (one per domain), got {len(w)}: {w}")
    _check_k(len(w))
    if any(math.isnan(x) or math.isinf(x) for x in w):
        raise ValueError(f"weights must be finite numbers, got {w}")
    if any(x < -_TOL for x in w):
        raise ValueError(f"weights must be >= 0, got {w}")
    total = sum(w)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"weights must sum to 1 (they are mixture proportions), got sum={total:.6g} for {w}; "
            "divide each weight by their sum"
        )
    w = [max(x, 0.0) for x in w]
    total = sum(w)
    return [x / total for x in w]


def project_to_simplex(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Euclidean projection of each row of ``x`` (``n x K``) onto the simplex (Duchi et al., 2008)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n, k = x.shape
    u = np.sort(x, axis=1)[:, ::-1]
    css = np.cumsum(u, axis=1) - 1.0
    idx = np.arange(1, k + 1)
    cond = u - css / idx > 0
    rho = k - 1 - np.argmax(cond[:, ::-1], axis=1)
    theta = css[np.arange(n), rho] / (rho + 1)
    return np.clip(x - theta[:, None], 0.0, None)


def simplex_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean distance between two mixtures."""
    return float(np.linalg.norm(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))


def data_moved(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """The share of the data that changes domain between mixtures (total variation: half the L1 distance).

    Broadcasts over leading axes: ``data_moved(points, w)`` gives each point's distance to ``w``.
    """
    return 0.5 * np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).sum(axis=-1)


def centre(n_domains: int) -> list[float]:
    """The uniform mixture ``(1/K, ..., 1/K)``."""
    _check_k(n_domains)
    return [1.0 / n_domains] * n_domains


def vertices(n_domains: int) -> list[list[float]]:
    """The K single-domain mixtures ``e_0 .. e_{K-1}``."""
    _check_k(n_domains)
    return [[1.0 if j == i else 0.0 for j in range(n_domains)] for i in range(n_domains)]


def leave_one_out(n_domains: int) -> list[list[float]]:
    """The K mixtures that leave one domain out and split the weight evenly over the others.

    With the centre, a screening design of mixture experiments (the end points of Cornell's axial
    design): each score against the uniform mixture's says what dropping that domain costs. For
    K = 2 these are the vertices.
    """
    _check_k(n_domains)
    share = 1.0 / (n_domains - 1)
    return [[0.0 if j == i else share for j in range(n_domains)] for i in range(n_domains)]


def grid_design(n_domains: int, step: int = 8, *, interior: bool = True) -> list[list[float]]:
    """All mixtures whose weights are multiples of ``1/step``, in lexicographic order.

    With ``interior=True`` (the paper's choice) every weight is at least ``1/step``: for K=2 this
    gives the paper's 7 points, for K=3 its 21 points, in the order of its ``weights2/weights3``.
    """
    _check_k(n_domains)
    lo = 1 if interior else 0
    out: list[list[float]] = []

    def rec(prefix: list[int], left: int, slots: int) -> None:
        if slots == 1:
            if left >= lo:
                out.append([c / step for c in [*prefix, left]])
            return
        for c in range(lo, left - lo * (slots - 1) + 1):
            rec([*prefix, c], left - c, slots - 1)

    rec([], step, n_domains)
    return out


def dirichlet_design(
    n_domains: int, n: int, *, seed: int = 42, alpha: float = 1.0, decimals: int | None = None
) -> list[list[float]]:
    """The first ``n`` draws of ``numpy.random.default_rng(seed).dirichlet([alpha] * K)``.

    With ``decimals`` set, each draw is rounded and its last entry fixed so it sums to 1, as the
    paper did for K=4 (``decimals=4``, ``seed=42``).
    """
    _check_k(n_domains)
    draws = np.random.default_rng(seed).dirichlet([alpha] * n_domains, size=n)
    out: list[list[float]] = []
    for row in draws:
        if decimals is None:
            out.append([float(x) for x in row])
        else:
            head = [round(float(x), decimals) for x in row[:-1]]
            out.append([*head, round(1.0 - sum(head), decimals)])
    return out


def paper_design(n_domains: int) -> list[list[float]]:
    """The fixed design the paper evaluated: the 1/8 interior grid (K=2: 7, K=3: 21 points) and,
    for K=4, the first 20 Dirichlet(1) draws of seed 42 rounded to 4 decimals."""
    if n_domains in (2, 3):
        return grid_design(n_domains, 8, interior=True)
    if n_domains == 4:
        return dirichlet_design(4, 20, seed=42, decimals=4)
    raise ValueError(
        f"the paper has designs for 2, 3 and 4 domains only, not {n_domains}; "
        "use 'grid' (grid_design) or 'dirichlet' designs instead"
    )


END_POINT_DESIGNS: dict[str, Callable[[int], list[list[float]]]] = {
    "vertices": vertices,
    "leave-one-out": leave_one_out,
}
"""Designs of K end points that follow the uniform mixture (the sampler's ``initial_design`` names them
too): name -> the end points for K domains."""

NAMED_DESIGNS: dict[str, Callable[[int], list[list[float]]]] = {
    "centre": lambda k: [centre(k)],
    **END_POINT_DESIGNS,
    "paper": paper_design,
}
"""Designs named without arguments (a config's ``search.designs``): name -> the mixtures for K domains."""
