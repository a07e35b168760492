"""Run the ``dmo-search`` CLI and SIGKILL itself at a chosen point: the test harness of the kill tests.

``python -m tests._killpoint PHASE N -- ARGS...`` runs ``dmo-search ARGS...`` and kills the process
with SIGKILL (no cleanup, no atexit, like the OOM killer) at the N-th occurrence of PHASE:

* ``merge``: inside the in-place merge, before the N-th parameter is written;
* ``scoring``: at the N-th generation batch of the objective;
* ``db_write``: inside the N-th SQLAlchemy commit once a trial has started, after its statements
  were flushed to the DB and before the COMMIT (an open transaction holding the trial's writes);
* ``setup``: before the N-th write of a study's attributes or enqueued trials (its creation);
* ``save``: before ``save_pretrained`` writes the N-th weights shard (its ``config.json`` is written already).

Before dying it appends ``PHASE N`` to ``$DMO_KILL_LOG`` so a test knows the point was reached.
With ``DMO_KILL_HANG=1`` it stops there instead (sleeps; its heartbeat thread keeps the trial alive)
so that the test can SIGKILL it at a moment of its choosing, mid-trial.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


def _die(phase: str, n: int) -> None:
    log = os.environ.get("DMO_KILL_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{phase} {n}\n")
    if os.environ.get("DMO_KILL_HANG") == "1":
        while True:
            time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL)


def install(phase: str, n: int) -> None:
    """Patch the point ``phase`` so that its ``n``-th occurrence kills this process."""
    calls = {"n": 0}

    def hit() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    if phase == "merge":
        from dmo_search.merge import InPlaceMerger

        orig_acc = InPlaceMerger._acc

        def acc(self: Any, entry: Any) -> Any:
            if hit():
                _die(phase, n)
            return orig_acc(self, entry)

        InPlaceMerger._acc = acc  # type: ignore[method-assign]
    elif phase == "scoring":
        from dmo_search.backends.hf import HFBackend

        orig_gen = HFBackend.generate

        def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
            if hit():
                _die(phase, n)
            return orig_gen(self, *args, **kwargs)

        HFBackend.generate = generate  # type: ignore[method-assign]
    elif phase == "db_write":
        from sqlalchemy.orm import Session

        from dmo_search import worker

        armed = {"on": False}  # count the commits of trials only, not those of opening the study
        orig_enter = worker._Heartbeat.__enter__

        def enter(self: Any) -> Any:
            armed["on"] = True
            return orig_enter(self)

        worker._Heartbeat.__enter__ = enter  # type: ignore[method-assign]
        orig_commit = Session.commit

        def commit(self: Session) -> None:
            if armed["on"] and hit():
                self.flush()
                _die(phase, n)
            orig_commit(self)

        Session.commit = commit  # type: ignore[method-assign]
    elif phase == "setup":
        import optuna

        for name in ("set_user_attr", "enqueue_trial"):
            orig = getattr(optuna.Study, name)

            def write(self: Any, *args: Any, _orig: Any = orig, **kwargs: Any) -> Any:
                if hit():
                    _die(phase, n)
                return _orig(self, *args, **kwargs)

            setattr(optuna.Study, name, write)
    elif phase == "save":
        from transformers import modeling_utils

        orig_save = modeling_utils.safe_save_file  # what save_pretrained writes each weights shard with

        def save_file(*args: Any, **kwargs: Any) -> Any:
            if hit():
                _die(phase, n)
            return orig_save(*args, **kwargs)

        modeling_utils.safe_save_file = save_file
    else:
        raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
    phase, count, sep, *rest = sys.argv[1:]
    assert sep == "--", "usage: python -m tests._killpoint PHASE N -- ARGS..."
    install(phase, int(count))
    from dmo_search.cli import main

    sys.exit(main(rest))
