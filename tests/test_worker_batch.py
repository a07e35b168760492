"""Batch mode of the worker (``worker.batch_size``): q trials claimed at once, their mixtures proposed
as one batch by gp-simplex, scored, and told one by one; exactly the budget completes. On the HF
backend (no ``generate_many``) a batch is scored one mixture after another; the one-engine-call path
(vLLM ``lora`` mode) is tested in ``tests/backends/test_vllm.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import TrialState

from dmo_search import simplex
from dmo_search.cli import main
from dmo_search.config import ConfigError, apply_overrides, load_config
from dmo_search.study import prepare_study, run_study
from tests._study_helpers import small_config


def test_a_batch_study_completes_its_budget_with_distinct_batches(toy_world: Any, tmp_path: Path) -> None:
    from dmo_search.backends.hf import HFBackend
    from dmo_search.objectives import make_objective

    cfg = load_config(
        small_config(toy_world.root, tmp_path, name="batch", subset=6, n_trials=7, sampler="gp-simplex",
                     worker={"batch_size": 3})
    )  # fmt: skip
    study = prepare_study(cfg)
    objective = make_objective(cfg.objective)
    backend = HFBackend(cfg)
    try:
        assert run_study(study, cfg, backend, objective, progress=False) == 7
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 7  # 3 + 3 + the 1 the budget left
        assert [t.user_attrs.get("batch_size") for t in trials] == [3] * 6 + [None]
        # every mixture of a batch came from propose_batch (enqueued with fixed weights), none repeats
        assert all("fixed_params" in t.system_attrs for t in trials[:6])
        assert "fixed_params" not in trials[6].system_attrs
        mixtures = [t.user_attrs["weights"] for t in trials]
        for i, w in enumerate(mixtures):
            assert abs(sum(w) - 1) < 1e-9 and min(w) >= 0
            others = [m for j, m in enumerate(mixtures) if j != i]
            assert min(simplex.data_moved(others, w)) > 0.01, (i, mixtures)
        # a batch's score is the mixture's own score, as a single trial would get it
        for t in (trials[1], trials[5]):
            backend.set_mixture(t.user_attrs["weights"])
            alone = objective.evaluate(backend)
            assert t.value == pytest.approx(alone.value, abs=1e-12)
            assert t.user_attrs["scores"] == pytest.approx(alone.scores, abs=1e-12)
    finally:
        backend.close()


def test_batch_size_errors_name_the_fix(toy_world: Any, tmp_path: Path) -> None:
    path = small_config(toy_world.root, tmp_path, subset=20, worker={"batch_size": 4})
    cfg = load_config(path)
    assert cfg.worker.batch_size == 4
    path.write_text(path.read_text().replace("subset_size: 20", "subset_size: 20\n  fidelities: [5, 20]"))
    with pytest.raises(ConfigError, match=r"objective.fidelities prunes one trial at a time; set worker.batch_size: 1"):
        load_config(path)
    for bad in (0, 65):
        with pytest.raises(ConfigError, match="batch_size"):
            apply_overrides(cfg, batch_size=bad)
    assert apply_overrides(cfg, batch_size=2).worker.batch_size == 2
    with pytest.raises(SystemExit):  # argparse: an int
        main(["worker", "t", "--batch-size", "two"])
    ok = small_config(toy_world.root, tmp_path, name="ok", subset=20)
    assert main(["launch", str(ok), "--no-run", "--batch-size", "0", "--quiet"]) == 1
    assert not (tmp_path / "ok.db").exists()  # a bad value leaves no study behind


def test_batch_claims_stop_at_the_budget_and_avoid_each_others_mixtures(toy_world: Any, tmp_path: Path) -> None:
    """Two workers with batch 3 on a budget of 5: the first claims 3 trials, the second only the 2
    places left; the second batch treats the first's RUNNING trials as pending (no mixture repeats)."""
    from dmo_search.worker import _claim, join_study

    path = small_config(toy_world.root, tmp_path, name="claims", n_trials=5, sampler="gp-simplex")
    assert main(["launch", str(path), "--no-run", "--quiet"]) == 0
    url = load_config(path).storage_url()
    study_a, cfg = join_study("claims", url, batch_size=3)
    study_b, _ = join_study("claims", url, batch_size=3)
    assert cfg.worker.batch_size == 3
    said: list[str] = []
    first = _claim(study_a, cfg, 5, said.append, q=3)
    second = _claim(study_b, cfg, 5, said.append, q=3)
    assert (len(first), len(second)) == (3, 2)
    mixtures = [simplex.params_to_weights(_fixed(t), 3) for t in first + second]  # all enqueued by the batches
    for i, w in enumerate(mixtures):
        others = [m for j, m in enumerate(mixtures) if j != i]
        assert min(simplex.data_moved(others, w)) > 0.01, (i, mixtures)
    states = [t.state for t in study_a.get_trials(deepcopy=False)]
    assert states == [TrialState.RUNNING] * 5 and not said


def _fixed(trial: Any) -> dict[str, float]:
    """An enqueued trial's weights as parameters (before its worker suggests them)."""
    return dict(trial.study._storage.get_trial(trial._trial_id).system_attrs["fixed_params"])


def test_worker_batch_size_flag_is_for_this_process_only(toy_world: Any, tmp_path: Path) -> None:
    """``dmo-search worker --batch-size 2`` runs batches of 2; the study's stored config keeps its own."""
    from dmo_search.study import load_study

    path = small_config(toy_world.root, tmp_path, name="flag", subset=4, n_trials=4, sampler="random")
    assert main(["launch", str(path), "--no-run", "--quiet"]) == 0
    url = load_config(path).storage_url()
    assert main(["worker", "flag", "--storage", url, "--batch-size", "2", "--quiet", "--json"]) == 0
    study, stored = load_study("flag", url)
    assert [t.user_attrs.get("batch_size") for t in study.get_trials(deepcopy=False)] == [2, 2, 2, 2]
    assert stored.worker.batch_size == 1


def test_mixtures_of_a_batch_scored_one_by_one_fail_one_by_one(toy_world: Any, tmp_path: Path) -> None:
    """On the HF backend a batch is scored mixture by mixture, so each failed mixture is its own failed
    attempt: with ``max_consecutive_failures: 2`` the worker stops inside the first batch of 3 (all 3
    told FAIL with the cause), unlike one failed shared engine call (tests/backends/test_vllm.py)."""
    from dmo_search.backends.hf import HFBackend
    from dmo_search.objectives import make_objective
    from dmo_search.study import StudyError

    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"prompt": "1+1=", "answers": [""]}\n')  # loglik: an answer with no tokens to score
    path = small_config(toy_world.root, tmp_path, name="fail1by1", subset=2, n_trials=6, sampler="gp-simplex",
                        worker={"batch_size": 3, "max_consecutive_failures": 2})  # fmt: skip
    raw = yaml.safe_load(path.read_text())
    raw["objective"].update(type="loglik", validation={**raw["objective"]["validation"], "empty": str(empty)})
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    study = prepare_study(cfg)
    backend = HFBackend(cfg)
    try:
        with pytest.raises(StudyError, match=r"stopped after 2 failed trials in a row .*tokenizes to nothing"):
            run_study(study, cfg, backend, make_objective(cfg.objective), progress=False)
    finally:
        backend.close()
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert all(
        "domain 'empty' could not be scored: ValueError: continuation ''" in t.user_attrs["error"] for t in trials
    )
