"""The mixture views as data: pure functions of a :class:`StudyData` (or promotion records).

Each function returns plain arrays ready to plot (:mod:`dmo_search.dashboard.plots` draws them) and
to test. Trials without weights (e.g. still RUNNING before their first attribute) are left out of
the weight views; only COMPLETE trials carry a value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dmo_search.dashboard.data import StudyData

__all__ = [
    "BestSoFar",
    "DomainTradeoffs",
    "MixturePoints",
    "PromotionLike",
    "ProxySft",
    "Timings",
    "best_so_far",
    "domain_tradeoffs",
    "mixture_points",
    "proxy_vs_sft",
    "ternary_xy",
    "timings",
]

_SQRT3_2 = math.sqrt(3.0) / 2.0


def ternary_xy(weights: np.ndarray) -> np.ndarray:
    """Cartesian coordinates of 3-component mixtures in the unit equilateral triangle.

    Args:
        weights: ``n x 3`` mixtures (rows sum to 1).

    Returns:
        ``n x 2`` points: vertex 0 at (0, 0), vertex 1 at (1, 0), vertex 2 at (1/2, sqrt(3)/2).
    """
    w = np.asarray(weights, dtype=float).reshape(-1, 3)
    return np.stack([w[:, 1] + 0.5 * w[:, 2], _SQRT3_2 * w[:, 2]], axis=1)


@dataclass(frozen=True)
class MixturePoints:
    """Where the study searched: every trial with weights.

    Attributes:
        names: the K experts.
        numbers: ``n`` trial numbers.
        weights: ``n x K`` mixtures.
        values: ``n`` values, NaN for trials that did not complete.
        best: row index of the best trial, or None.
        recommended: the recommended mixture (K floats), or None.
    """

    names: list[str]
    numbers: np.ndarray
    weights: np.ndarray
    values: np.ndarray
    best: int | None
    recommended: np.ndarray | None


def mixture_points(data: StudyData) -> MixturePoints:
    """The searched mixtures of a study, coloured by value, with the best and recommended marked."""
    k = len(data.expert_names)
    rows = [t for t in data.trials if t.weights is not None and len(t.weights) == k]
    weights = np.array([t.weights for t in rows], dtype=float).reshape(-1, k)
    values = np.array([np.nan if t.value is None else t.value for t in rows], dtype=float)
    best = data.best
    best_idx = next((i for i, t in enumerate(rows) if best is not None and t.number == best.number), None)
    rec = np.asarray(data.recommended, dtype=float) if data.recommended is not None else None
    return MixturePoints(
        names=list(data.expert_names),
        numbers=np.array([t.number for t in rows], dtype=int),
        weights=weights,
        values=values,
        best=best_idx,
        recommended=rec,
    )


@dataclass(frozen=True)
class BestSoFar:
    """Convergence: each completed trial's value and the running best.

    Attributes:
        numbers: trial numbers of the completed trials, increasing.
        values: their values.
        value_se: their bootstrap standard errors (NaN where not recorded).
        best: the best value up to and including each trial, in the study's direction.
    """

    numbers: np.ndarray
    values: np.ndarray
    value_se: np.ndarray
    best: np.ndarray


def best_so_far(data: StudyData) -> BestSoFar:
    """The running best value over completed trials, in trial-number order."""
    done = sorted((t for t in data.trials if t.value is not None and math.isfinite(t.value)), key=lambda t: t.number)
    values = np.array([t.value for t in done], dtype=float)
    acc = np.maximum.accumulate if data.direction == "maximize" else np.minimum.accumulate
    return BestSoFar(
        numbers=np.array([t.number for t in done], dtype=int),
        values=values,
        value_se=np.array([np.nan if t.value_se is None else t.value_se for t in done], dtype=float),
        best=acc(values) if len(values) else values,
    )


@dataclass(frozen=True)
class DomainTradeoffs:
    """Per-domain score against that domain's weight, over completed trials with per-domain scores.

    Attributes:
        domains: the scored domains (the experts' names that have scores, in weight order).
        weight: ``{domain: n weights}`` the weight of the expert of that domain.
        score: ``{domain: n scores}``.
        values: ``n`` aggregate values.
    """

    domains: list[str]
    weight: dict[str, np.ndarray]
    score: dict[str, np.ndarray]
    values: np.ndarray


def domain_tradeoffs(data: StudyData) -> DomainTradeoffs:
    """Each domain's score as a function of its own weight (experts matched to domains by name)."""
    k = len(data.expert_names)
    rows = [
        t for t in data.trials if t.scores and t.weights is not None and len(t.weights) == k and t.value is not None
    ]
    scored = {d for t in rows for d in (t.scores or {})}
    domains = [n for n in data.expert_names if n in scored]
    w = np.array([t.weights for t in rows], dtype=float).reshape(-1, k)
    weight = {d: w[:, data.expert_names.index(d)] for d in domains}
    score = {d: np.array([(t.scores or {}).get(d, np.nan) for t in rows], dtype=float) for d in domains}
    return DomainTradeoffs(
        domains=domains, weight=weight, score=score, values=np.array([t.value for t in rows], dtype=float)
    )


@dataclass(frozen=True)
class Timings:
    """Per-trial seconds spent merging ``theta(w)`` and evaluating it.

    Attributes:
        numbers: trial numbers with recorded timings.
        merge_seconds: ``n`` merge times.
        eval_seconds: ``n`` evaluation times.
    """

    numbers: np.ndarray
    merge_seconds: np.ndarray
    eval_seconds: np.ndarray


def timings(data: StudyData) -> Timings:
    """Merge and evaluation seconds of every trial that recorded them."""
    rows = [t for t in data.trials if t.merge_seconds is not None and t.eval_seconds is not None]
    return Timings(
        numbers=np.array([t.number for t in rows], dtype=int),
        merge_seconds=np.array([t.merge_seconds for t in rows], dtype=float),
        eval_seconds=np.array([t.eval_seconds for t in rows], dtype=float),
    )


class PromotionLike(Protocol):
    """What the proxy-vs-SFT view reads from a promotion record."""

    role: Any
    proxy_value: float | None
    sft_value: float | None


@dataclass(frozen=True)
class ProxySft:
    """Proxy (merged-expert) value against the SFT value of promoted mixtures.

    Attributes:
        proxy: ``n`` proxy values of promotions with both values.
        sft: ``n`` SFT values.
        roles: ``n`` promotion roles.
        spearman: Spearman rank correlation (None with fewer than 3 points or constant values).
        n_promotions: all promotions, including those without an SFT value yet.
    """

    proxy: np.ndarray
    sft: np.ndarray
    roles: list[str]
    spearman: float | None
    n_promotions: int


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy.stats import spearmanr

    rho = float(spearmanr(x, y).statistic)
    return rho if math.isfinite(rho) else None


def proxy_vs_sft(promotions: Sequence[PromotionLike]) -> ProxySft:
    """Pairs (proxy value, SFT value) of the promotions that have both, and their Spearman rho."""
    pairs = [
        (float(p.proxy_value), float(p.sft_value), str(getattr(p.role, "value", p.role)))
        for p in promotions
        if p.proxy_value is not None and p.sft_value is not None
    ]
    proxy = np.array([p[0] for p in pairs], dtype=float)
    sft = np.array([p[1] for p in pairs], dtype=float)
    return ProxySft(
        proxy=proxy, sft=sft, roles=[p[2] for p in pairs], spearman=_spearman(proxy, sft), n_promotions=len(promotions)
    )
