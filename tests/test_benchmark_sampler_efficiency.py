"""The sampler benchmark's 2x bookkeeping: the cells the goal line counts and their seed bootstrap."""

from __future__ import annotations

from benchmarks import sampler_efficiency as se

K = 2
CPS = se.CHECKPOINTS[K]  # (4, 6, 8, 12)
BUDGET = se.BASELINE_FACTOR * CPS[-1]


def _run(sampler: str, seed: int, regret_at: dict[int, float]) -> se.Run:
    return se.Run(sampler, K, "interior", 0.01, seed, regret_at, 0.0)


def _curve(ns: range, value: float) -> dict[int, float]:
    return {n: value for n in ns}


def _setting(gp_level: float | dict[int, float], baseline_curves: list[dict[int, float]]) -> list[se.Run]:
    gp = gp_level if isinstance(gp_level, dict) else _curve(range(K + 1, CPS[-1] + 1), gp_level)
    runs = []
    for seed, curve in enumerate(baseline_curves):
        runs.append(_run("gp-simplex", seed, gp))
        runs.append(_run("tpe", seed, curve))
    return runs


def test_setting_cells_reads_the_first_reach_and_the_hold() -> None:
    # TPE touches 0.05 at trial 3 by a lucky draw, rises again, and stays below it from trial 20 on.
    tpe = {n: 0.05 if n == 3 or n >= 20 else 0.3 for n in range(1, BUDGET + 1)}
    cells = se._setting_cells(_setting(0.05, [tpe] * 3))
    assert [c.n for c in cells] == list(CPS)
    assert [c.n_gp for c in cells] == [K + 1] * len(CPS)  # gp-simplex is at 0.05 from its first recommendation
    assert [c.reach["tpe"][1] for c in cells] == [3 / 3] * len(CPS)
    assert [c.held["tpe"] for c in cells] == [20 / 3] * len(CPS)
    assert [c.at_n["tpe"] for c in cells] == [3 / n for n in CPS]
    assert "random" not in cells[0].reach


def test_a_cell_divides_by_the_trials_gp_simplex_needed_to_reach_its_level() -> None:
    # gp-simplex: 0.3 at trials 3-4, 0.05 from trial 5, 0.01 from trial 10; TPE: 0.3 from 1, 0.05 from 15, 0.01 from 30.
    gp = {n: 0.3 if n < 5 else 0.05 if n < 10 else 0.01 for n in range(K + 1, CPS[-1] + 1)}
    tpe = {n: 0.3 if n < 15 else 0.05 if n < 30 else 0.01 for n in range(1, BUDGET + 1)}
    cells = {c.n: c for c in se._setting_cells(_setting(gp, [tpe] * 3))}
    assert {n: c.n_gp for n, c in cells.items()} == {4: 3, 6: 5, 8: 5, 12: 10}
    assert {n: c.reach["tpe"][1] for n, c in cells.items()} == {4: 1 / 3, 6: 15 / 5, 8: 15 / 5, 12: 30 / 10}
    assert {n: c.at_n["tpe"] for n, c in cells.items()} == {4: 1 / 4, 6: 15 / 6, 8: 15 / 8, 12: 30 / 12}
    # Read as hold: gp-simplex's worst median from n on, held from trial 3 (0.3), 5 (0.05) or 10 (0.01);
    # TPE's from 1, 15 or 30.
    assert {n: c.held["tpe"] for n, c in cells.items()} == {4: 1 / 3, 6: 15 / 5, 8: 15 / 5, 12: 30 / 10}


def test_resampled_count_is_certain_when_every_seed_agrees() -> None:
    slow = {n: 0.3 if n < 40 else 0.0 for n in range(1, BUDGET + 1)}  # reaches 0.05 only at 40 >= 2 x 12
    res = se._resample_2x({(K, "interior", 0.01): _setting(0.05, [slow] * 5)}, draws=50)
    assert res.counts == {"tpe": [len(CPS)] * 50}
    assert set(res.share.values()) == {1.0}

    fast = _curve(range(1, BUDGET + 1), 0.0)  # reaches any level after 1 trial: no cell is 2x
    res = se._resample_2x({(K, "interior", 0.01): _setting(0.05, [fast] * 5)}, draws=50)
    assert res.counts == {"tpe": [0] * 50}
    assert set(res.share.values()) == {0.0}


def test_resampled_count_spreads_when_seeds_disagree() -> None:
    # Two seeds of five reach the level at once; with three of five slow ones the median is slow, but a
    # draw with three or more fast seeds flips every cell.
    slow = {n: 0.3 if n < 40 else 0.0 for n in range(1, BUDGET + 1)}
    fast = _curve(range(1, BUDGET + 1), 0.0)
    res = se._resample_2x({(K, "interior", 0.01): _setting(0.05, [fast, fast, slow, slow, slow])}, draws=400)
    # P(at most 2 of 5 draws are fast seeds), p = 0.4: 0.683
    assert all(0.6 < p < 0.77 for p in res.share.values())
    assert set(res.counts["tpe"]) == {0, len(CPS)}


def test_every_sampler_is_scored_after_every_trial() -> None:
    # gp-simplex's posterior-mean recommendation was once scored only every few trials from trial K + 1,
    # which rounded its trials to reach a level up against baselines scored after every trial.
    land = se.make_landscape("interior", K, seed=0)
    for name in ("gp-simplex", "random"):
        run = se.run_one(name, land, noise=0.01, seed=0, n_trials=5)
        assert sorted(run.regret) == [1, 2, 3, 4, 5]
        assert all(r >= 0 for r in run.regret.values())
        # the best mixture run so far, scored without noise: never rises
        assert run.tried is not None and sorted(run.tried) == [1, 2, 3, 4, 5]
        assert all(run.tried[n + 1] <= run.tried[n] for n in range(1, 5))
        if name == "random":  # its recommendation, the best noisy score, is one of the mixtures run
            assert all(run.tried[n] <= run.regret[n] for n in run.tried)


def test_the_report_sets_the_recommendation_beside_the_best_mixture_run() -> None:
    ns = range(1, CPS[-1] + 1)
    runs = [
        se.Run("gp-simplex", K, "face", 0.01, seed, _curve(ns, rec), 0.0, tried=_curve(ns, tried))
        for seed, (rec, tried) in enumerate([(0.1, 0.01), (0.3, 0.02), (0.2, 0.03)])
    ]
    runs.append(_run("gp-simplex", 9, _curve(ns, 0.9)))  # an older run without the record is left out
    lines: list[str] = []
    se._print_recommendation_gap({(K, "face", 0.01): runs}, lines.append)
    row = lines[-1]
    assert row.startswith(f"  K={K} face noise=0.01")
    assert all(f"n={n} 0.200 / 0.020" in row for n in CPS), row
