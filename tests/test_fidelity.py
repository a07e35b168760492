"""Multi-fidelity pruning: the pruner's rule, nested subsets, and a toy-world study whose hopeless
candidates end PRUNED, reach the GP at their small-subset value, and do not count towards the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from dmo_search.config import ConfigError, load_config
from dmo_search.fidelity import BestBoundPruner
from dmo_search.objectives.data import nested_subset
from dmo_search.study import prepare_study, run_study, trial_records
from tests._study_helpers import small_config


def _complete(value: float, at10: float) -> optuna.trial.FrozenTrial:
    return create_trial(value=value, intermediate_values={10: at10}, state=TrialState.COMPLETE)


def _running(study: optuna.Study, value: float, se: float) -> optuna.trial.FrozenTrial:
    t = study.ask()
    t.set_user_attr("fidelity", {"10": {"value": value, "value_se": se}})
    t.report(value, step=10)
    return study._storage.get_trial(t._trial_id)


def test_pruner_compares_with_the_best_at_the_same_fidelity() -> None:
    study = optuna.create_study(direction="maximize")
    pruner = BestBoundPruner(z=2.0, n_startup_trials=2)
    study.add_trial(_complete(0.8, at10=0.7))
    assert not pruner.prune(study, _running(study, 0.1, 0.01))  # fewer COMPLETE trials than n_startup
    study.add_trial(_complete(0.5, at10=0.6))
    assert pruner.prune(study, _running(study, 0.5, 0.05))  # 0.5 + 2 * 0.05 < 0.7 (best at step 10)
    assert not pruner.prune(study, _running(study, 0.5, 0.15))  # within 2 SE of 0.7
    assert not pruner.prune(study, _running(study, 0.75, 0.0))  # beats the best's 0.7 on these examples
    study.add_trial(create_trial(value=0.9, state=TrialState.COMPLETE))  # no value at step 10: its final one
    assert pruner.prune(study, _running(study, 0.75, 0.05))
    with pytest.raises(ValueError, match="z >= 0"):
        BestBoundPruner(z=-1)


def test_nested_subsets_are_nested_and_seeded() -> None:
    full = list(range(0, 400, 4))
    small, mid = (nested_subset(full, n, seed=0, domain="a") for n in (10, 40))
    assert len(small) == 10 and len(mid) == 40 and set(small) <= set(mid) <= set(full)
    assert small == nested_subset(full, 10, seed=0, domain="a") != nested_subset(full, 10, seed=0, domain="b")
    assert small != full[:10]
    assert nested_subset(full, None, seed=0, domain="a") == full == nested_subset(full, 500, seed=0, domain="a")


def test_fidelities_config_errors(toy_world: Any, tmp_path: Path) -> None:
    for bad, msg in (([20], "increasing"), ([20, 10], "increasing"), ([5, 30], "end at objective.subset_size")):
        path = small_config(toy_world.root, tmp_path, subset=20)
        text = path.read_text().replace("subset_size: 20", f"subset_size: 20\n  fidelities: {bad}")
        path.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load_config(path)


@pytest.mark.slow
def test_study_prunes_hopeless_candidates(toy_world: Any, tmp_path: Path) -> None:
    from dmo_search.backends.hf import HFBackend
    from dmo_search.objectives import make_objective
    from dmo_search.sampler import SimplexGPSampler

    # Good designs first (they set the bar), then the shift and sort vertices, which lose the add domain.
    # The study scores the add domain only, the one the base hardly knows and only the add expert solves:
    # add-heavy mixtures score 0.75-1.0 on it and the other vertices 0.0-0.45 on every toy world built so
    # far (seeds 0-3; SE at 10 examples ~0.15), while on the mean of the three domains the gaps depend on how
    # much of shift and sort the base learned.
    designs = [[0.9, 0.05, 0.05], [0.85, 0.1, 0.05], [0.8, 0.1, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    path = small_config(toy_world.root, tmp_path, subset=40, n_trials=4, sampler="gp-simplex", designs=designs)
    text = path.read_text().replace("subset_size: 40", "subset_size: 40\n  fidelities: [10, 40]")
    path.write_text(text.replace("aggregation: mean", "aggregation: {add: 1.0, shift: 0.0, sort: 0.0}"))
    cfg = load_config(path)
    study = prepare_study(cfg)
    backend = HFBackend(cfg)
    objective = make_objective(cfg.objective)
    n = run_study(study, cfg, backend, objective, progress=False)
    assert n == 4  # the budget counts COMPLETE trials only
    recs = {r.number: r for r in trial_records(study)}
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert [t.user_attrs["weights"] for t in pruned[:2]] == designs[3:], [(r.state, r.weights) for r in recs.values()]
    for t in pruned:
        assert t.user_attrs["pruned_at"] == 10 and t.user_attrs["n_examples"] == {d: 10 for d in cfg.objective.domains}
        assert recs[t.number].value is None
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert set(t.intermediate_values) == {10} and t.user_attrs["n_examples"] == {"add": 40, "shift": 40, "sort": 40}
    # The GP sees PRUNED trials at their small-subset value (unbiased for the full-subset score, noisier),
    # so it learns where the pruned mixtures are bad instead of proposing them again.
    hist = SimplexGPSampler(3)._history(study, None)
    assert len(hist.X) == len(study.trials) == len(hist.seen)
    for t in pruned:
        row = [i for i, x in enumerate(hist.X) if list(x) == t.user_attrs["weights"]]
        assert row and float(hist.Y[row[0]][0]) == t.intermediate_values[10]
