"""Which merge method's proxy ranks the promoted mixtures the way SFT does (``report --compare-methods``).

For the promotions with an SFT score, each mixture is scored as a proxy under each requested merge
method; per method the table gives Spearman's rho and Kendall's tau-b with SFT (bootstrap CIs, see
:mod:`dmo_search.promote.stats`) and the top-1 regret of the method's pick. The study's own method
reuses the proxy values stored with the promotions; other scores come from a scorer (by default
:func:`dmo_search.proxies.score_with_method`) and are cached in the study DB
(:mod:`dmo_search.promote.proxy_cache`), so a second report does not score again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dmo_search.merge_params import METHOD_PARAMS, ParamValue, resolve_params
from dmo_search.promote.stats import Correlation, rank_correlations, top1_regret
from dmo_search.proxies import MethodScorer

if TYPE_CHECKING:
    from dmo_search.config import StudyConfig
    from dmo_search.promote.proxy_cache import ProxyCache
    from dmo_search.promote.store import PromotionRecord

__all__ = [
    "MethodComparison",
    "MethodRow",
    "Scorer",
    "StudyScorer",
    "compare_methods",
    "comparison_text",
    "parse_method_params",
    "parse_methods",
    "study_scorer",
]

Scorer = Callable[[str, Mapping[str, ParamValue], list[list[float]]], list[float]]
"""``scorer(method, params, mixtures) -> proxy values``, one per mixture (weights in expert order)."""


@dataclass(frozen=True)
class MethodRow:
    """One method's line of the comparison.

    Attributes:
        method: the merge method; params: its resolved hyper-parameters.
        n: mixtures with a proxy and an SFT value.
        spearman, kendall: rank correlation of the method's proxy with SFT (None estimates below 3).
        top1_regret: best SFT minus the SFT of the mixture this proxy ranks first.
        pick: the weights of that mixture.
        scored, cached, reused: how many values were scored now, read from the cache, taken from the promotions.
    """

    method: str
    params: dict[str, ParamValue]
    n: int
    spearman: Correlation
    kendall: Correlation
    top1_regret: float | None
    pick: dict[str, float] | None
    scored: int
    cached: int
    reused: int


@dataclass(frozen=True)
class MethodComparison:
    """The side-by-side comparison: one row per method and the per-mixture values behind it."""

    study_name: str
    methods: list[MethodRow]
    mixtures: list[dict[str, Any]]  # {"weights", "role", "sft_value", "proxy": {method: value}}
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def parse_methods(text: str) -> list[str]:
    """``'all'`` or a comma-separated list of merge methods, validated, duplicates dropped.

    Raises:
        ValueError: an unknown method (the message lists the allowed ones) or an empty list.
    """
    names = list(METHOD_PARAMS) if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHOD_PARAMS]
    if unknown:
        raise ValueError(
            f"--compare-methods: unknown merge method(s) {unknown}; choose from {list(METHOD_PARAMS)} or 'all'"
        )
    if not names:
        raise ValueError(f"--compare-methods needs at least one method of {list(METHOD_PARAMS)} or 'all'")
    return list(dict.fromkeys(names))


def parse_method_params(text: str | None, methods: Sequence[str]) -> dict[str, dict[str, ParamValue]]:
    """Each method's resolved parameters, from ``--method-params`` JSON ``{method: {param: value}}``.

    Raises:
        ValueError: not JSON, not a mapping of methods to mappings, a method not compared, or a bad
            parameter (see :func:`~dmo_search.merge_params.resolve_params`).
    """
    given: Any = {}
    if text:
        try:
            given = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f'--method-params is not JSON ({e}); write e.g. \'{{"wudi": {{"steps": 20}}}}\'') from None
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise ValueError('--method-params must map methods to parameter objects, e.g. \'{"ties": {"mask_rate": 0.5}}\'')
    extra = sorted(set(given) - set(methods))
    if extra:
        raise ValueError(f"--method-params names {extra}, which are not compared; compared: {list(methods)}")
    return {m: resolve_params(m, given.get(m)) for m in methods}


def _setup(cfg: StudyConfig, method: str, params: Mapping[str, ParamValue]) -> dict[str, Any]:
    """What a method's proxy value depends on, JSON-ready (the cache key hashes it)."""
    data = json.loads(cfg.to_json())
    merge = {k: v for k, v in data["merge"].items() if k not in ("method", "params")}
    return {
        "method": method,
        "params": dict(params),
        "merge": merge,
        **{k: data[k] for k in ("base_model", "experts", "objective", "backend")},
    }


class StudyScorer(MethodScorer):
    """The real :data:`Scorer`: :class:`~dmo_search.proxies.MethodScorer` with the study's config and
    backend, one backend for all the methods compared (each switched in place where it can). A context
    manager; :meth:`close` stops the backend."""

    def __init__(self, cfg: StudyConfig, say: Callable[[str], None] = lambda _: None) -> None:
        super().__init__(cfg)
        self.say = say

    def __call__(self, method: str, params: Mapping[str, ParamValue], mixtures: list[list[float]]) -> list[float]:
        """Proxy values of ``mixtures`` under ``method`` with ``params``."""
        self.say(f"{method}: scoring {len(mixtures)} mixture(s) with the {self.cfg.backend.name} backend")
        values = [float(r.value) for r in self.score(method, mixtures, params=params)]
        self.say(f"{method}: merged models served ({self.last_load})")
        return values


def study_scorer(cfg: StudyConfig, say: Callable[[str], None] = lambda _: None) -> StudyScorer:
    """The study's scorer (:class:`StudyScorer`); use it as a context manager."""
    return StudyScorer(cfg, say)


def compare_methods(
    records: Sequence[PromotionRecord],
    cfg: StudyConfig,
    methods: Sequence[str],
    *,
    params: Mapping[str, Mapping[str, ParamValue]] | None = None,
    scorer: Scorer,
    cache: ProxyCache | None = None,
    n_boot: int = 2000,
    say: Callable[[str], None] = lambda _: None,
) -> MethodComparison:
    """Rank-correlate each method's proxy with SFT over the promotions with an SFT score.

    Args:
        records: the study's promotions; those with ``sft_value`` enter.
        cfg: the study config (expert order, the study's own merge method, the cache fingerprint).
        methods: merge methods to compare, in table order.
        params: each method's hyper-parameters (default: the paper code's); validated.
        scorer: computes proxy values not stored or cached.
        cache: where computed values are kept and looked up (None: no caching).
        n_boot: bootstrap resamples for the CIs.
        say: progress messages.

    Raises:
        ValueError: no promotion has an SFT score, or an unknown method or parameter.
    """
    scored = [r for r in records if r.sft_value is not None]
    if not scored:
        raise ValueError(
            f"study {cfg.study_name!r} has no promotions with SFT scores; "
            f"run `dmo-search promote {cfg.study_name}` first"
        )
    names = cfg.expert_names
    mixtures = [[float(r.weights.get(n, 0.0)) for n in names] for r in scored]
    sft = [float(r.sft_value) for r in scored if r.sft_value is not None]
    own = (cfg.merge.method, resolve_params(cfg.merge.method, cfg.merge.params))
    rows: list[MethodRow] = []
    proxy: dict[str, list[float | None]] = {}
    for method in methods:
        p = resolve_params(method, (params or {}).get(method))
        values: list[float | None] = [None] * len(scored)
        reused = cached = 0
        if (method, p) == own:  # the promotions' stored proxy is this method's
            values = [r.proxy_value for r in scored]
            reused = sum(v is not None for v in values)
        setup = _setup(cfg, method, p)
        missing = [i for i, v in enumerate(values) if v is None]
        if missing and cache is not None:
            hit = cache.get(setup, [mixtures[i] for i in missing])
            for i, v in zip(missing, hit, strict=True):
                values[i] = v
            cached = sum(v is not None for v in hit)
            missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            todo = [mixtures[i] for i in missing]
            new = scorer(method, p, todo)
            if len(new) != len(todo):
                raise ValueError(f"the scorer returned {len(new)} values for {len(todo)} mixtures ({method})")
            for i, v in zip(missing, new, strict=True):
                values[i] = float(v)
            if cache is not None:
                cache.put(method, setup, todo, new)
        say(f"{method}: {reused} stored, {cached} cached, {len(missing)} scored")
        proxy[method] = values
        ok = [i for i, v in enumerate(values) if v is not None]
        xs = [float(v) for v in values if v is not None]
        ys = [sft[i] for i in ok]
        rho, tau = rank_correlations(xs, ys, n_boot=n_boot)
        pick = None
        regret = None
        if ok:
            regret = top1_regret(xs, ys)
            best = ok[max(range(len(xs)), key=lambda j: (xs[j], -j))]
            pick = dict(zip(names, mixtures[best], strict=True))
        rows.append(MethodRow(method, dict(p), len(ok), rho, tau, regret, pick, len(missing), cached, reused))
    table = [
        {
            "weights": dict(zip(names, mixtures[i], strict=True)),
            "role": r.role,
            "sft_value": sft[i],
            "proxy": {m: proxy[m][i] for m in methods},
        }
        for i, r in enumerate(scored)
    ]
    note = None
    if len(scored) < 3:
        note = (
            f"only {len(scored)} promotion(s) with an SFT score: rank correlations are undefined below 3; "
            "promote more mixtures (dmo-search promote --top/--calibration)"
        )
    return MethodComparison(cfg.study_name, rows, table, note)


def _num(x: float | None, fmt: str = "+.3f") -> str:
    return "-" if x is None else format(x, fmt)


def _corr(c: Correlation) -> str:
    if c.estimate is None:
        return "undefined"
    ci = "" if c.low is None or c.high is None else f" [{c.low:+.2f}, {c.high:+.2f}]"
    return f"{c.estimate:+.3f}{ci}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def comparison_text(cmp: MethodComparison) -> str:
    """The per-mixture proxy values and the side-by-side method table, as text."""
    methods = [r.method for r in cmp.methods]
    per_mix = _table(
        [
            [
                " ".join(f"{k}={v:.3f}" for k, v in m["weights"].items()),
                str(m["role"]),
                f"{m['sft_value']:.4f}",
                *(_num(m["proxy"][k], ".4f") for k in methods),
            ]
            for m in cmp.mixtures
        ],
        ["weights", "role", "sft", *methods],
    )
    level = cmp.methods[0].spearman.level if cmp.methods else 0.95
    summary = _table(
        [[r.method, str(r.n), _corr(r.spearman), _corr(r.kendall), _num(r.top1_regret, ".4f")] for r in cmp.methods],
        ["method", "n", f"Spearman [{level:.0%} CI]", f"Kendall [{level:.0%} CI]", "top-1 regret"],
    )
    parts = [f"merge methods as proxies of SFT, study {cmp.study_name}:", per_mix, "", summary]
    if any(r.spearman.estimate is None for r in cmp.methods):
        parts.append("undefined: fewer than 3 mixtures, or a proxy (or SFT) equal on all of them")
    if cmp.note:
        parts.append(cmp.note)
    return "\n".join(parts)
