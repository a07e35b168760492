"""A study writer for the dashboard concurrency tests: ``python -m tests._dashboard_writer URL NAME N [PAUSE]``.

Runs N trials of a synthetic 3-domain mixture objective through dmo-search's own storage
(:func:`dmo_search.study.open_storage`: WAL on SQLite, heartbeats), recording the same user
attributes as a real study (weights, per-domain scores, value_se, merge/eval seconds), as fast as the
DB allows, or with PAUSE seconds between trials (so the writing outlasts the dashboard's 2 s trial
cache on a fast machine). Prints ``done N`` and exits 0 when every trial completed.
"""

from __future__ import annotations

import sys
import time

import optuna

from dmo_search import simplex
from dmo_search.study import open_storage


def main(url: str, name: str, n: int, pause: float = 0.0) -> int:
    """Write ``n`` trials to study ``name`` in ``url``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        load_if_exists=True,
    )
    study.set_user_attr("expert_names", ["a", "b", "c"])

    def objective(trial: optuna.Trial) -> float:
        for p in simplex.param_names(3):
            trial.suggest_float(p, 0.0, 1.0)
        w = simplex.params_to_weights(trial.params, 3)
        scores = {"a": 1 - (w[0] - 0.5) ** 2, "b": 1 - (w[1] - 0.3) ** 2, "c": 1 - (w[2] - 0.2) ** 2}
        trial.set_user_attr("weights", w)
        trial.set_user_attr("scores", scores)
        trial.set_user_attr("value_se", 0.01)
        trial.set_user_attr("merge_seconds", 0.001)
        trial.set_user_attr("eval_seconds", 0.002)
        time.sleep(pause)
        return sum(scores.values()) / 3

    study.optimize(objective, n_trials=n)  # no catch: a lock error fails the trial and the test sees it
    states = [t.state for t in study.get_trials(deepcopy=False)]
    bad = [s.name for s in states if s != optuna.trial.TrialState.COMPLETE]
    if bad:
        print(f"not complete: {bad}", file=sys.stderr)
        return 1
    print(f"done {len(states)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0))
