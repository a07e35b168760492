"""Human-readable text of promotion results (the CLI prints it; ``--json`` prints the dicts instead)."""

from __future__ import annotations

from collections.abc import Sequence

from dmo_search.promote.stats import Correlation, PromotionReport
from dmo_search.promote.store import PromotionRecord

__all__ = ["promotions_text", "report_text"]


def _w(weights: dict[str, float] | None) -> str:
    return "-" if not weights else " ".join(f"{k}={v:.3f}" for k, v in weights.items())


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def promotions_text(records: Sequence[PromotionRecord]) -> str:
    """One line per promoted run: role, weights, status, proxy and SFT values, counts, times."""
    rows = [
        [
            r.role,
            _w(r.weights),
            r.status,
            _num(r.proxy_value),
            _num(r.sft_value),
            "-" if not r.data_counts else ",".join(str(n) for n in r.data_counts.values()),
            _num(r.train_seconds, ".1f"),
            _num(r.eval_seconds, ".1f"),
            (r.error or "")[:50],
        ]
        for r in records
    ]
    header = ["role", "weights", "status", "proxy", "sft", "counts", "train s", "eval s", "error"]
    return _table(rows, header)


def _corr(name: str, c: Correlation) -> str:
    if c.estimate is None:
        return f"{name}: undefined (needs >= 3 scored mixtures with distinct values)"
    ci = "" if c.low is None else f"  [{c.low:+.3f}, {c.high:+.3f}] ({c.level:.0%} bootstrap CI, {c.n_boot} resamples)"
    return f"{name}: {c.estimate:+.3f}{ci}"


def report_text(rep: PromotionReport) -> str:
    """The report as a few lines of text."""
    lines = [
        f"study {rep.study_name}: {rep.n_promotions} promotion(s), {rep.n_scored} with proxy and SFT scores",
        f"recommended mixture (argmax of the posterior mean): {_w(rep.recommended)}",
    ]
    if rep.best_sft is not None:
        lines.append(f"best SFT mixture: {_w(rep.best_sft['weights'])}  SFT {rep.best_sft['sft_value']:.4f}")
    if rep.proxy_pick is not None:
        lines.append(
            f"proxy's pick: {_w(rep.proxy_pick['weights'])}  proxy {rep.proxy_pick['proxy_value']:.4f}"
            f"  SFT {rep.proxy_pick['sft_value']:.4f}"
        )
    lines += [
        _corr("Spearman rho", rep.spearman),
        _corr("Kendall tau", rep.kendall),
        f"top-1 regret (best SFT - SFT of the proxy's pick): {_num(rep.top1_regret)}",
    ]
    if rep.full_validation is not None:
        f = rep.full_validation
        lines += [
            f"on the full validation sets ({f['n_scored']} mixtures):",
            "  " + _corr("Spearman rho", Correlation(**f["spearman"])),
            "  " + _corr("Kendall tau", Correlation(**f["kendall"])),
            f"  top-1 regret: {_num(f['top1_regret'])}",
        ]
    return "\n".join(lines)
