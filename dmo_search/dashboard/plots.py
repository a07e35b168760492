"""Matplotlib figures of the mixture views (no pyplot, no display: plain ``Figure`` objects).

Each ``plot_*`` function draws one view's data (:mod:`dmo_search.dashboard.views`) and returns the
figure; :func:`to_svg` renders it to a standalone SVG document and releases it.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dmo_search.dashboard.views import (
    BestSoFar,
    DomainTradeoffs,
    MixturePoints,
    ProxySft,
    Timings,
    ternary_xy,
)

__all__ = [
    "plot_best_so_far",
    "plot_domain_tradeoffs",
    "plot_mixtures",
    "plot_proxy_vs_sft",
    "plot_timings",
    "to_svg",
]

_CMAP = "viridis"
_BEST: dict[str, Any] = {
    "marker": "*",
    "s": 260,
    "facecolor": "#e4572e",
    "edgecolor": "black",
    "linewidth": 0.8,
    "zorder": 5,
}
_REC: dict[str, Any] = {
    "marker": "X",
    "s": 140,
    "facecolor": "#ffffff",
    "edgecolor": "#d62728",
    "linewidth": 1.6,
    "zorder": 6,
}
_LOCK = threading.Lock()  # matplotlib's renderers are not guaranteed thread-safe


def to_svg(fig: Figure) -> str:
    """The figure as an SVG document (text); the figure is cleared afterwards."""
    buf = io.StringIO()
    with _LOCK:
        fig.savefig(buf, format="svg", bbox_inches="tight")
        fig.clear()
    return buf.getvalue()


def _empty(fig: Figure, ax: Axes, text: str) -> None:
    fig.set_size_inches(4.8, 2.2)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def _value_colours(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    return values, lo, hi if hi > lo else lo + 1e-9


def _ternary(fig: Figure, pts: MixturePoints) -> None:
    ax = fig.add_subplot(1, 1, 1)
    ax.set_aspect("equal")
    ax.axis("off")
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 0.0]])
    for f in (0.2, 0.4, 0.6, 0.8):  # grid lines of constant weight, one family per expert
        for i in range(3):
            a, b = np.zeros(3), np.zeros(3)
            a[i] = b[i] = f
            a[(i + 1) % 3], b[(i + 2) % 3] = 1 - f, 1 - f
            seg = ternary_xy(np.stack([a, b]))
            ax.plot(seg[:, 0], seg[:, 1], color="#dddddd", linewidth=0.6, zorder=0)
    ax.plot(corners[:, 0], corners[:, 1], color="black", linewidth=1.0)
    offsets = [(-0.04, -0.05, "right"), (1.04, -0.05, "left"), (0.5, math.sqrt(3) / 2 + 0.04, "center")]
    for name, (x, y, ha) in zip(pts.names, offsets, strict=True):
        ax.text(x, y, name, ha=ha, va="center", fontsize=11, fontweight="bold")
    xy = ternary_xy(pts.weights)
    done = np.isfinite(pts.values)
    if (~done).any():
        ax.scatter(xy[~done, 0], xy[~done, 1], facecolor="none", edgecolor="#999999", s=40, label="not completed")
    _, lo, hi = _value_colours(pts.values)
    sc = ax.scatter(
        xy[done, 0],
        xy[done, 1],
        c=pts.values[done],
        cmap=_CMAP,
        vmin=lo,
        vmax=hi,
        s=55,
        edgecolor="black",
        linewidth=0.4,
        zorder=3,
    )
    if done.any():
        fig.colorbar(sc, ax=ax, shrink=0.7, label="value")
    _marks(ax, pts, lambda w: ternary_xy(w)[0])
    ax.legend(loc="upper left", fontsize=8, frameon=False)


def _marks(ax: Axes, pts: MixturePoints, project: Callable[[np.ndarray], np.ndarray]) -> None:
    if pts.best is not None:
        x, y = project(pts.weights[pts.best])
        ax.scatter([x], [y], label=f"best (trial {pts.numbers[pts.best]})", **_BEST)
    if pts.recommended is not None:
        x, y = project(pts.recommended)
        ax.scatter([x], [y], label="recommended", **_REC)


def _parallel(fig: Figure, pts: MixturePoints) -> None:
    ax = fig.add_subplot(1, 1, 1)
    k = len(pts.names)
    xs = np.arange(k)
    from matplotlib import colormaps

    cmap = colormaps[_CMAP]
    _, lo, hi = _value_colours(pts.values)
    order = np.argsort(np.nan_to_num(pts.values, nan=-np.inf))  # best drawn last, on top
    for i in order:
        v = pts.values[i]
        colour = "#bbbbbb" if not np.isfinite(v) else cmap((v - lo) / (hi - lo))
        ax.plot(xs, pts.weights[i], color=colour, linewidth=1.0, alpha=0.8)
    if pts.best is not None:
        ax.plot(
            xs,
            pts.weights[pts.best],
            color=_BEST["facecolor"],
            linewidth=3,
            label=f"best (trial {pts.numbers[pts.best]})",
        )
    if pts.recommended is not None:
        ax.plot(xs, pts.recommended, color=_REC["edgecolor"], linewidth=2.5, linestyle="--", label="recommended")
    for x in xs:
        ax.axvline(float(x), color="black", linewidth=0.6)
    ax.set_xticks(xs, pts.names)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("weight")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(norm=Normalize(lo, hi), cmap=cmap), ax=ax, label="value")
    ax.legend(loc="upper right", fontsize=8)


def _two(fig: Figure, pts: MixturePoints) -> None:
    ax = fig.add_subplot(1, 1, 1)
    done = np.isfinite(pts.values)
    ax.scatter(pts.weights[done, 0], pts.values[done], color="#3b75af", label="completed trials")
    if pts.best is not None:
        ax.scatter([pts.weights[pts.best, 0]], [pts.values[pts.best]], label="best", **_BEST)
    if pts.recommended is not None:
        ax.axvline(float(pts.recommended[0]), color=_REC["edgecolor"], linestyle="--", label="recommended")
    ax.set_xlabel(f"weight of {pts.names[0]} (1 - weight of {pts.names[1]})")
    ax.set_ylabel("value")
    ax.set_xlim(-0.02, 1.02)
    ax.legend(fontsize=8)


def plot_mixtures(pts: MixturePoints) -> Figure:
    """Where the study searched: a ternary plot for K = 3, parallel coordinates for K > 3, value
    against the first weight for K = 2; colour is the value, the star the best trial, the cross the
    recommended mixture."""
    k = len(pts.names)
    fig = Figure(figsize=(6.4, 5.4) if k == 3 else (max(6.4, 1.1 * k + 2), 4.2))
    if len(pts.weights) == 0 or k < 2:
        _empty(fig, fig.add_subplot(1, 1, 1), "no trial with weights yet")
    elif k == 3:
        _ternary(fig, pts)
    elif k == 2:
        _two(fig, pts)
    else:
        _parallel(fig, pts)
    return fig


def plot_best_so_far(b: BestSoFar, direction: str = "maximize") -> Figure:
    """Each completed trial's value (± its bootstrap SE) and the best so far, over trial numbers."""
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    if len(b.values) == 0:
        _empty(fig, ax, "no completed trial yet")
        return fig
    se = np.where(np.isfinite(b.value_se), b.value_se, 0.0)
    ax.errorbar(
        b.numbers, b.values, yerr=se, fmt="o", color="#3b75af", ecolor="#9fbfdc", markersize=5, label="trial value ± SE"
    )
    ax.step(b.numbers, b.best, where="post", color="#e4572e", linewidth=2, label=f"best so far ({direction})")
    ax.set_xlabel("trial")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_domain_tradeoffs(d: DomainTradeoffs) -> Figure:
    """One panel per domain: its score against its expert's weight, coloured by the aggregate value."""
    n = max(len(d.domains), 1)
    fig = Figure(figsize=(3.2 * n + 1.0, 3.4))
    if not d.domains:
        _empty(fig, fig.add_subplot(1, 1, 1), "no per-domain scores recorded")
        return fig
    _, lo, hi = _value_colours(d.values)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    sc = None
    for ax, dom in zip(axes, d.domains, strict=True):
        sc = ax.scatter(
            d.weight[dom],
            d.score[dom],
            c=d.values,
            cmap=_CMAP,
            vmin=lo,
            vmax=hi,
            s=35,
            edgecolor="black",
            linewidth=0.3,
        )
        ax.set_title(dom)
        ax.set_xlabel(f"weight of {dom}")
        ax.set_xlim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("domain score")
    if sc is not None:
        fig.colorbar(sc, ax=list(axes), label="value", shrink=0.9)
    return fig


