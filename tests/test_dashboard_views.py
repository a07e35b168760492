"""The mixture views as data, their figures, the study loader and the read-only storage (no browser)."""

from __future__ import annotations

import math
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from dmo_search.dashboard import plots, views
from dmo_search.dashboard.data import StudyData, UnknownStudyError, load_study_data
from dmo_search.dashboard.page import study_page, study_panels
from dmo_search.dashboard.promotions import load_promotion_records
from dmo_search.dashboard.storage import DashboardStorageError, open_read_storage
from dmo_search.optimize import optimize_simplex
from dmo_search.promote.store import PromotionRecord
from dmo_search.study import OVER_BUDGET_ATTR, TrialRecord


def _rec(n: int, w: list[float] | None, v: float | None, **kw: object) -> TrialRecord:
    base: dict[str, object] = {
        "value_se": None,
        "scores": None,
        "merge_seconds": None,
        "eval_seconds": None,
        "error": None,
    }
    base.update(kw)
    return TrialRecord(number=n, state="COMPLETE" if v is not None else "RUNNING", weights=w, value=v, **base)  # type: ignore[arg-type]


def _data(
    trials: list[TrialRecord], names: tuple[str, ...] = ("a", "b", "c"), direction: str = "maximize"
) -> StudyData:
    return StudyData("s", list(names), direction, trials, recommended=[0.2, 0.3, 0.5][: len(names)])


def test_ternary_xy_puts_vertices_at_the_triangle_corners() -> None:
    xy = views.ternary_xy(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]]))
    np.testing.assert_allclose(xy[:3], [[0, 0], [1, 0], [0.5, math.sqrt(3) / 2]], atol=1e-12)
    np.testing.assert_allclose(xy[3], [0.5, math.sqrt(3) / 6], atol=1e-12)  # the centroid


def test_mixture_points_mark_best_and_skip_trials_without_weights() -> None:
    d = _data([_rec(0, [1, 0, 0], 0.2), _rec(1, None, None), _rec(2, [0, 1, 0], 0.9), _rec(3, [0, 0, 1], None)])
    pts = views.mixture_points(d)
    assert list(pts.numbers) == [0, 2, 3]
    assert pts.best == 1 and np.isnan(pts.values[2])
    np.testing.assert_allclose(pts.recommended, [0.2, 0.3, 0.5])  # type: ignore[arg-type]
    low = views.mixture_points(_data(d.trials, direction="minimize"))
    assert low.best == 0


@pytest.mark.parametrize(
    ("direction", "expected"), [("maximize", [0.5, 0.5, 0.7, 0.7]), ("minimize", [0.5, 0.1, 0.1, 0.1])]
)
def test_best_so_far_follows_the_direction(direction: str, expected: list[float]) -> None:
    vals = [0.5, 0.1, 0.7, 0.3]
    d = _data(
        [_rec(i, [1, 0, 0], v, value_se=0.01) for i, v in enumerate(vals)] + [_rec(9, None, None)], direction=direction
    )
    b = views.best_so_far(d)
    assert list(b.numbers) == [0, 1, 2, 3]
    np.testing.assert_allclose(b.best, expected)
    np.testing.assert_allclose(b.value_se, 0.01)


def test_domain_tradeoffs_pair_each_score_with_its_own_weight() -> None:
    d = _data([
        _rec(0, [0.6, 0.3, 0.1], 0.5, scores={"a": 0.9, "b": 0.4, "c": 0.2}),
        _rec(1, [0.1, 0.1, 0.8], 0.6, scores={"a": 0.1, "b": 0.2, "c": 0.95}),
    ])  # fmt: skip
    t = views.domain_tradeoffs(d)
    assert t.domains == ["a", "b", "c"]
    np.testing.assert_allclose(t.weight["c"], [0.1, 0.8])
    np.testing.assert_allclose(t.score["c"], [0.2, 0.95])


def test_timings_only_trials_that_recorded_them() -> None:
    d = _data([_rec(0, [1, 0, 0], 0.1, merge_seconds=0.02, eval_seconds=1.5), _rec(1, [0, 1, 0], 0.2)])
    t = views.timings(d)
    assert list(t.numbers) == [0] and t.merge_seconds[0] == 0.02 and t.eval_seconds[0] == 1.5


def _promo(role: str, proxy: float | None, sft: float | None) -> PromotionRecord:
    """A promotion record as the promotion store returns it (only the fields the view reads vary)."""
    return PromotionRecord(id=0, study_name="s", run_key="k", role=role, status="done", weights={"a": 1.0},  # type: ignore[arg-type]
                           proxy_value=proxy, sft_value=sft)  # fmt: skip


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)


