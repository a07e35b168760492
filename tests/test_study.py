"""A real study on the toy world: designs first, stored records, determinism, failures, config checks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from dmo_search import simplex
from dmo_search.backends.hf import HFBackend
from dmo_search.config import load_config
from dmo_search.objectives import make_objective
from dmo_search.study import (
    StudyError,
    best_record,
    evaluate_mixture,
    load_study,
    prepare_study,
    run_study,
    trial_records,
)
from tests._study_helpers import small_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ran(toy_world: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One study of 5 trials (centre + 3 vertices enqueued, then 1 random)."""
    out = tmp_path_factory.mktemp("study")
    path = small_config(toy_world.root, out, n_trials=5, designs=["centre", "vertices"])
    cfg = load_config(path)
    study = prepare_study(cfg)
    backend = HFBackend(cfg)
    objective = make_objective(cfg.objective)
    run_study(study, cfg, backend, objective, progress=False)
    return {"cfg": cfg, "study": study, "backend": backend, "objective": objective, "path": path}


def test_designs_run_first_and_records_are_complete(ran: dict[str, Any]) -> None:
    cfg, study = ran["cfg"], ran["study"]
    recs = trial_records(study)
    assert [r.state for r in recs] == ["COMPLETE"] * 5
    k = cfg.n_domains
    expected = [simplex.centre(k), *simplex.vertices(k)]
    for r, w in zip(recs[:4], expected, strict=True):
        assert r.weights == pytest.approx(w, abs=1e-12)
    for r in recs:
        assert r.weights is not None and abs(sum(r.weights) - 1) < 1e-12 and min(r.weights) >= 0
        assert r.scores is not None and set(r.scores) == set(cfg.objective.validation)
        assert r.value == pytest.approx(sum(r.scores.values()) / len(r.scores))
        assert r.value_se is not None and r.value_se >= 0
        assert r.merge_seconds is not None and r.merge_seconds > 0
        assert r.eval_seconds is not None and r.eval_seconds > 0
    # the study stores its config, fingerprints and the fixed subsets
    ua = study.user_attrs
    assert ua["config"]["study_name"] == "t"
    assert set(ua["fingerprints"]) == {"base", *cfg.expert_names}
    subsets = ua["objective"]["subsets"]
    assert all(len(s["indices"]) == 16 for s in subsets.values())


def test_trial_value_is_reproducible_outside_the_study(ran: dict[str, Any]) -> None:
    best = best_record(ran["study"])
    assert best is not None and best.weights is not None
    result, _, _ = evaluate_mixture(ran["backend"], ran["objective"], best.weights)
    assert result.value == pytest.approx(best.value, abs=1e-12)
    assert result.scores == pytest.approx(best.scores)


def test_mixtures_differ_in_score(ran: dict[str, Any]) -> None:
    values = {round(r.value, 6) for r in trial_records(ran["study"]) if r.value is not None}
    assert len(values) >= 3  # the merge changes the model: vertices and centre do not all tie


def test_budget_is_the_studys(ran: dict[str, Any]) -> None:
    study, cfg = load_study("t", ran["cfg"].storage_url())
    before = len(study.trials)
    n = run_study(study, cfg, ran["backend"], ran["objective"], progress=False)
    assert n == 5 and len(study.trials) == before  # already complete: nothing added
    n = run_study(study, cfg, ran["backend"], ran["objective"], n_trials=6, progress=False)
    assert n == 6 and len(study.trials) == before + 1


def test_relaunch_with_other_experts_is_refused_and_db_intact(ran: dict[str, Any], tmp_path: Path) -> None:
    import yaml

    cfg = ran["cfg"]
    raw = yaml.safe_load(Path(ran["path"]).read_text())
    raw["experts"] = list(reversed(raw["experts"]))
    p = tmp_path / "swapped.yaml"
    p.write_text(yaml.safe_dump(raw))
    snapshot = [
        (t.number, t.state, t.value) for t in optuna.load_study(study_name="t", storage=cfg.storage_url()).trials
    ]
    with pytest.raises(StudyError, match=r"(?s)different setup.*experts.*--study-name"):
        prepare_study(load_config(p))
    after = [(t.number, t.state, t.value) for t in optuna.load_study(study_name="t", storage=cfg.storage_url()).trials]
    assert after == snapshot


def test_changed_validation_file_is_refused(ran: dict[str, Any], tmp_path: Path) -> None:
    cfg = ran["cfg"]
    domain, path = next(iter(cfg.objective.validation.items()))
    lines = Path(path).read_text().splitlines()
    copy = tmp_path / "val.jsonl"
    copy.write_text("\n".join(lines[1:]) + "\n")  # one example fewer
    raw = json.loads(cfg.to_json())
    raw["objective"]["validation"][domain] = str(copy)
    from dmo_search.config import parse_config
    from dmo_search.study import check_objective

    changed = parse_config(raw)
    with pytest.raises(StudyError, match="validation data differ"):
        check_objective(ran["study"], make_objective(changed.objective))


