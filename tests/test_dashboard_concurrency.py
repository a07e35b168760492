"""The dashboard reads a study while a worker writes it: neither breaks (SQLite and PostgreSQL).

A writer process (``tests/_dashboard_writer.py``) runs trials through dmo-search's own storage
(a short pause between trials, so the writing lasts longer than optuna-dashboard's 2 s trial cache
even on a fast machine) while the dashboard, in this process, is polled on optuna-dashboard's API,
the mixture page and the study list. Every poll must answer 200, the trial count it sees must never go
down and must grow while the writer runs, every trial of the writer must complete (a lock error would
fail one and the writer), and once the cache expires the dashboard shows every trial.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from dmo_search.dashboard.server import DashboardServer, make_dashboard_server
from dmo_search.dashboard.storage import open_read_storage
from dmo_search.study import open_storage

pytestmark = pytest.mark.slow  # a writer process and PostgreSQL: about 40 s

ROOT = Path(__file__).resolve().parents[1]
N_TRIALS = 40
PAUSE_S = 0.1  # between the writer's trials: at least 4 s of writing
CACHE_TTL_S = 2  # optuna-dashboard re-reads a study's trials (under 100 of them) at most every 2 s


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.status, r.read()


@pytest.fixture
def served() -> Iterator[list[DashboardServer]]:
    """Servers started by a test, shut down after it."""
    started: list[DashboardServer] = []
    yield started
    for srv in started:
        srv.shutdown()


def _watch_while_writing(url: str, served: list[DashboardServer], name: str) -> dict[str, Any]:
    # The study exists before the dashboard opens the DB (one seed trial), as with `launch` then `dashboard`.
    seed = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    seed.set_user_attr("expert_names", ["a", "b", "c"])
    seed.enqueue_trial({"u_0": 0.5, "u_1": 0.5})
    srv = make_dashboard_server(url, port=0)
    served.append(srv)
    threading.Thread(target=srv.serve, daemon=True).start()
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests._dashboard_writer", url, name, str(N_TRIALS), str(PAUSE_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    seen: list[int] = []

    def poll() -> None:
        status, body = _get(f"{srv.url}/api/studies")
        assert status == 200
        summary = next(s for s in json.loads(body)["study_summaries"] if s["study_name"] == name)
        status, body = _get(f"{srv.url}/api/studies/{summary['study_id']}")
        assert status == 200
        seen.append(len(json.loads(body)["trials"]))
        status, body = _get(f"{srv.url}/dmo/{name}")
        assert status == 200 and name.encode() in body

    try:
        while writer.poll() is None:
            poll()
        during = len(seen)
        deadline = time.monotonic() + 5 * CACHE_TTL_S
        poll()  # after the writer (and the cache's expiry): the dashboard shows every trial
        while seen[-1] < N_TRIALS and time.monotonic() < deadline:
            time.sleep(0.2)
            poll()
    finally:
        out, err = writer.communicate(timeout=300)
    return {"rc": writer.returncode, "out": out, "err": err, "seen": seen, "polls": during}


def _check(res: dict[str, Any], url: str, name: str) -> None:
    assert res["rc"] == 0, res["err"][-3000:]
    assert f"done {N_TRIALS}" in res["out"]  # the seed trial plus the writer's
    assert res["seen"] == sorted(res["seen"]), res["seen"]  # the dashboard never saw trials vanish
    assert res["seen"][-1] == N_TRIALS
    during = res["seen"][: res["polls"]]
    assert res["polls"] >= 3 and len(set(during)) >= 2, res["seen"]  # the dashboard showed the writing progress
    study = optuna.load_study(study_name=name, storage=url)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_sqlite_study_written_while_dashboard_polls(tmp_path: Path, served: list[DashboardServer]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    res = _watch_while_writing(url, served, "live")
    _check(res, url, "live")
    print(f"\n[sqlite: {res['polls']} dashboard polls while {N_TRIALS} trials were written]")


def test_postgresql_study_written_while_dashboard_polls(pg_cluster: Any, served: list[DashboardServer]) -> None:
    url = pg_cluster.create_db("dash_live")
    res = _watch_while_writing(url, served, "live")
    _check(res, url, "live")
    storage = open_read_storage(url)  # the dashboard's storage: PostgreSQL itself refuses its writes
    try:
        with pytest.raises(optuna.exceptions.StorageInternalError) as info:
            storage.set_study_user_attr(storage.get_study_id_from_name("live"), "x", 1)
        assert "read-only transaction" in str(info.value.__cause__)
    finally:
        storage.engine.dispose()
    print(f"\n[postgresql: {res['polls']} dashboard polls while {N_TRIALS} trials were written]")
