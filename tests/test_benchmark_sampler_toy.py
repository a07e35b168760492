"""The samplers' benchmark on the toy world's real objective (``benchmarks/sampler_toy.py``), on the
session's toy world with the transformers backend: every study runs its budget on the subset, and each
recommendation is scored again on the regret's examples (8 per domain here, all by default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import sampler_toy

pytestmark = pytest.mark.slow


def test_every_sampler_runs_its_budget_and_each_recommendation_is_scored(
    toy_world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs.json"
    argv = ["--config", str(toy_world.config_path), "--backend", "hf", "--seeds", "1", "--subset", "4"]
    argv += ["--trials", "6", "--truth-subset", "8", "--grid-step", "1", "--json", str(out)]
    assert sampler_toy.main(argv) == 0
    printed = capsys.readouterr().out
    assert "K=3 toy noise=" in printed and "Normalised regret after n trials" in printed

    record = json.loads(out.read_text())
    studies = {s["sampler"]: s for s in record["studies"]}
    assert len(studies["gp-simplex"]["observed"]) == 6
    assert (
        len(studies["random"]["observed"]) == len(studies["tpe"]["observed"]) == 6 * sampler_toy.bench.BASELINE_FACTOR
    )
    assert len(studies["grid"]["observed"]) == 21  # the paper's K = 3 design
    assert all(se > 0 for _, se in studies["random"]["observed"])  # a subset of 4 examples is noisy
    true = {tuple(w): v for w, v in record["true"]}
    assert {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)} <= set(true)  # the grid of step 1
    for s in studies.values():  # each recommendation has its score on the regret's examples
        assert all(tuple(round(x, 9) for x in w) in true for w in s["recommended"].values())
    assert record["f_mean"] == pytest.approx(
        sum(true[v] for v in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]) / 3
    )


@pytest.mark.parametrize("flag", ["--seeds", "--subset", "--trials", "--truth-subset", "--grid-step"])
def test_a_count_below_one_is_an_argument_error(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sampler_toy.main([flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err
