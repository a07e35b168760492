"""``report --compare-methods``: each merge method's proxy rank-correlated with SFT, side by side."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest

from dmo_search.cli import main
from dmo_search.config import StudyConfig, load_config
from dmo_search.merge_params import ParamValue
from dmo_search.promote.compare import (
    compare_methods,
    comparison_text,
    parse_method_params,
    parse_methods,
)
from dmo_search.promote.proxy_cache import ProxyCache
from dmo_search.promote.store import PromotionRecord, PromotionStore
from dmo_search.proxies import config_with_method
from tests._study_helpers import small_config

SFT = [0.1, 0.2, 0.3, 0.4]
MIXES = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]]
# proxy values per method on MIXES, against SFT (ranks 1,2,3,4):
#   linear: the stored proxy_value, same order        -> rho 1,   tau 1,   regret 0
#   ties: reversed                                      -> rho -1,  tau -1,  regret 0.4 - 0.1 = 0.3
#   dare_linear: ranks 2,1,3,4 (sum d^2 = 2, 1 discordant pair of 6) -> rho 1 - 6*2/(4*15) = 0.8, tau 4/6, regret 0
PROXY = {"ties": [0.9, 0.8, 0.7, 0.6], "dare_linear": [0.2, 0.1, 0.3, 0.4]}


class CountingScorer:
    """A real scorer from a lookup table that counts the mixtures it is asked for."""

    def __init__(self, table: Mapping[str, list[float]] = PROXY) -> None:
        self.table = table
        self.calls: list[tuple[str, dict[str, ParamValue], int]] = []

    def __call__(self, method: str, params: Mapping[str, ParamValue], mixtures: list[list[float]]) -> list[float]:
        self.calls.append((method, dict(params), len(mixtures)))
        return [self.table[method][MIXES.index(w)] for w in mixtures]


@pytest.fixture(scope="module")
def cfg(toy_world: Any, tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    return load_config(small_config(Path(toy_world.root), tmp_path_factory.mktemp("cmp"), name="c"))


def _records(sft: Sequence[float | None], proxy: Sequence[float | None] | None = None) -> list[PromotionRecord]:
    names = ["add", "shift", "sort"]
    return [
        PromotionRecord(
            id=i,
            study_name="c",
            run_key=f"r{i}",
            role="calibration",
            status="done" if s is not None else "failed",
            weights=dict(zip(names, MIXES[i], strict=True)),
            proxy_value=None if proxy is None else proxy[i],
            sft_value=s,
        )
        for i, s in enumerate(sft)
    ]


def test_each_method_is_correlated_with_sft(cfg: StudyConfig) -> None:
    scorer = CountingScorer()
    recs = _records(list(SFT), proxy=[1.0, 2.0, 3.0, 4.0])
    cmp = compare_methods(recs, cfg, ["linear", "ties", "dare_linear"], scorer=scorer, n_boot=200)
    rows = {r.method: r for r in cmp.methods}
    assert [c[0] for c in scorer.calls] == ["ties", "dare_linear"]  # linear is the study's method: stored values
    assert rows["linear"].reused == 4 and rows["linear"].scored == 0
    assert rows["linear"].spearman.estimate == pytest.approx(1.0)
    assert rows["linear"].kendall.estimate == pytest.approx(1.0)
    assert rows["linear"].top1_regret == pytest.approx(0.0)
    assert rows["ties"].spearman.estimate == pytest.approx(-1.0)
    assert rows["ties"].kendall.estimate == pytest.approx(-1.0)
    assert rows["ties"].top1_regret == pytest.approx(0.3)
    assert rows["ties"].pick == {"add": 1.0, "shift": 0.0, "sort": 0.0}
    assert rows["dare_linear"].spearman.estimate == pytest.approx(0.8)
    assert rows["dare_linear"].kendall.estimate == pytest.approx(4 / 6)
    assert rows["dare_linear"].top1_regret == pytest.approx(0.0)
    assert rows["ties"].params == {"mask_rate": 0.8, "scaling_coefficient": 1.0}  # the paper code's defaults
    assert cmp.note is None and all(r.n == 4 for r in cmp.methods)
    text = comparison_text(cmp)
    assert "Spearman" in text and "-1.000" in text and "+0.800" in text and "0.3000" in text
    json.dumps(cmp.to_dict())


def test_only_promotions_with_sft_enter_and_missing_stored_values_are_scored(cfg: StudyConfig) -> None:
    calls: list[int] = []

    def linear_scorer(method: str, params: Mapping[str, ParamValue], mixtures: list[list[float]]) -> list[float]:
        calls.append(len(mixtures))
        return [10.0 + MIXES.index(w) for w in mixtures]

    recs = _records([0.1, None, 0.3, 0.4], proxy=[1.0, 2.0, None, 4.0])
    cmp = compare_methods(recs, cfg, ["linear"], scorer=linear_scorer, n_boot=50)
    row = cmp.methods[0]
    assert calls == [1] and row.reused == 2 and row.scored == 1 and row.n == 3
    assert [m["proxy"]["linear"] for m in cmp.mixtures] == [1.0, 12.0, 4.0]
    assert row.top1_regret == pytest.approx(0.4 - 0.3)


def test_cache_spares_the_second_run(cfg: StudyConfig, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    PromotionStore(url, "c").close()  # the promotions' tables exist too: the cache sits next to them
    scorer = CountingScorer()
    recs = _records(list(SFT))
    for _ in range(2):
        cache = ProxyCache(url, "c")
        try:
            cmp = compare_methods(recs, cfg, ["ties", "dare_linear"], scorer=scorer, cache=cache, n_boot=50)
        finally:
            cache.close()
    assert [(m, n) for m, _, n in scorer.calls] == [("ties", 4), ("dare_linear", 4)]  # the second run scored nothing
    assert [(r.scored, r.cached) for r in cmp.methods] == [(0, 4), (0, 4)]
    assert cmp.methods[0].spearman.estimate == pytest.approx(-1.0)
    cache = ProxyCache(url, "c")  # other parameters are another setup: scored again
    try:
        compare_methods(recs, cfg, ["ties"], params={"ties": {"mask_rate": 0.5}}, scorer=scorer, cache=cache, n_boot=50)
    finally:
        cache.close()
    assert scorer.calls[-1] == ("ties", {"mask_rate": 0.5, "scaling_coefficient": 1.0}, 4)


def test_the_studys_own_method_reuses_stored_proxies(cfg: StudyConfig) -> None:
    ties_cfg = config_with_method(cfg, "ties")
    scorer = CountingScorer({**PROXY, "linear": [0.4, 0.3, 0.2, 0.1]})
    cmp = compare_methods(_records(list(SFT), proxy=PROXY["ties"]), ties_cfg, ["linear", "ties"], scorer=scorer)
    assert [c[0] for c in scorer.calls] == ["linear"]
    assert [(r.method, r.reused, r.scored) for r in cmp.methods] == [("linear", 0, 4), ("ties", 4, 0)]
    other = compare_methods(  # other parameters than the study's: not the stored proxy
        _records(list(SFT), proxy=PROXY["ties"]), ties_cfg, ["ties"], params={"ties": {"mask_rate": 0.5}}, scorer=scorer
    )
    assert other.methods[0].scored == 4


def test_fewer_than_three_scored_still_shows_the_scores(cfg: StudyConfig) -> None:
    cmp = compare_methods(_records([0.1, 0.2]), cfg, ["ties"], scorer=CountingScorer(), n_boot=50)
    assert cmp.methods[0].spearman.estimate is None and cmp.methods[0].n == 2
    assert cmp.note is not None and "undefined below 3" in cmp.note
    text = comparison_text(cmp)
    assert "undefined" in text and "0.9000" in text and "0.8000" in text


def test_no_sft_scores_says_to_promote(cfg: StudyConfig) -> None:
    with pytest.raises(ValueError, match="dmo-search promote c"):
        compare_methods(_records([None, None]), cfg, ["linear"], scorer=CountingScorer())


def test_method_flags_are_validated() -> None:
    assert parse_methods("ties, linear,ties") == ["ties", "linear"]
    assert len(parse_methods("all")) == 8
    with pytest.raises(ValueError, match=r"unknown merge method\(s\) \['foo'\].*'dare_ties'"):
        parse_methods("linear,foo")
    assert parse_method_params('{"wudi": {"steps": 5}}', ["wudi"])["wudi"]["steps"] == 5
    with pytest.raises(ValueError, match="not compared"):
        parse_method_params('{"tsv": {}}', ["ties"])
    with pytest.raises(ValueError, match="not JSON"):
        parse_method_params("{steps: 5}", ["wudi"])
    with pytest.raises(ValueError, match="allowed"):
        parse_method_params('{"ties": {"drop_rate": 0.1}}', ["ties"])


def test_cli_rejects_an_unknown_method_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "no-such-study", "--compare-methods", "linear,bogus"]) == 1
    err = capsys.readouterr().err
    assert "unknown merge method(s) ['bogus']" in err and "wudi2" in err


@pytest.mark.slow
def test_toy_world_end_to_end(toy_world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real study (hf backend), promotions with given SFT values, proxies scored for real by three methods."""
    cfg_path = small_config(Path(toy_world.root), tmp_path, name="e", subset=10, n_trials=1, designs=["centre"])
    storage = f"sqlite:///{tmp_path / 'e.db'}"
    assert main(["launch", str(cfg_path), "--quiet", "--json", "--backend", "hf"]) == 0
    centre_value = optuna.load_study(study_name="e", storage=storage).trials[0].value
    mixes = [[1 / 3, 1 / 3, 1 / 3], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]
    store = PromotionStore(storage, "e")
    for i, (w, s) in enumerate(zip(mixes, [0.5, 0.2, 0.8, 0.4], strict=True)):
        store.add(f"m{i}", "calibration", dict(zip(["add", "shift", "sort"], w, strict=True)), sft_value=s)
    store.close()

    argv = ["report", "e", "--storage", storage, "--n-boot", "200", "--compare-methods", "linear,ties,dare_linear"]
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)["method_comparison"]
    rows = {r["method"]: r for r in cmp["methods"]}
    assert list(rows) == ["linear", "ties", "dare_linear"]
    for r in rows.values():
        assert r["n"] == 4 and r["scored"] == 4 and r["top1_regret"] >= 0
        assert r["spearman"]["estimate"] is None or -1 <= r["spearman"]["estimate"] <= 1
    values = {m: [x["proxy"][m] for x in cmp["mixtures"]] for m in rows}
    assert all(0 <= v <= 1 for vs in values.values() for v in vs)
    assert values["linear"][0] == pytest.approx(centre_value)  # the same merge and subset as the study's trial
    assert values["ties"] != values["linear"]  # a different merge, a different proxy

    assert main(argv) == 0  # again: everything from the cache, the same values
    out = capsys.readouterr()
    assert "Spearman" in out.out and "top-1 regret" in out.out and "dare_linear" in out.out
    assert "0 stored, 4 cached, 0 scored" in out.err
    print(out.out)