def test_failing_candidates_become_failed_trials(
    ran: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A candidate whose merge raises is a FAIL trial with its error (the progress bar names it on
    stderr, never on stdout, which `--json` keeps for JSON); 3 in a row stop the run."""
    path = small_config(Path(ran["cfg"].base_model).parent, tmp_path, name="f", n_trials=3)
    cfg = load_config(path)
    study = prepare_study(cfg)
    backend = ran["backend"]
    real = backend.set_mixture
    calls = {"n": 0}

    def flaky(weights: Any) -> None:
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise RuntimeError("injected merge fault")
        real(weights)

    backend.set_mixture = flaky
    try:
        capsys.readouterr()
        run_study(study, cfg, backend, ran["objective"], progress=True)
        out, err = capsys.readouterr()
        states = [t.state.name for t in study.trials]
        assert states.count("COMPLETE") == 3 and states.count("FAIL") == 2
        assert "failed" not in out and err.count("failed: RuntimeError: injected merge fault") == 2
        failed = [t for t in study.trials if t.state.name == "FAIL"]
        assert all("injected merge fault" in t.user_attrs["error"] for t in failed)

        def broken(weights: Any) -> None:
            raise RuntimeError("always broken")

        backend.set_mixture = broken
        with pytest.raises(StudyError, match=r"3 failed trials in a row.*always broken"):
            run_study(study, cfg, backend, ran["objective"], n_trials=10, progress=False)
    finally:
        backend.set_mixture = real


def test_grid_sampler_runs_only_designs(ran: dict[str, Any], tmp_path: Path) -> None:
    path = small_config(
        Path(ran["cfg"].base_model).parent, tmp_path, name="g", n_trials=50, sampler="grid", designs=["vertices"]
    )
    cfg = load_config(path)
    study = prepare_study(cfg)
    n = run_study(study, cfg, ran["backend"], ran["objective"], progress=False)
    assert n == cfg.n_domains and len(study.trials) == cfg.n_domains


def test_config_stored_by_an_earlier_version_still_attaches(ran: dict[str, Any]) -> None:
    """Fields added to the schema since a study was launched (stored without them) take their defaults
    and do not read as a different setup; a real difference still does."""
    cfg = ran["cfg"]
    study = optuna.load_study(study_name="t", storage=cfg.storage_url())
    stored = dict(study.user_attrs["config"])
    old = json.loads(json.dumps(stored))
    old["merge"] = {k: v for k, v in old["merge"].items() if k in ("exclude_lora", "exclude_full")}
    study.set_user_attr("config", old)
    try:
        prepare_study(cfg)  # no StudyError without --force
        older = json.loads(json.dumps(old))
        older["objective"]["max_new_tokens"] = cfg.objective.max_new_tokens + 1
        study.set_user_attr("config", older)
        with pytest.raises(StudyError, match="max_new_tokens"):
            prepare_study(cfg)
    finally:
        study.set_user_attr("config", stored)


def test_a_launch_killed_while_creating_the_study_is_created_anew(toy_world: Any, tmp_path: Path) -> None:
    """SIGKILL ``launch`` before each of the writes that create a study (its marks, fingerprints, each
    design, its config): ``status`` says the launch stopped and what to run, and launching again creates
    the whole study (before, a kill before the fingerprints blocked every later launch and resume without
    ``--force``, and one amid the designs left a study that never ran the rest)."""
    from dmo_search.cli import main

    path = small_config(toy_world.root, tmp_path, name="cut", n_trials=5, designs=["centre", "vertices"])
    cfg = load_config(path)
    writes = 3 + 4 + 1  # version, expert names, fingerprints; centre + 3 vertices; the config
    for n in range(1, writes + 1):
        res = subprocess.run(
            [sys.executable, "-m", "tests._killpoint", "setup", str(n), "--", "launch", str(path), "--no-run"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
        with pytest.raises(StudyError, match=r"launch stopped while creating it.*dmo-search launch CONFIG"):
            load_study("cut", cfg.storage_url())
        assert main(["launch", str(path), "--no-run", "--quiet"]) == 0
        study = optuna.load_study(study_name="cut", storage=cfg.storage_url())
        assert study.user_attrs["config"] and study.user_attrs["fingerprints"]
        designs = [simplex.params_to_weights(t.system_attrs["fixed_params"], 3) for t in study.trials]
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.WAITING] * 4
        assert designs == [pytest.approx(w) for w in cfg.designs()]
        optuna.delete_study(study_name="cut", storage=cfg.storage_url())
    res = subprocess.run(  # the same kill after the config's write is a complete study
        [sys.executable, "-m", "tests._killpoint", "setup", str(writes + 1), "--", "launch", str(path), "--no-run"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert load_study("cut", cfg.storage_url())[1].n_domains == 3
