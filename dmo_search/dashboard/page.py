"""HTML of the mixture pages: one self-contained document per study (figures as SVG data URIs,
inline CSS, no script), shared by the live dashboard and ``report --html``."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from dmo_search.dashboard import plots, views
from dmo_search.dashboard.data import StudyData
from dmo_search.noise import study_noise

__all__ = ["LIVE_REFRESH_S", "Panel", "index_page", "study_page", "study_panels"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:12px 24px}header a{color:#cfe3ff}
main{padding:16px 24px;max-width:1400px}
.grid{display:flex;flex-wrap:wrap;gap:16px}
figure{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0;padding:10px}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:13px;color:#555;max-width:640px;margin-top:6px}
table{border-collapse:collapse;font-size:14px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.note{color:#8a5a00}
"""


@dataclass(frozen=True)
class Panel:
    """One view on the page: a key (``data-view`` attribute), a title, a caption and the SVG."""

    key: str
    title: str
    caption: str
    svg: str


def _svg_img(svg: str, alt: str) -> str:
    b64 = base64.b64encode(svg.encode()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/svg+xml;base64,{b64}">'


def study_panels(data: StudyData, promotions: Sequence[Any], promotions_error: str | None = None) -> list[Panel]:
    """Every mixture view of a study, rendered."""
    k = len(data.expert_names)
    shape = {
        2: "value against the first weight. Star: best trial; dashed line: recommended mixture.",
        3: "the simplex (ternary plot). Colour: value; star: best trial; cross: recommended mixture.",
    }.get(k, "parallel coordinates, one line per trial. Colour: value; thick line: best trial; dashed: recommended.")
    pts = views.mixture_points(data)
    ps = views.proxy_vs_sft(promotions)
    if promotions_error:
        ps_caption = f"Promotions could not be read: {promotions_error}"
    elif ps.n_promotions == 0:
        ps_caption = "No promotions yet: promote mixtures to SFT to compare proxy and SFT scores."
    else:
        rho = "n/a" if ps.spearman is None else f"{ps.spearman:.3f}"
        ps_caption = f"{ps.n_promotions} promotion(s), {len(ps.proxy)} with an SFT score; Spearman rho {rho}."
    return [
        Panel(
            "mixtures",
            "Searched mixtures",
            f"Where the study searched: {shape}",
            plots.to_svg(plots.plot_mixtures(pts)),
        ),
        Panel(
            "best-so-far",
            "Best so far",
            "Each completed trial's value (± bootstrap SE) and the running best.",
            plots.to_svg(plots.plot_best_so_far(views.best_so_far(data), data.direction)),
        ),
        Panel(
            "domains",
            "Per-domain trade-offs",
            "Each domain's score against its expert's weight.",
            plots.to_svg(plots.plot_domain_tradeoffs(views.domain_tradeoffs(data))),
        ),
        Panel(
            "timings",
            "Merge and eval time",
            "Seconds per trial to merge theta(w) in place and to score it.",
            plots.to_svg(plots.plot_timings(views.timings(data))),
        ),
        Panel("proxy-sft", "Proxy vs. SFT", ps_caption, plots.to_svg(plots.plot_proxy_vs_sft(ps))),
    ]


def _fmt_w(names: Sequence[str], w: Sequence[float] | None) -> str:
    return "-" if w is None else ", ".join(f"{n}={x:.3f}" for n, x in zip(names, w, strict=True))


def _summary(data: StudyData) -> str:
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(data.counts().items())) or "no trials"
    target = f" (target {data.n_trials_target} completed)" if data.n_trials_target else ""
    best = data.best
    rows = [
        ("trials", counts + target),
        ("experts", ", ".join(data.expert_names)),
        ("sampler", data.sampler or "-"),
        (
            "best",
            "-"
            if best is None
            else f"trial {best.number}: {_fmt_w(data.expert_names, best.weights)}"
            f" value {best.value:.4f}" + (f" ± {best.value_se:.4f}" if best.value_se is not None else ""),
        ),
        ("recommended", _fmt_w(data.expert_names, data.recommended)),
    ]
    if best is not None and best.scores:
        rows.append(("best per domain", ", ".join(f"{d}={s:.3f}" for d, s in best.scores.items())))
    noise = study_noise(data.trials, data.subset_size)
    if noise is not None:
        rows.append(("noise", noise.describe().removeprefix("noise: ")))
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v).replace(chr(10), '<br>')}</td></tr>" for k, v in rows
    )
    return f'<table id="summary">{body}</table>'


_MAX_FAILURES_SHOWN = 10


def _failures(data: StudyData) -> str:
    """The most recent failed trials and why each failed (nothing when no trial failed)."""
    failed = [t for t in data.trials if t.state == "FAIL"]
    if not failed:
        return ""
    shown = failed[-_MAX_FAILURES_SHOWN:]
    head = "<tr><th>trial</th><th>weights</th><th>why it failed</th></tr>"
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{html.escape(_fmt_w(data.expert_names, t.weights))}</td>"
        f"<td>{html.escape((t.error or '-')[:300])}</td></tr>"
        for t in reversed(shown)
    )
    more = f" (the last {len(shown)} of {len(failed)})" if len(failed) > len(shown) else ""
    return f'<h3 style="margin:12px 0 0">Failed trials{more}</h3><table id="failures">{head}{rows}</table>'


def _document(title: str, header: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><header>{header}</header><main>{body}</main></body></html>"
    )


LIVE_REFRESH_S = 30
"""The live page reloads itself this often (no script: a meta refresh)."""


def study_page(data: StudyData, panels: Sequence[Panel], *, live: bool) -> str:
    """The mixture page of one study; ``live`` adds links to the dashboard and reloads every
    :data:`LIVE_REFRESH_S` seconds (the report has neither)."""
    name = html.escape(data.study_name)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    nav = ' &middot; <a href="/dmo/">all studies</a> &middot; <a href="/dashboard">optuna-dashboard</a>' if live else ""
    header = f'<h1 style="margin:0;font-size:22px">dmo-search study <span id="study-name">{name}</span></h1>'
    kind = f"live view, refreshed every {LIVE_REFRESH_S} s" if live else "report"
    header += f'<div style="font-size:13px">{kind}: {stamp}{nav}</div>'
    figs = "".join(
        f'<figure data-view="{p.key}"><h3 style="margin:2px 0 6px">{html.escape(p.title)}</h3>'
        f"{_svg_img(p.svg, p.title)}<figcaption>{html.escape(p.caption)}</figcaption></figure>"
        for p in panels
    )
    body = _summary(data) + _failures(data) + f'<div class="grid">{figs}</div>'
    return _document(f"dmo-search: {data.study_name}", header, body, LIVE_REFRESH_S if live else None)


def index_page(study_names: Sequence[str]) -> str:
    """The list of studies, each linking to its mixture page."""
    items = "".join(f'<li><a href="/dmo/{quote(n)}">{html.escape(n)}</a></li>' for n in study_names)
    body = f'<ul id="studies">{items}</ul>' if study_names else "<p>No study in this DB yet.</p>"
    header = '<h1 style="margin:0;font-size:22px">dmo-search studies</h1><a href="/dashboard">optuna-dashboard</a>'
    return _document("dmo-search studies", header, body)
