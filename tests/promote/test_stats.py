"""Report statistics against hand-computed values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dmo_search.promote.plot import write_scatter
from dmo_search.promote.stats import compute_report, rank_correlations, top1_regret


def test_spearman_and_kendall_hand_computed() -> None:
    # ranks differ by swaps (1,2) and (3,4): sum d^2 = 4 -> rho = 1 - 6*4/(5*24) = 0.8;
    # 8 concordant, 2 discordant pairs of 10 -> tau = 0.6
    rho, tau = rank_correlations([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], n_boot=500)
    assert rho.estimate == pytest.approx(0.8)
    assert tau.estimate == pytest.approx(0.6)


def test_perfect_and_reversed_orders() -> None:
    rho, tau = rank_correlations([0.1, 0.2, 0.3, 0.4], [10, 20, 30, 40], n_boot=200)
    assert rho.estimate == pytest.approx(1.0) and tau.estimate == pytest.approx(1.0)
    rho, tau = rank_correlations([0.1, 0.2, 0.3, 0.4], [4, 3, 2, 1], n_boot=200)
    assert rho.estimate == pytest.approx(-1.0) and tau.estimate == pytest.approx(-1.0)


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded() -> None:
    x = [0.1, 0.5, 0.2, 0.9, 0.4, 0.7, 0.3, 0.8]
    y = [0.2, 0.4, 0.1, 0.8, 0.6, 0.5, 0.3, 0.9]
    rho, tau = rank_correlations(x, y, n_boot=1000, seed=3)
    for c in (rho, tau):
        assert c.low is not None and c.high is not None and c.estimate is not None
        assert -1 <= c.low <= c.estimate <= c.high <= 1
        assert c.low < c.high
        assert c.n_boot > 900 and c.level == 0.95
    again, _ = rank_correlations(x, y, n_boot=1000, seed=3)
    assert again == rho
    narrow, _ = rank_correlations(x, y, n_boot=1000, seed=3, level=0.5)
    assert narrow.low is not None and narrow.high is not None
    assert rho.low <= narrow.low and narrow.high <= rho.high  # type: ignore[operator]


def test_undefined_correlations() -> None:
    rho, tau = rank_correlations([1, 2], [1, 2])
    assert rho.estimate is None and tau.estimate is None and rho.low is None
    rho, _ = rank_correlations([1, 1, 1], [1, 2, 3])
    assert rho.estimate is None
    with pytest.raises(ValueError, match="2 proxy values but 3"):
        rank_correlations([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="level"):
        rank_correlations([1, 2, 3], [1, 2, 3], level=1.5)


def test_top1_regret() -> None:
    assert top1_regret([0.1, 0.5, 0.3], [0.4, 0.2, 0.6]) == pytest.approx(0.4)
    assert top1_regret([0.1, 0.5, 0.3], [0.4, 0.7, 0.6]) == 0.0
    assert top1_regret([0.5, 0.5], [0.1, 0.3]) == pytest.approx(0.2)  # ties: the first proxy pick
    with pytest.raises(ValueError):
        top1_regret([], [])


def _rec(role: str, w: float, proxy: float | None, sft: float | None) -> SimpleNamespace:
    return SimpleNamespace(role=role, weights={"a": w, "b": 1 - w}, proxy_value=proxy, sft_value=sft)


def test_compute_report_uses_only_fully_scored_promotions() -> None:
    recs = [
        _rec("top", 0.9, 0.8, 0.7),
        _rec("top", 0.7, 0.6, 0.9),
        _rec("calibration", 0.0, 0.1, 0.2),
        _rec("calibration", 1.0, 0.3, None),  # not trained yet
    ]
    rep = compute_report(recs, study_name="s", recommended={"a": 0.8, "b": 0.2}, n_boot=100)
    assert rep.n_promotions == 4 and rep.n_scored == 3
    assert rep.top1_regret == pytest.approx(0.2)
    assert rep.proxy_pick is not None and rep.proxy_pick["weights"] == {"a": 0.9, "b": pytest.approx(0.1)}
    assert rep.best_sft is not None and rep.best_sft["sft_value"] == 0.9
    assert rep.spearman.estimate == pytest.approx(0.5)  # ranks (3,2,1) vs (2,3,1)
    assert rep.to_dict()["recommended"] == {"a": 0.8, "b": 0.2}
    empty = compute_report([], study_name="s")
    assert empty.top1_regret is None and empty.spearman.estimate is None


def test_scatter_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = write_scatter([_rec("top", 0.5, 0.2, 0.3), _rec("calibration", 0.1, 0.4, 0.1)], tmp_path / "p" / "s.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_scatter([], tmp_path / "e.png").stat().st_size > 0


def test_vectorised_bootstrap_statistics_equal_scipy_with_ties() -> None:
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    from dmo_search.promote.stats import _boot_kendall, _boot_spearman

    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(50, 7)).astype(float)  # many ties, as resamples with replacement have
    y = rng.integers(0, 4, size=(50, 7)).astype(float)
    rho, tau = _boot_spearman(x, y), _boot_kendall(x, y)
    for i in range(50):
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            assert np.isnan(rho[i]) and np.isnan(tau[i])
            continue
        assert rho[i] == pytest.approx(spearmanr(x[i], y[i]).statistic)
        assert tau[i] == pytest.approx(kendalltau(x[i], y[i]).statistic)