def test_proxy_vs_sft_spearman() -> None:
    rng = np.random.default_rng(0)
    proxy, sft = rng.normal(size=8), rng.normal(size=8)
    promos = [_promo("top", p, s) for p, s in zip(proxy, sft, strict=True)] + [_promo("top", 0.3, None)]
    res = views.proxy_vs_sft(promos)
    assert res.n_promotions == 9 and len(res.proxy) == 8
    expected = np.corrcoef(_ranks(proxy), _ranks(sft))[0, 1]  # Pearson of the ranks (no ties)
    assert res.spearman == pytest.approx(expected)
    monotone = views.proxy_vs_sft([_promo("a", x, x**3) for x in (0.1, 0.5, 0.2, 0.9)])
    assert monotone.spearman == pytest.approx(1.0)
    reverse = views.proxy_vs_sft([_promo("a", x, -x) for x in (0.1, 0.5, 0.2)])
    assert reverse.spearman == pytest.approx(-1.0)
    assert views.proxy_vs_sft([_promo("a", 0.1, 0.2), _promo("a", 0.3, 0.1)]).spearman is None  # too few
    assert views.proxy_vs_sft([]).n_promotions == 0


def _svg_paths(svg: str) -> int:
    root = ET.fromstring(svg)
    return sum(1 for el in root.iter() if el.tag.endswith("path"))


@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_every_figure_renders_to_svg_for_any_k(k: int) -> None:
    names = tuple(f"d{i}" for i in range(k))
    rng = np.random.default_rng(k)
    trials = []
    for i in range(7):
        w = list(rng.dirichlet(np.ones(k)))
        trials.append(_rec(i, w, float(rng.random()), value_se=0.02, scores={n: float(rng.random()) for n in names},
                           merge_seconds=0.01, eval_seconds=0.5))  # fmt: skip
    d = StudyData("s", list(names), "maximize", trials, recommended=list(np.ones(k) / k))
    figs = [
        plots.plot_mixtures(views.mixture_points(d)),
        plots.plot_best_so_far(views.best_so_far(d)),
        plots.plot_domain_tradeoffs(views.domain_tradeoffs(d)),
        plots.plot_timings(views.timings(d)),
        plots.plot_proxy_vs_sft(views.proxy_vs_sft([_promo("a", x, x + 0.1) for x in (0.1, 0.4, 0.3)])),
    ]
    for fig in figs:
        assert _svg_paths(plots.to_svg(fig)) > 5
    empty = StudyData("s", list(names), "maximize", [], recommended=None)
    assert "no trial with weights yet" in plots.to_svg(plots.plot_mixtures(views.mixture_points(empty)))


def test_load_study_data_from_a_real_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    optimize_simplex(lambda w: w[0] - w[2], 3, 6, sampler="random", storage=url, study_name="plain")
    optimize_simplex(lambda w: [w[0], w[1]], 3, 4, sampler="random", storage=url, study_name="multi", n_objectives=2)
    storage = open_read_storage(url)
    try:
        d = load_study_data(storage, "plain")
        assert d.expert_names == ["w0", "w1", "w2"] and len(d.trials) == 6 and d.counts() == {"COMPLETE": 6}
        assert d.best is not None and d.recommended == d.best.weights  # not a gp-simplex config: best observed
        multi = load_study_data(storage, "multi")
        t = multi.trials[0]
        assert t.value == pytest.approx((t.weights[0] + t.weights[1]) / 2)  # type: ignore[index]
        with pytest.raises(UnknownStudyError, match="plain"):
            load_study_data(storage, "nope")
    finally:
        storage.engine.dispose()


