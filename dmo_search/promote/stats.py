"""Report statistics of a promotion (pure functions; no DB, no plotting).

How well did the merged-expert proxy rank the mixtures the way real SFT does? Spearman's rho and
Kendall's tau-b (scipy) between proxy and SFT values, each with a percentile bootstrap confidence
interval over the promoted mixtures (pairs resampled with replacement), and the top-1 regret: the best
SFT value minus the SFT value of the mixture the proxy ranked first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["Correlation", "PromotionReport", "compute_report", "rank_correlations", "top1_regret"]


class _Promotion(Protocol):
    @property
    def role(self) -> Any: ...
    @property
    def weights(self) -> dict[str, float]: ...
    @property
    def proxy_value(self) -> float | None: ...
    @property
    def sft_value(self) -> float | None: ...


@dataclass(frozen=True)
class Correlation:
    """A rank correlation and its bootstrap confidence interval (None when undefined).

    Attributes:
        estimate: the statistic on all pairs.
        low, high: the percentile bootstrap interval at ``level``.
        level: the interval's confidence level.
        n_boot: bootstrap resamples that gave a defined statistic.
    """

    estimate: float | None
    low: float | None
    high: float | None
    level: float
    n_boot: int


@dataclass(frozen=True)
class PromotionReport:
    """What ``dmo-search report`` shows (see :func:`compute_report`)."""

    study_name: str
    recommended: dict[str, float] | None
    n_promotions: int
    n_scored: int
    spearman: Correlation
    kendall: Correlation
    top1_regret: float | None
    proxy_pick: dict[str, Any] | None
    best_sft: dict[str, Any] | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    full_validation: dict[str, Any] | None = None
    """Proxy vs SFT on every validation example (``promote --full-validation``): ``n_scored``,
    ``spearman``, ``kendall``, ``top1_regret``; None when no run has both full scores."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _stat(kind: str, x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import kendalltau, spearmanr

    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    r = spearmanr(x, y).statistic if kind == "spearman" else kendalltau(x, y).statistic
    return _finite(float(r))


def _boot_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (``n_boot x n``; average ranks for ties, as scipy); NaN where constant."""
    from scipy.stats import rankdata

    rx = rankdata(x, axis=1)
    ry = rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _boot_kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair (``n_boot x n``), from the signs of all pairwise differences."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    den = np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(axis=(1, 2)) / np.where(den > 0, den, 1.0), np.nan)


def rank_correlations(
    proxy: Sequence[float], sft: Sequence[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[Correlation, Correlation]:
    """Spearman's rho and Kendall's tau-b of ``proxy`` vs ``sft`` with percentile bootstrap CIs.

    Args:
        proxy: ``n`` proxy values.
        sft: ``n`` SFT values of the same mixtures.
        n_boot: bootstrap resamples (pairs drawn with replacement); resamples where a side is
            constant are skipped.
        seed: seeds the resampling.
        level: confidence level of the intervals, in ``(0, 1)``.

    Returns:
        ``(spearman, kendall)``; estimates are None with fewer than 3 pairs or a constant side,
        intervals None when fewer than 10 resamples were defined.

    Raises:
        ValueError: lengths differ or ``level`` is outside ``(0, 1)``.
    """
    if len(proxy) != len(sft):
        raise ValueError(f"{len(proxy)} proxy values but {len(sft)} SFT values")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(proxy, dtype=float)
    y = np.asarray(sft, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    out = []
    for kind in ("spearman", "kendall"):
        est = _stat(kind, x, y) if len(x) >= 3 else None
        boots = np.empty(0)
        if est is not None:
            b = _boot_spearman(x[idx], y[idx]) if kind == "spearman" else _boot_kendall(x[idx], y[idx])
            boots = b[np.isfinite(b)]
        low: float | None = None
        high: float | None = None
        if len(boots) >= 10:
            a = (1 - level) / 2
            low, high = (float(v) for v in np.quantile(boots, [a, 1 - a]))
        out.append(Correlation(est, low, high, level, len(boots)))
    return out[0], out[1]


def top1_regret(proxy: Sequence[float], sft: Sequence[float]) -> float:
    """Best SFT value minus the SFT value of the proxy's first-ranked mixture (ties: the first).

    Raises:
        ValueError: empty or of different lengths.
    """
    if len(proxy) != len(sft) or not proxy:
        raise ValueError(f"need equally many (>= 1) proxy and SFT values, got {len(proxy)} and {len(sft)}")
    pick = int(np.argmax(np.asarray(proxy, dtype=float)))
    return float(max(sft) - sft[pick])


def compute_report(
    promotions: Sequence[_Promotion],
    *,
    study_name: str,
    recommended: dict[str, float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PromotionReport:
    """The report of a study's promotions.

    Args:
        promotions: promotion records (:class:`~dmo_search.promote.store.PromotionRecord` or alike);
            those with both a proxy and an SFT value enter the statistics.
        study_name: the study.
        recommended: the study's recommended mixture (argmax of the GP posterior mean), shown as is.
        n_boot, seed, level: bootstrap settings (see :func:`rank_correlations`).
    """
    scored = [p for p in promotions if p.proxy_value is not None and p.sft_value is not None]
    proxy = [float(p.proxy_value) for p in scored if p.proxy_value is not None]
    sft = [float(p.sft_value) for p in scored if p.sft_value is not None]
    rho, tau = rank_correlations(proxy, sft, n_boot=n_boot, seed=seed, level=level)

    def brief(p: _Promotion) -> dict[str, Any]:
        return {
            "weights": dict(p.weights),
            "role": str(getattr(p.role, "value", p.role)),
            "proxy_value": p.proxy_value,
            "sft_value": p.sft_value,
        }

    pick = best = None
    regret = None
    if scored:
        regret = top1_regret(proxy, sft)
        pick = brief(scored[int(np.argmax(proxy))])
        best = brief(scored[int(np.argmax(sft))])
    full = [p for p in promotions if getattr(p, "proxy_full_value", None) is not None]
    full = [p for p in full if getattr(p, "sft_full_value", None) is not None]
    full_section = None
    if full:
        fx = [float(p.proxy_full_value) for p in full]  # type: ignore[attr-defined]
        fy = [float(p.sft_full_value) for p in full]  # type: ignore[attr-defined]
        f_rho, f_tau = rank_correlations(fx, fy, n_boot=n_boot, seed=seed, level=level)
        full_section = {
            "n_scored": len(full),
            "spearman": asdict(f_rho),
            "kendall": asdict(f_tau),
            "top1_regret": top1_regret(fx, fy),
        }
    return PromotionReport(
        study_name=study_name,
        full_validation=full_section,
        recommended=recommended,
        n_promotions=len(promotions),
        n_scored=len(scored),
        spearman=rho,
        kendall=tau,
        top1_regret=regret,
        proxy_pick=pick,
        best_sft=best,
        rows=[brief(p) for p in promotions],
    )
