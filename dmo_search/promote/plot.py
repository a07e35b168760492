"""The proxy-vs-SFT scatter plot of a promotion (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_scatter"]

_MARKERS = {"top": "o", "calibration": "s", "ingested": "^"}


def write_scatter(promotions: Sequence[Any], path: Path, *, title: str = "") -> Path:
    """Write a PNG of proxy value (x) against SFT value (y), one marker per role, to ``path``.

    Promotions without both values are left out. Parent folders are created.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [
        (float(p.proxy_value), float(p.sft_value), str(getattr(p.role, "value", p.role)))
        for p in promotions
        if p.proxy_value is not None and p.sft_value is not None
    ]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    try:
        for role in sorted({r for _, _, r in pts}):
            xs = [x for x, _, r in pts if r == role]
            ys = [y for _, y, r in pts if r == role]
            ax.scatter(xs, ys, marker=_MARKERS.get(role, "o"), label=role, alpha=0.8)
        if pts:
            lo = min(min(x, y) for x, y, _ in pts)
            hi = max(max(x, y) for x, y, _ in pts)
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="y = x")
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no promotion with an SFT score yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("proxy value (merged experts)")
        ax.set_ylabel("SFT value")
        ax.set_title(title or "proxy vs SFT")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
