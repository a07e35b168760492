"""Trials left RUNNING by dead processes are failed (and retried), including ones with no heartbeat yet."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from dmo_search.study import open_storage, reap_stale_trials, trial_records


def test_trial_without_heartbeat_is_reaped_and_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.create_study(storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    study.ask()  # RUNNING, and (unlike optimize) ask() records no heartbeat: like a kill before the first one
    done = study.ask()
    study.tell(done, 1.0)
    messages: list[str] = []
    n = reap_stale_trials(study, say=messages.append)
    assert n == 1
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states[:2] == [TrialState.FAIL, TrialState.COMPLETE]
    assert states[2:] == [TrialState.WAITING]  # its mixture is queued again
    assert any("FAILED" in m for m in messages)
    reason = trial_records(study)[0].error  # what `status` and the dashboard show for it
    assert reason is not None and "stopped before reporting" in reason


def test_live_heartbeats_are_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    assert reap_stale_trials(study, wait=False) == 0
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING
