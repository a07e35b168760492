"""Hard linear constraints on a mixture: per-domain bounds, finite-data caps and group limits.

The feasible set is the polytope

    w_j >= lower_j,  w_j <= upper_j,  L_G <= sum_{j in G} w_j <= U_G,  sum_j w_j = 1

where ``upper_j`` is the tightest of a domain's ``max_weight`` and its finite-data cap
``E * N_j / R`` (``N_j`` examples, an SFT run of ``R`` examples, at most ``E`` epochs over a domain).
:class:`MixtureConstraints` checks feasibility once (refusing an empty polytope with the arithmetic
that empties it), tests and projects mixtures, draws uniform samples inside it (exact rejection
from Dirichlet(1) when that accepts often enough, hit-and-run otherwise) and hands the bounds and
group rows to BoTorch's ``optimize_acqf``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmo_search import simplex

__all__ = ["DataCaps", "Group", "InfeasibleConstraintsError", "MixtureConstraints"]

TOL = 1e-9
"""Slack allowed when testing whether a mixture satisfies the constraints."""

# Hit-and-run steps per chain, per domain: enough to forget the start along a long, thin polytope.
_WALK_STEPS_PER_DOMAIN = 200


class InfeasibleConstraintsError(ValueError):
    """No mixture satisfies the constraints; the message shows the arithmetic and what to relax."""


@dataclasses.dataclass(frozen=True)
class DataCaps:
    """Finite-data caps: ``w_j <= max_epochs * domain_sizes[j] / sft_samples``.

    Attributes:
        domain_sizes: examples available per domain (domains not listed are not capped).
        sft_samples: R, the examples of the planned mixture-SFT run.
        max_epochs: E, the most passes over one domain's data. Defaults to 1.
    """

    domain_sizes: Mapping[str, int]
    sft_samples: int
    max_epochs: float = 1.0

    def cap(self, name: str) -> float | None:
        """The cap of domain ``name`` (None if its size is not given)."""
        n = self.domain_sizes.get(name)
        return None if n is None else self.max_epochs * n / self.sft_samples

    def why(self, name: str) -> str:
        """The cap's arithmetic, for messages."""
        n = self.domain_sizes[name]
        return f"data cap {_g(self.max_epochs)} epochs x {n} examples / {self.sft_samples} SFT samples"


@dataclasses.dataclass(frozen=True)
class Group:
    """``lower <= sum of the weights of indices <= upper``."""

    indices: tuple[int, ...]
    lower: float = 0.0
    upper: float = 1.0

    def label(self, names: Sequence[str]) -> str:
        """``w[a] + w[b]``, for messages."""
        return " + ".join(f"w[{names[i]}]" for i in self.indices)


@dataclasses.dataclass(frozen=True)
class MixtureConstraints:
    """The feasible mixtures of K named domains (see the module docstring).

    Build it with :meth:`build`, which validates names and feasibility; the fields are the result.

    Attributes:
        names: the domains, in weight order.
        lower: per-domain minimum weight.
        upper: per-domain maximum weight (``max_weight`` and data cap, whichever is tighter).
        groups: group rows.
        upper_why: per domain, where its upper bound comes from (for messages).
    """

    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    groups: tuple[Group, ...] = ()
    upper_why: tuple[str, ...] = ()

    # ----------------------------------------------------------------------------------------------
    # Construction
    # ----------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        *,
        min_weight: Mapping[str, float] | None = None,
        max_weight: Mapping[str, float] | None = None,
        data_caps: DataCaps | None = None,
        groups: Sequence[tuple[Sequence[str], float | None, float | None]] = (),
    ) -> MixtureConstraints:
        """Validate and combine the constraints of a study over ``names``.

        Args:
            names: the domains (expert names), in weight order.
            min_weight: ``{domain: minimum}``.
            max_weight: ``{domain: maximum}``.
            data_caps: finite-data caps.
            groups: ``(domains, min or None, max or None)`` rows.

        Raises:
            ValueError: an unknown domain name or a bound outside ``[0, 1]``.
            InfeasibleConstraintsError: no mixture satisfies them (the message shows why).
        """
        names = tuple(names)
        simplex.param_names(len(names))  # validates K
        known = set(names)

        def check_names(where: str, given: Sequence[str]) -> None:
            unknown = sorted(set(given) - known)
            if unknown:
                raise ValueError(f"{where} names unknown domains {unknown}; the domains are {list(names)}")

        def check_bound(where: str, v: float) -> float:
            if not (0.0 <= float(v) <= 1.0) or math.isnan(float(v)):
                raise ValueError(f"{where} = {v} must lie in [0, 1] (a share of the mixture)")
            return float(v)

        min_weight, max_weight = dict(min_weight or {}), dict(max_weight or {})
        check_names("min_weight", list(min_weight))
        check_names("max_weight", list(max_weight))
        lower = [check_bound(f"min_weight[{n}]", min_weight.get(n, 0.0)) for n in names]
        upper = [check_bound(f"max_weight[{n}]", max_weight.get(n, 1.0)) for n in names]
        why = [f"max_weight {_g(max_weight[n])}" if n in max_weight else "" for n in names]
        if data_caps is not None:
            check_names("data_caps.domain_sizes", list(data_caps.domain_sizes))
            if data_caps.sft_samples < 1 or data_caps.max_epochs <= 0:
                raise ValueError(
                    f"data caps need sft_samples >= 1 and max_epochs > 0, got {data_caps.sft_samples}, "
                    f"{data_caps.max_epochs}"
                )
            for j, n in enumerate(names):
                cap = data_caps.cap(n)
                if cap is not None and cap < upper[j]:
                    upper[j], why[j] = cap, f"{data_caps.why(n)} = {_g(cap)}"
        rows: list[Group] = []
        for i, (members, lo, hi) in enumerate(groups):
            check_names(f"groups[{i}]", list(members))
            if not members or len(set(members)) != len(members):
                raise ValueError(f"groups[{i}] must list distinct domains, got {list(members)}")
            if lo is None and hi is None:
                raise ValueError(f"groups[{i}] sets neither min nor max; give at least one")
            lo_v = check_bound(f"groups[{i}].min", lo) if lo is not None else 0.0
            hi_v = check_bound(f"groups[{i}].max", hi) if hi is not None else 1.0
            rows.append(Group(tuple(names.index(m) for m in members), lo_v, hi_v))
        out = cls(names, tuple(lower), tuple(upper), tuple(rows), tuple(why))
        out.check_feasible()
        return out

    @classmethod
    def unconstrained(cls, names: Sequence[str]) -> MixtureConstraints:
        """The whole simplex."""
        k = len(names)
        return cls(tuple(names), (0.0,) * k, (1.0,) * k, (), ("",) * k)

    # ----------------------------------------------------------------------------------------------
    # Properties
    # ----------------------------------------------------------------------------------------------

    @property
    def n_domains(self) -> int:
        """K."""
        return len(self.names)

    @property
    def is_trivial(self) -> bool:
        """Whether the constraints allow the whole simplex."""
        return all(v <= 0.0 for v in self.lower) and all(v >= 1.0 for v in self.upper) and not self.groups

    def _rows(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Every inequality as ``A w <= b`` (bounds first, then group rows)."""
        k = self.n_domains
        eye = np.eye(k)
        a_rows, b_rows = [eye, -eye], [np.asarray(self.upper), -np.asarray(self.lower)]
        for g in self.groups:
            row = np.zeros(k)
            row[list(g.indices)] = 1.0
            a_rows += [row[None, :], -row[None, :]]
            b_rows += [np.asarray([g.upper]), np.asarray([-g.lower])]
        return np.vstack(a_rows), np.concatenate(b_rows)

    # ----------------------------------------------------------------------------------------------
    # Feasibility
    # ----------------------------------------------------------------------------------------------

    def check_feasible(self) -> None:
        """Refuse an empty feasible set, with the arithmetic that empties it.

        Raises:
            InfeasibleConstraintsError: naming the bounds that conflict and how to relax them.
        """
        names, lo, hi = self.names, self.lower, self.upper
        for j, n in enumerate(names):
            if lo[j] > hi[j] + TOL:
                raise InfeasibleConstraintsError(
                    f"domain {n}: min_weight {_g(lo[j])} exceeds its maximum {_g(hi[j])} ({self.upper_why[j]}); "
                    "lower the minimum or raise the maximum"
                )
        if sum(lo) > 1.0 + TOL:
            terms = " + ".join(f"{_g(v)} ({n})" for n, v in zip(names, lo, strict=True) if v > 0)
            raise InfeasibleConstraintsError(
                f"the minimum weights sum to {terms} = {_g(sum(lo))} > 1; lower them so they sum to at most 1"
            )
        if sum(hi) < 1.0 - TOL:
            terms = " + ".join(
                f"{_g(v)} ({n}: {w or 'no cap'})" for n, v, w in zip(names, hi, self.upper_why, strict=True)
            )
            raise InfeasibleConstraintsError(
                f"the maximum weights sum to {terms} = {_g(sum(hi))} < 1, so no mixture reaches 1; raise max_weight, "
                "max_epochs or the domain sizes, or lower sft_samples"
            )
        for i, g in enumerate(self.groups):
            label = g.label(names)
            floor = sum(lo[j] for j in g.indices)
            ceil = sum(hi[j] for j in g.indices)
            rest_ceil = sum(hi[j] for j in range(len(names)) if j not in g.indices)
            if g.lower > g.upper + TOL:
                raise InfeasibleConstraintsError(f"groups[{i}] ({label}): min {_g(g.lower)} > max {_g(g.upper)}")
            if floor > g.upper + TOL:
                raise InfeasibleConstraintsError(
                    f"groups[{i}]: {label} <= {_g(g.upper)}, but its domains' minimum weights already sum to "
                    f"{_g(floor)}; lower those minimums or raise the group's max"
                )
            if ceil < g.lower - TOL:
                raise InfeasibleConstraintsError(
                    f"groups[{i}]: {label} >= {_g(g.lower)}, but its domains' maximum weights sum to only "
                    f"{_g(ceil)}; raise those maximums or lower the group's min"
                )
            if g.upper + rest_ceil < 1.0 - TOL:
                raise InfeasibleConstraintsError(
                    f"groups[{i}]: {label} <= {_g(g.upper)} and the other domains can take at most {_g(rest_ceil)}, "
                    f"so a mixture reaches only {_g(g.upper + rest_ceil)} < 1; raise the group's max or the others' "
                    "maximums"
                )
        if self._interior_point() is None:
            raise InfeasibleConstraintsError(
                f"no mixture satisfies all the constraints together ({self.describe()}); relax one of them"
            )

    def describe(self) -> str:
        """The constraints in one line, e.g. ``0.1 <= w[a] <= 0.3; w[b] + w[c] <= 0.5``."""
        parts = []
        for n, lo, hi in zip(self.names, self.lower, self.upper, strict=True):
            if lo > 0 or hi < 1:
                parts.append(f"{_g(lo)} <= w[{n}] <= {_g(hi)}")
        for g in self.groups:
            parts.append(f"{_g(g.lower)} <= {g.label(self.names)} <= {_g(g.upper)}")
        return "; ".join(parts) or "none"

    @functools.cached_property
    def _centre_and_radius(self) -> tuple[NDArray[np.float64], float] | None:
        """The Chebyshev centre of the polytope inside the plane ``sum w = 1`` and its radius."""
        from scipy.optimize import linprog

        k = self.n_domains
        a, b = self._rows()
        # Distances are measured within the plane: use each normal's component along it.
        a_in = a - a.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(a_in, axis=1)
        c = np.zeros(k + 1)
        c[-1] = -1.0  # maximise the radius
        res = linprog(
            c,
            A_ub=np.hstack([a, norms[:, None]]),
            b_ub=b,
            A_eq=np.hstack([np.ones((1, k)), np.zeros((1, 1))]),
            b_eq=[1.0],
            bounds=[(None, None)] * k + [(0.0, None)],
            method="highs",
        )
        if res.status != 0:
            return None
        return np.asarray(res.x[:k], dtype=np.float64), float(res.x[-1])

    def _interior_point(self) -> NDArray[np.float64] | None:
        cr = self._centre_and_radius
        return None if cr is None else cr[0]

    # ----------------------------------------------------------------------------------------------
    # Mixtures
    # ----------------------------------------------------------------------------------------------

    def violations(self, weights: Sequence[float] | NDArray[np.float64], tol: float = 1e-7) -> list[str]:
        """What a mixture violates, one phrase per constraint (empty when feasible)."""
        w = np.asarray(weights, dtype=np.float64)
        out = []
        for j, n in enumerate(self.names):
            if w[j] < self.lower[j] - tol:
                out.append(f"w[{n}] = {_g(w[j])} < min {_g(self.lower[j])}")
            if w[j] > self.upper[j] + tol:
                out.append(f"w[{n}] = {_g(w[j])} > max {_g(self.upper[j])} ({self.upper_why[j]})")
        for g in self.groups:
            s = float(w[list(g.indices)].sum())
            if s < g.lower - tol:
                out.append(f"{g.label(self.names)} = {_g(s)} < {_g(g.lower)}")
            if s > g.upper + tol:
                out.append(f"{g.label(self.names)} = {_g(s)} > {_g(g.upper)}")
        return out

    def contains(self, weights: Sequence[float] | NDArray[np.float64], tol: float = 1e-7) -> bool:
        """Whether a mixture satisfies every constraint (within ``tol``)."""
        return not self.violations(weights, tol)

    def check(self, weights: Sequence[float], what: str = "mixture") -> list[float]:
        """Return ``weights`` (validated) if feasible.

        Raises:
            ValueError: naming each violated constraint and the nearest feasible mixture.
        """
        w = simplex.check_weights(weights, self.n_domains)
        bad = self.violations(w)
        if bad:
            near = ", ".join(f"{n}={x:.4f}" for n, x in zip(self.names, self.project(w), strict=True))
            raise ValueError(
                f"{what} violates the study's constraints: {'; '.join(bad)}; the nearest feasible mixture is {near}"
            )
        return w

    def project(self, weights: Sequence[float]) -> list[float]:
        """The feasible mixture nearest to ``weights`` (Euclidean)."""
        w = np.asarray(weights, dtype=np.float64)
        x = self.project_boxes(w[None, :])[0]
        if self.groups and not self.contains(x, tol=TOL):
            x = self._project_qp(w, start=x)
        x = np.clip(x, self.lower, self.upper)
        return simplex.check_weights((x / x.sum()).tolist())

    def project_boxes(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Project rows onto ``{lower <= w <= upper, sum w = 1}`` (group rows ignored), vectorised."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        lo, hi = np.asarray(self.lower), np.asarray(self.upper)
        # sum(clip(x - t, lo, hi)) decreases in t: bisect t so that it is 1.
        t_lo = (X - hi).min(axis=1) - 1.0
        t_hi = (X - lo).max(axis=1) + 1.0
        for _ in range(100):
            t = 0.5 * (t_lo + t_hi)
            s = np.clip(X - t[:, None], lo, hi).sum(axis=1)
            big = s > 1.0
            t_lo = np.where(big, t, t_lo)
            t_hi = np.where(big, t_hi, t)
        return np.clip(X - (0.5 * (t_lo + t_hi))[:, None], lo, hi)

    def _project_qp(self, w: NDArray[np.float64], start: NDArray[np.float64]) -> NDArray[np.float64]:
        from scipy.optimize import minimize

        a, b = self._rows()
        k = self.n_domains
        res = minimize(
            lambda x: 0.5 * float(np.sum((x - w) ** 2)),
            start,
            jac=lambda x: x - w,
            bounds=list(zip(self.lower, self.upper, strict=True)),
            constraints=[
                {"type": "eq", "fun": lambda x: np.array([x.sum() - 1.0]), "jac": lambda x: np.ones((1, k))},
                {"type": "ineq", "fun": lambda x: b[2 * k :] - a[2 * k :] @ x, "jac": lambda x: -a[2 * k :]},
            ],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        x = np.asarray(res.x, dtype=np.float64)
        return x if self.contains(x, tol=1e-7) else self._nearest_of(w, [x, start, self._interior_point()])

    def _nearest_of(self, w: NDArray[np.float64], points: list[Any]) -> NDArray[np.float64]:
        ok = [p for p in points if p is not None and self.contains(p, tol=1e-7)]
        return min(ok, key=lambda p: float(np.sum((p - w) ** 2)))

    def sample(self, n: int, seed: int = 0) -> NDArray[np.float64]:
        """``n`` mixtures drawn uniformly from the feasible set (``n x K``), reproducibly.

        Exact rejection from Dirichlet(1) when at least 0.2% of the draws are feasible, else
        ``n`` independent hit-and-run chains from the Chebyshev centre (``200 K`` steps each).
        """
        return _sample(self, n, seed).copy()

    def centre(self) -> list[float]:
        """The feasible mixture nearest to the uniform one (the uniform mixture itself when feasible)."""
        return self.project([1.0 / self.n_domains] * self.n_domains)

    # ----------------------------------------------------------------------------------------------
    # BoTorch
    # ----------------------------------------------------------------------------------------------

    def botorch_inequalities(self) -> list[tuple[Any, Any, float]]:
        """Group rows in ``optimize_acqf``'s form ``sum coefficients * x[indices] >= rhs``."""
        import torch

        out: list[tuple[Any, Any, float]] = []
        for g in self.groups:
            idx = torch.tensor(g.indices, dtype=torch.long)
            ones = torch.ones(len(g.indices), dtype=torch.float64)
            if g.upper < 1.0:
                out.append((idx, -ones, -float(g.upper)))
            if g.lower > 0.0:
                out.append((idx, ones, float(g.lower)))
        return out


@functools.lru_cache(maxsize=32)
def _sample(c: MixtureConstraints, n: int, seed: int) -> NDArray[np.float64]:
    k = c.n_domains
    rng = np.random.default_rng(seed)
    a, b = c._rows()
    probe = rng.dirichlet(np.ones(k), size=10_000)
    ok = probe[(probe @ a.T <= b + TOL).all(axis=1)]
    # Rejection is exact: use it unless it would need more than ~500 draws per kept sample.
    if len(ok) >= n or len(ok) >= 20:
        chunks = [ok]
        while sum(len(x) for x in chunks) < n:
            draws = rng.dirichlet(np.ones(k), size=50_000)
            chunks.append(draws[(draws @ a.T <= b + TOL).all(axis=1)])
        out = np.concatenate(chunks)[:n]
    else:
        out = _hit_and_run(c, n, rng)
    out.setflags(write=False)
    return out


def _hit_and_run(c: MixtureConstraints, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """``n`` independent hit-and-run chains from the Chebyshev centre, ``200 K`` steps each."""
    k = c.n_domains
    a, b = c._rows()
    start = c._interior_point()
    assert start is not None
    free = (np.asarray(c.upper) - np.asarray(c.lower) > 1e-12).astype(np.float64)
    x = np.repeat(start[None, :], n, axis=0)
    for _ in range(_WALK_STEPS_PER_DOMAIN * k):
        d = rng.normal(size=(n, k)) * free
        d -= free * d.sum(axis=1, keepdims=True) / max(float(free.sum()), 1.0)  # stay on sum w = 1
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)
        ad = d @ a.T  # n x rows
        slack = b - x @ a.T
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = slack / ad
        t_hi = np.where(ad > 1e-12, bound, np.inf).min(axis=1)
        t_lo = np.where(ad < -1e-12, bound, -np.inf).max(axis=1)
        ok = np.isfinite(t_lo) & np.isfinite(t_hi) & (t_hi > t_lo)
        t = np.where(ok, rng.uniform(np.where(ok, t_lo, 0.0), np.where(ok, t_hi, 0.0)), 0.0)
        x = x + t[:, None] * d
    x = np.clip(x, 0.0, 1.0)
    return np.asarray(x / x.sum(axis=1, keepdims=True), dtype=np.float64)


def _g(v: float) -> str:
    """A number as people write it: 0.25, 1e-05, 3."""
    return f"{float(v):.6g}"