def plot_timings(t: Timings) -> Figure:
    """Stacked bars per trial: seconds to merge ``theta(w)`` and to evaluate it."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    if len(t.numbers) == 0:
        _empty(fig, ax, "no trial recorded timings")
        return fig
    ax.bar(t.numbers, t.merge_seconds, color="#e4572e", label="merge")
    ax.bar(t.numbers, t.eval_seconds, bottom=t.merge_seconds, color="#3b75af", label="eval")
    ax.set_xlabel("trial")
    ax.set_ylabel("seconds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_proxy_vs_sft(p: ProxySft) -> Figure:
    """Proxy value against SFT value of promoted mixtures, with Spearman's rho in the title."""
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    if len(p.proxy) == 0:
        _empty(fig, ax, "no promotion with an SFT score yet")
        return fig
    for role in sorted(set(p.roles)):
        m = np.array([r == role for r in p.roles])
        ax.scatter(p.proxy[m], p.sft[m], s=50, edgecolor="black", linewidth=0.4, label=role)
    rho = "n/a (needs 3+ distinct points)" if p.spearman is None else f"{p.spearman:.3f}"
    ax.set_title(f"Spearman rho = {rho}  (n = {len(p.proxy)})", fontsize=10)
    ax.set_xlabel("proxy value (merged experts)")
    ax.set_ylabel("SFT value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
