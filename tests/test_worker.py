"""Several workers on one study against a real PostgreSQL: SIGKILLed workers, a DB restart, and
`launch` killed at chosen points (merge, scoring, mid-commit) then resumed. Nothing completed is
lost, trial numbers never repeat, no trial stays RUNNING and exactly the budget completes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dmo_search.cli import main
from tests._db import trial_rows, trial_workers
from tests._pg import PgCluster
from tests._study_helpers import small_config

pytestmark = pytest.mark.slow

EXE = [sys.executable, "-m", "dmo_search.cli"]
FAST_WORKER = {"heartbeat_interval": 1, "grace_period": 3, "max_consecutive_failures": 3}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "DMO_DB_RETRY_SECONDS": "120"}


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``dmo-search ARGV``: stderr to ``log``, stdout to ``log`` with suffix ``.out``."""
    with log.open("w") as err, log.with_suffix(".out").open("w") as out:
        return subprocess.Popen([*EXE, *argv], stdout=out, stderr=err, env=ENV)


def _wait_for(cond: Callable[[], bool], procs: list[subprocess.Popen[bytes]], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if all(p.poll() is not None for p in procs):
            pytest.fail(f"every process exited before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _finish(procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 300) -> None:
    try:
        for p, log in zip(procs, logs, strict=True):
            rc = p.wait(timeout)
            assert rc == 0, log.read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _assert_consistent(rows: list[tuple[int, str, float | None]], budget: int) -> None:
    numbers = [n for n, _, _ in rows]
    assert len(numbers) == len(set(numbers)), rows
    assert sum(s == "COMPLETE" for _, s, _ in rows) == budget, rows
    assert not any(s == "RUNNING" for _, s, _ in rows), rows


def _complete(rows: list[tuple[int, str, float | None]]) -> dict[int, float | None]:
    return {n: v for n, s, v in rows if s == "COMPLETE"}


def _pg_study(toy_world: Any, pg: PgCluster, tmp: Path, name: str, n_trials: int) -> tuple[Path, str]:
    url = pg.create_db(name)
    cfg = small_config(toy_world.root, tmp, name=name, n_trials=n_trials, subset=8, storage=url, worker=FAST_WORKER)
    assert main(["launch", str(cfg), "--no-run", "--quiet"]) == 0  # the study and its config, no trial run
    return cfg, url


@pytest.mark.parametrize("batch", [1, 3])
def test_three_workers_one_killed(toy_world: Any, pg_cluster: PgCluster, tmp_path: Path, batch: int) -> None:
    """The victim starts first and stops inside the scoring of its first trial (heartbeat still beating);
    the two others join, and the victim is SIGKILLed while they run: deterministic on any machine speed.
    With ``--batch-size 3`` the victim dies holding a whole batch of 3 RUNNING trials."""
    budget = 6
    name = f"three_b{batch}"
    _, url = _pg_study(toy_world, pg_cluster, tmp_path, name, budget)
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    kill_log = tmp_path / "kill.log"
    worker_args = ["worker", name, "--storage", url, "--quiet", "--json", "--batch-size", str(batch)]
    with logs[0].open("w") as err, logs[0].with_suffix(".out").open("w") as out:
        victim = subprocess.Popen(
            [sys.executable, "-m", "tests._killpoint", "scoring", "1", "--", *worker_args],
            stdout=out,
            stderr=err,
            env={**ENV, "DMO_KILL_HANG": "1", "DMO_KILL_LOG": str(kill_log)},
        )
    _wait_for(lambda: kill_log.is_file(), [victim], "the victim to reach the scoring of its first trial")
    procs = [victim, *(_spawn(worker_args, log) for log in logs[1:])]

    def survivors_working() -> bool:
        return any(s == "COMPLETE" for s, _ in trial_workers(url, name).values())

    _wait_for(survivors_working, procs[1:], "the other workers to complete a trial")
    killed = [n for n, (s, w) in trial_workers(url, name).items() if s == "RUNNING" and w.endswith(f":{victim.pid}")]
    assert len(killed) == batch, f"the victim holds {killed} RUNNING, not a batch of {batch}"
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    _finish(procs[1:], logs[1:])

    rows = trial_rows(url, name)
    _assert_consistent(rows, budget)
    states = dict((n, s) for n, s, _ in rows)
    assert all(states[n] == "FAIL" for n in killed)  # the killed trial was failed by a survivor
    reports = [json.loads(log.with_suffix(".out").read_text()) for log in logs[1:]]
    done_by_survivors = sum(r["completed_by_this_worker"] for r in reports)
    done_by_victim = sum(
        1 for n, (s, w) in trial_workers(url, name).items() if s == "COMPLETE" and w.endswith(f":{victim.pid}")
    )
    assert done_by_survivors + done_by_victim == budget
    assert all(r["study_complete"] == budget for r in reports)


def test_claim_whose_lock_a_restart_cut_is_given_back(toy_world: Any, pg_cluster: PgCluster, tmp_path: Path) -> None:
    """A DB restart cuts worker A's claim lock while A claims the last place of the budget, and worker B
    takes the lock and that place meanwhile: A fails its trial unrun, so exactly the budget completes.
    (The race that a restart in test_postgres_restart_mid_study hits only now and then, made certain.)"""
    import sqlalchemy

    from dmo_search.study import failure_reason
    from dmo_search.worker import _claim, join_study

    _, url = _pg_study(toy_world, pg_cluster, tmp_path, "lost_lock", 1)
    study_a, cfg = join_study("lost_lock", url)
    study_b, _ = join_study("lost_lock", url)
    said: list[str] = []
    ask_a = study_a.ask

    def ask_while_the_lock_is_cut() -> Any:
        admin = sqlalchemy.create_engine(url)
        with admin.connect() as c:  # end A's lock session, as a server restart does
            c.execute(sqlalchemy.text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"))
        admin.dispose()
        [trial_b] = _claim(study_b, cfg, 1, said.append)
        study_b.tell(trial_b, 0.5)
        return ask_a()

    study_a.ask = ask_while_the_lock_is_cut  # type: ignore[method-assign]
    assert _claim(study_a, cfg, 1, said.append) == []  # the budget is complete: nothing left to claim

    trials = study_b.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    assert trials[1].user_attrs.get("over_budget") is True
    assert (failure_reason(trials[1]) or "").startswith("not run: others filled the budget")
    assert any("failed without running" in m for m in said), said


def test_the_claim_lock_session_has_server_side_keepalives(pg_cluster: PgCluster) -> None:
    """The session that holds the claim lock asks the server for TCP keepalives of about 40 s, so a worker
    whose host is lost while it holds the lock does not hold up every other worker for the ~2 h of the
    server's defaults (a lost host cannot be made here; the settings are read back from the real server,
    over TCP, on the session that holds the lock)."""
    import sqlalchemy

    from dmo_search.worker import _advisory_lock_session

    engine = sqlalchemy.create_engine(pg_cluster.create_db("keepalive"))
    conn = _advisory_lock_session(engine, 42)
    try:
        shown = {
            name: conn.execute(sqlalchemy.text(f"SHOW {name}")).scalar()
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        assert shown == {"tcp_keepalives_idle": "20", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "4"}
        with engine.connect() as other:
            default = int(other.execute(sqlalchemy.text("SHOW tcp_keepalives_idle")).scalar())
            assert default > 20  # the server's own: the OS default, 7200 s on Linux
            held = other.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(42)")).scalar()
            assert held is False, "the session does not hold the lock"
    finally:
        conn.close()
        engine.dispose()


def test_postgres_restart_mid_study(toy_world: Any, pg_cluster: PgCluster, tmp_path: Path) -> None:
    budget = 6
    _, url = _pg_study(toy_world, pg_cluster, tmp_path, "restart", budget)
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    procs = [_spawn(["worker", "restart", "--storage", url, "--quiet", "--json"], log) for log in logs]
    _wait_for(lambda: len(_complete(trial_rows(url, "restart"))) >= 2, procs, "2 completed trials")
    before = _complete(trial_rows(url, "restart"))
    pg_cluster.restart()
    _finish(procs, logs)

    rows = trial_rows(url, "restart")
    _assert_consistent(rows, budget)
    after = _complete(rows)
    assert {n: after.get(n) for n in before} == before  # nothing completed was lost or changed
    retried = sum("lost the connection" in log.read_text() for log in logs)
    print(f"\n[restart: {len(before)} complete before, {retried}/2 workers retried a DB call]")


KILL_ROUNDS = 4  # one per phase, then a seeded random phase


def test_launch_killed_at_chosen_points_then_resume(toy_world: Any, tmp_path: Path) -> None:
    """SIGKILL `launch` inside the merge, inside scoring and inside a DB commit, then `resume`."""
    rng = random.Random(20261123)
    db = tmp_path / "kl.db"
    url = f"sqlite:///{db}"
    cfg = small_config(toy_world.root, tmp_path, name="kl", n_trials=1, subset=8, worker=FAST_WORKER)
    kill_log = tmp_path / "kills.log"
    phases = ["merge", "scoring", "db_write"]
    phases += [rng.choice(phases) for _ in range(KILL_ROUNDS - len(phases))]
    limits = {"merge": 40, "scoring": 3, "db_write": 10}  # within one trial
    outcomes: list[dict[str, Any]] = []
    complete_so_far: dict[int, float | None] = {}
    for r, phase in enumerate(phases):
        budget = r + 1  # each launch runs one trial
        n = rng.randint(1, limits[phase])
        log = tmp_path / f"launch{r}.log"
        with log.open("w") as err:
            res = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests._killpoint",
                    phase,
                    str(n),
                    "--",
                    "launch",
                    str(cfg),
                    "--quiet",
                    "--n-trials",
                    str(budget),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**ENV, "DMO_KILL_LOG": str(kill_log)},
                timeout=300,
            )
        reached = res.returncode == -signal.SIGKILL
        assert reached or res.returncode == 0, log.read_text()[-3000:]
        killed_rows = trial_rows(url, "kl")
        numbers = [k for k, _, _ in killed_rows]
        assert len(numbers) == len(set(numbers))
        assert sum(s == "RUNNING" for _, s, _ in killed_rows) <= 1
        killed_complete = _complete(killed_rows)
        assert {k: killed_complete.get(k) for k in complete_so_far} == complete_so_far  # nothing lost
        if r == len(phases) - 1:  # last round: `resume` and a `worker` share 3 more trials on SQLite
            budget += 3
        cmds = [["resume", "kl"]] + ([["worker", "kl"]] if r == len(phases) - 1 else [])
        logs = [tmp_path / f"resume{r}-{i}.log" for i in range(len(cmds))]
        procs = [
            _spawn([*c, "--storage", url, "--quiet", "--json", "--n-trials", str(budget)], log)
            for c, log in zip(cmds, logs, strict=True)
        ]
        _finish(procs, logs)
        rows = trial_rows(url, "kl")
        _assert_consistent(rows, budget)
        after = _complete(rows)
        assert {k: after.get(k) for k in killed_complete} == killed_complete
        complete_so_far = after
        outcomes.append(
            {
                "phase": phase,
                "n": n,
                "killed": reached,
                "complete_at_kill": len(killed_complete),
                "running_at_kill": sum(s == "RUNNING" for _, s, _ in killed_rows),
                "after_resume": dict(sorted((s, sum(x == s for _, x, _ in rows)) for _, s, _ in rows)),
            }
        )
    print("\n[kill rounds] " + json.dumps(outcomes))
    assert all(o["killed"] for o in outcomes)  # the kill points were reached, not skipped


def test_retry_gives_up_with_a_clear_message() -> None:
    """A DB that stays unreachable: the backoff ends in a StudyError naming the fix."""
    import sqlalchemy as sa

    from dmo_search.study import StudyError
    from dmo_search.worker import is_connection_error, retry_db
    from tests._pg import _free_port

    engine = sa.create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{_free_port()}/x")
    messages: list[str] = []
    with pytest.raises(StudyError, match=r"stayed unreachable.*server is up.*--storage URL") as info:
        retry_db(engine.connect, seconds=1.0, say=messages.append)
    assert is_connection_error(info.value.__cause__)  # type: ignore[arg-type]
    assert messages and "retrying with backoff" in messages[0]
    with pytest.raises(ZeroDivisionError):  # anything else is not retried
        retry_db(lambda: 1 / 0, seconds=60)