def test_read_storage_switches_sqlite_to_wal_and_names_missing_files(tmp_path: Path) -> None:
    db = tmp_path / "rollback.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="x", storage=url)  # optuna's default: a rollback journal
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    open_read_storage(url).engine.dispose()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(DashboardStorageError, match="no study DB at"):
        open_read_storage(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(DashboardStorageError, match="not a SQLAlchemy URL"):
        open_read_storage("studies/toy/study.db")


def test_a_db_without_promotions_has_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(study_name="s", storage=url)
    assert load_promotion_records(url, "s") == []


def test_a_study_without_trials_renders_every_panel() -> None:
    empty = StudyData("new", ["a", "b", "c"], "maximize", [], recommended=None)
    panels = study_panels(empty, [])
    assert [p.key for p in panels] == ["mixtures", "best-so-far", "domains", "timings", "proxy-sft"]
    assert all(_svg_paths(p.svg) > 0 for p in panels)
    text = study_page(empty, panels, live=False)
    assert "no trials" in text and "No promotions yet" in text and "<script" not in text


def test_failed_trials_are_listed_with_why_they_failed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    study = optuna.create_study(study_name="f", storage=url, direction="maximize")
    raised = study.ask()
    raised.set_user_attr("weights", [1.0, 0.0, 0.0])
    raised.set_user_attr("error", "RuntimeError: merge <failed>")
    study.tell(raised, state=optuna.trial.TrialState.FAIL)
    unrun = study.ask()
    unrun.set_user_attr(OVER_BUDGET_ATTR, True)
    study.tell(unrun, state=optuna.trial.TrialState.FAIL)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # a process that stopped: no attribute
    study.tell(study.ask(), 0.5)
    storage = open_read_storage(url)
    try:
        d = load_study_data(storage, "f")
    finally:
        storage.engine.dispose()
    errors = [t.error for t in d.trials]
    assert errors[0] == "RuntimeError: merge <failed>" and errors[3] is None
    assert errors[1] is not None and errors[1].startswith("not run: others filled the budget")
    assert errors[2] is not None and "stopped before reporting" in errors[2]
    text = study_page(d, study_panels(d, []), live=False)
    table = text[text.index('<table id="failures">') :]
    assert table.index(">2<") < table.index(">1<") < table.index(">0<")  # the most recent first
    assert "merge &lt;failed&gt;" in table and "w0=1.000, w1=0.000, w2=0.000" in table  # escaped
    assert 'id="failures"' not in study_page(_data([_rec(0, [1, 0, 0], 0.2)]), [], live=False)


def test_summary_says_when_the_scores_are_noise_limited(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    url = f"sqlite:///{tmp_path / 'n.db'}"
    # True scores differ by at most 0.01 and each is measured with noise sd 0.05: noise-limited.
    optimize_simplex(
        lambda w: 0.5 + 0.01 * w[0] + 0.05 * float(rng.normal()),
        n_domains=3,
        n_trials=10,
        sampler="random",
        storage=url,
        noise_sd=0.05,
    )
    optimize_simplex(lambda w: w[0], n_domains=3, n_trials=10, sampler="random", storage=url)  # noiseless
    storage = open_read_storage(url)
    try:
        noisy, clean = (load_study_data(storage, s.study_name) for s in optuna.get_all_study_summaries(url))
    finally:
        storage.engine.dispose()
    summary = study_page(noisy, [], live=False).split('<table id="summary">')[1].split("</table>")[0]
    assert "<th>noise</th>" in summary and "of it<br>" in summary and "more trials will not tell them apart" in summary
    assert "<th>noise</th>" not in study_page(clean, [], live=False)  # no standard errors, no check


@pytest.mark.slow  # builds the toy world
def test_the_recommendation_is_the_studys_own_with_its_constraints(toy_world: Any, tmp_path: Path) -> None:
    """The dashboard recommends what `dmo-search best` does: with the study's constraints (the GP's
    unconstrained maximum, add = 0.8, lies outside them) and its seed."""
    import yaml

    from dmo_search import simplex
    from dmo_search.config import load_config
    from dmo_search.study import prepare_study, recommended_weights
    from tests._study_helpers import small_config

    path = small_config(toy_world.root, tmp_path, name="capped", sampler="gp-simplex")
    raw = yaml.safe_load(path.read_text())
    raw["search"]["constraints"] = {"max_weight": {"add": 0.3}}
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    study = prepare_study(cfg)
    for w in np.random.default_rng(0).dirichlet(np.ones(3), size=8).tolist():
        study.add_trial(
            optuna.trial.create_trial(
                params=simplex.weights_to_params(w),
                distributions=simplex.distributions(3),
                value=-float(np.sum((np.asarray(w) - [0.8, 0.1, 0.1]) ** 2)),
                user_attrs={"weights": w},
            )
        )
    expected = recommended_weights(study, cfg)
    storage = open_read_storage(cfg.storage_url())
    try:
        shown = load_study_data(storage, "capped").recommended
    finally:
        storage.engine.dispose()
    assert shown == expected
    assert shown is not None and shown[0] <= 0.3 + 1e-9, shown
