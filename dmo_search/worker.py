"""Workers: any number of processes, on any machines, running trials of one study until its budget.

A worker joins a study by name, reads the config stored in the study DB, checks that the base and
expert files still match the fingerprints taken at launch, loads its backend, and loops
claim -> merge -> score -> tell until the study (not the worker) holds its budget of COMPLETE trials.

Exactly the budget completes, whatever the number of workers:

* a trial is *claimed* (``study.ask``) under a study-wide lock (a PostgreSQL advisory lock, or a
  file lock next to a SQLite DB) and only while ``COMPLETE + RUNNING < budget``; a worker that finds
  the budget covered by running trials waits for them instead of starting one more; a DB restart
  releases the advisory lock, so a worker that lost it while claiming counts again under the lock and
  fails its new trial unrun (user attribute ``over_budget``) if other workers took the place meanwhile;
* a running trial sends a heartbeat every ``worker.heartbeat_interval`` seconds; a trial whose
  heartbeat is older than ``worker.grace_period`` belongs to a dead worker: any worker fails it and
  Optuna's stale-trial callback enqueues its mixture again (a new trial number; numbers never repeat);
* every storage call retries with exponential backoff while the DB is unreachable (a PostgreSQL
  restart, a network blip), for up to ``DB_RETRY_SECONDS``.

With ``worker.batch_size`` q > 1 a worker claims up to q trials at once (never more than the budget
leaves), their new mixtures proposed together (gp-simplex's ``propose_batch``: one GP fit, each mixture
pending for the next) and enqueued, then scores them together
(:func:`~dmo_search.study.evaluate_mixtures`: one engine call per domain on a vLLM ``lora`` engine) and
tells them one by one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from dmo_search import simplex
from dmo_search.sampler import VALUE_SE_ATTR
from dmo_search.study import (
    OVER_BUDGET_ATTR,
    StudyError,
    _diff,
    _fail_heartbeatless,
    _fingerprints,
    _Progress,
    _sqlite_path,
    check_objective,
    evaluate_mixture,
    evaluate_mixtures,
    hide_password,
    load_study,
    nothing_to_run,
)

if TYPE_CHECKING:
    from dmo_search.backends import Backend
    from dmo_search.config import StudyConfig
    from dmo_search.objectives import Objective, ObjectiveResult

__all__ = [
    "DB_RETRY_SECONDS",
    "RetryingStorage",
    "WorkerReport",
    "is_connection_error",
    "join_study",
    "retry_db",
    "run_trials",
    "run_worker",
    "store_budget",
    "with_retries",
]

_log = logging.getLogger("dmo_search")
_T = TypeVar("_T")
# Server-side TCP keepalives of the claim lock's session (_advisory_lock_session): silence for
# _KEEPALIVE_IDLE_S, then _KEEPALIVE_COUNT unanswered probes _KEEPALIVE_INTERVAL_S apart end it.
_KEEPALIVE_IDLE_S = 20
_KEEPALIVE_INTERVAL_S = 5
_KEEPALIVE_COUNT = 4

#: How long a storage call keeps retrying while the DB is unreachable (``DMO_DB_RETRY_SECONDS``).
DB_RETRY_SECONDS = float(os.environ.get("DMO_DB_RETRY_SECONDS", "300"))
_BACKOFF_FIRST, _BACKOFF_MAX = 0.25, 8.0


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) says the DB connection was lost or refused, not that a
    statement was wrong: SQLAlchemy's ``OperationalError``/``InterfaceError`` or an invalidated
    connection, possibly wrapped in Optuna's ``StorageInternalError``."""
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        e = e.__cause__ or e.__context__
    return False


def retry_db(
    fn: Callable[..., _T],
    *args: Any,
    what: str = "the study DB",
    seconds: float | None = None,
    say: Callable[[str], None] = _log.warning,
    **kwargs: Any,
) -> _T:
    """Call ``fn(*args, **kwargs)``, retrying with exponential backoff (0.25 s doubling to 8 s) while
    it fails with a connection error, for up to ``seconds`` (default :data:`DB_RETRY_SECONDS`).

    Raises:
        StudyError: the DB stayed unreachable; the message names the URL problem and the fix.
    """
    limit = DB_RETRY_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + limit
    delay = _BACKOFF_FIRST
    told = False
    while True:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            if not is_connection_error(e):
                raise
            if time.monotonic() + delay > deadline:
                raise StudyError(
                    f"{what} stayed unreachable for {limit:.0f}s ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    "check that the database server is up and the --storage URL is right, then run the command again"
                ) from e
            if not told:
                say(f"lost the connection to {what}; retrying with backoff for up to {limit:.0f}s")
                told = True
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)
        else:
            if told:
                say(f"reconnected to {what}")
            return result


def _retrying(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return retry_db(getattr(self._inner, name), *args, what=self._what, **kwargs)

    method.__name__ = name
    return method


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage that retries every call of ``inner`` while the DB is unreachable.

    A retried write whose first attempt did commit is harmless: attribute and parameter writes are
    idempotent, a repeated final ``tell`` is recognised by :func:`run_trials`, and a trial created
    twice leaves one RUNNING trial with no heartbeat that the reaper fails.
    """

    def __init__(self, inner: Any, *, what: str = "the study DB") -> None:
        self._inner = inner
        self._what = what
        # reap_stale_trials looks through a cache wrapper via ``_backend``; expose the RDBStorage
        self._backend = getattr(inner, "_backend", inner)

    def __getattr__(self, name: str) -> Any:
        # anything not wrapped (e.g. RDBStorage.engine, grace_period) comes from the inner storage
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


for _name in [
    *sorted(BaseStorage.__abstractmethods__ | BaseHeartbeat.__abstractmethods__),
    "get_all_trials",
    "get_n_trials",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_failed_trial_callback",
    "remove_session",
]:
    setattr(RetryingStorage, _name, _retrying(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def with_retries(study: optuna.Study) -> optuna.Study:
    """The same study, seen through a :class:`RetryingStorage` (the sampler is kept)."""
    if isinstance(study._storage, RetryingStorage):
        return study
    url = getattr(getattr(study._storage, "_backend", study._storage), "url", "the study DB")
    storage = RetryingStorage(study._storage, what=hide_password(url))  # type: ignore[abstract]
    return optuna.Study(study_name=study.study_name, storage=storage, sampler=study.sampler)


@contextlib.contextmanager
def _claim_lock(study: optuna.Study) -> Iterator[Callable[[], bool]]:
    """A study-wide lock around claiming a trial: a PostgreSQL advisory lock (released by the server
    if this process dies), a ``flock`` on ``<db>.lock`` for SQLite, nothing for other databases.

    Yields a function that says whether the lock is still held: a PostgreSQL restart (or a cut
    connection) releases an advisory lock with its session, and another worker may then have taken it.
    """
    rdb: Any = getattr(study._storage, "_backend", study._storage)
    url = str(getattr(rdb, "url", ""))
    db = _sqlite_path(url)
    if db is not None:
        with open(f"{db}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield lambda: True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if not url.startswith("postgresql"):
        yield lambda: True
        return
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(f"dmo-search:{study.study_name}".encode()).digest()[:8], "big", signed=True)

    def still_held() -> bool:
        try:
            held = conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid())"
                )
            ).scalar()
        except Exception as e:
            if is_connection_error(e):
                return False
            raise
        return bool(held)

    conn = retry_db(_advisory_lock_session, rdb.engine, key, what=hide_password(url))
    try:
        yield still_held
    finally:
        with contextlib.suppress(Exception):  # a dropped connection has released the lock already
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        with contextlib.suppress(Exception):
            conn.close()


def _advisory_lock_session(engine: Any, key: int) -> Any:
    """A new connection holding the PostgreSQL advisory lock ``key``, with server-side TCP keepalives.

    A worker whose host is lost while it holds the lock (power, network) keeps its session, and so the
    lock that every other worker waits on, until the server's TCP gives up on it: about two hours and
    ten minutes with Linux's defaults. The keepalives set here end it after about 40 s of silence (20 s,
    then 4 unanswered probes 5 s apart; they only apply over TCP, a Unix-socket session reads them as 0).
    """
    from sqlalchemy import text

    conn = engine.connect()  # a fresh session per attempt: a dropped one cannot be reused
    try:
        conn.execute(
            text(
                "SELECT set_config('tcp_keepalives_idle', :idle, false),"
                " set_config('tcp_keepalives_interval', :interval, false),"
                " set_config('tcp_keepalives_count', :count, false)"
            ),
            {"idle": str(_KEEPALIVE_IDLE_S), "interval": str(_KEEPALIVE_INTERVAL_S), "count": str(_KEEPALIVE_COUNT)},
        )
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
    except Exception:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    return conn


class _Heartbeat:
    """Record a trial's heartbeat now, then every ``interval`` seconds from a thread, until closed.
    A failed beat (DB unreachable) is logged and the next one is tried on time."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage._inner.record_heartbeat(self.trial_id)
            except Exception as e:  # keep beating; the main loop reports lasting DB trouble
                _log.debug(f"heartbeat of trial {self.trial_id} failed: {type(e).__name__}: {e}")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _counts(study: optuna.Study) -> tuple[int, int, int]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))
    n = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
    return n[TrialState.COMPLETE], n[TrialState.RUNNING], n[TrialState.WAITING]


def _reap(study: optuna.Study, cfg: StudyConfig) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    storage = getattr(study._storage, "_backend", study._storage)
    _fail_heartbeatless(study, storage, older_than=cfg.worker.grace_period + cfg.worker.heartbeat_interval)


def _claim(
    study: optuna.Study, cfg: StudyConfig, target: int, say: Callable[[str], None], q: int = 1
) -> list[optuna.Trial]:
    """Ask for up to ``q`` trials while the budget is not covered yet; [] once it is complete.

    While running trials cover the rest of the budget, wait for them (and fail dead ones). Several new
    mixtures are proposed as one batch (:func:`_enqueue_batch`)."""
    waited = False
    while True:
        _reap(study, cfg)
        trials: list[optuna.Trial] = []
        with _claim_lock(study) as still_held:
            complete, running, waiting = _counts(study)
            if complete >= target:
                return []
            if cfg.search.sampler == "grid":  # only the designs run
                if waiting == 0 and running == 0:
                    return []
                n = min(q, waiting, target - complete - running)
            else:
                n = min(q, target - complete - running)
            if n > 0:
                _enqueue_batch(study, n - waiting)
                with warnings.catch_warnings():  # optuna warns that heartbeats are meant for optimize()
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trials = [study.ask() for _ in range(n)]
                if still_held():
                    return trials
        if trials:
            kept = [t for t in trials if _within_budget(study, t, target, say)]
            if kept:
                return kept
            continue
        if not waited:
            say(f"{complete} trial(s) complete and {running} running cover the budget of {target}; waiting for them")
            waited = True
        time.sleep(min(1.0, cfg.worker.heartbeat_interval))


def _enqueue_batch(study: optuna.Study, n: int) -> None:
    """Enqueue ``n`` >= 2 new mixtures from the sampler's ``propose_batch`` (gp-simplex: one GP fit, each
    candidate pending for the next, running and waiting trials pending too), so the next asks run them.
    Other samplers propose at each ask, as for a single trial."""
    propose = getattr(study.sampler, "propose_batch", None)
    if n < 2 or propose is None:
        return
    for w in propose(study, n):
        study.enqueue_trial(simplex.weights_to_params(w), user_attrs={"weights": w})


def _within_budget(study: optuna.Study, trial: optuna.Trial, target: int, say: Callable[[str], None]) -> bool:
    """For a trial claimed while the claim lock was lost (the DB restarted mid-claim): keep it if the
    budget still has room for it, else fail it unrun (another worker claimed the same place)."""
    with _claim_lock(study):
        complete, running, _ = _counts(study)  # ``trial`` is one of the running trials
        if complete + running <= target:
            return True
        trial.set_user_attr(OVER_BUDGET_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
    say(
        f"trial {trial.number} was claimed while the DB restarted and the budget of {target} was taken "
        "meanwhile by other workers; it was failed without running"
    )
    return False


@dataclass(frozen=True)
class WorkerReport:
    """What one call of :func:`run_trials` did."""

    completed: int  # trials this process completed
    failed: int  # trials this process failed
    study_complete: int  # COMPLETE trials in the study at the end


def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None) -> bool:
    """Finish the trial; False if another worker failed it meanwhile (its heartbeat had expired)."""
    try:
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
        return True
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        stored = study._storage.get_trial(trial._trial_id)
        if stored.state == state and (value is None or stored.value == value):
            return True  # a retried tell whose first attempt did commit
        if stored.state == TrialState.FAIL:
            return False
        raise


def _suggest(trial: optuna.Trial, k: int, worker: str) -> list[float]:
    """The trial's mixture (from its sampler, or fixed when enqueued), recorded on the trial."""
    for name in simplex.param_names(k):
        trial.suggest_float(name, 0.0, 1.0)
    weights = simplex.params_to_weights(trial.params, k)
    trial.set_user_attr("weights", weights)
    trial.set_user_attr("worker", worker)
    return weights


def _scored(result: ObjectiveResult, merge_s: float, eval_s: float) -> tuple[dict[str, Any], float]:
    """The user attrs to store for a scored mixture, and its value.

    Raises:
        StudyError: the value is not finite.
    """
    if not math.isfinite(result.value):
        raise StudyError(
            f"the objective returned {result.value} (scores {result.scores}); check the experts for NaN/inf "
            "weights and the validation data"
        )
    attrs = {
        "scores": result.scores,
        VALUE_SE_ATTR: result.value_se,  # gp-simplex reads it
        "n_examples": result.n_examples,
        "merge_seconds": merge_s,
        "eval_seconds": eval_s,
    }
    return attrs, result.value


def _failed(trial: optuna.Trial, e: Exception) -> tuple[dict[str, Any], None]:
    _log.debug(f"trial {trial.number} failed", exc_info=e)
    return {"error": f"{type(e).__name__}: {e}"[:2000]}, None


def _score(
    trial: optuna.Trial, k: int, worker: str, backend: Backend, objective: Objective
) -> tuple[dict[str, Any], float | None]:
    """Suggest the trial's mixture, merge and score it; (user attrs to store, value or None if it failed)."""
    weights = _suggest(trial, k, worker)
    try:
        return _scored(*evaluate_mixture(backend, objective, weights, trial=trial))
    except (optuna.exceptions.UpdateFinishedTrialError, optuna.TrialPruned):
        raise  # TrialPruned: objective.fidelities pruned it (dmo_search/fidelity.py)
    except Exception as e:
        return _failed(trial, e)


class _Outcome(NamedTuple):
    """A claimed trial's scoring: the user attrs to store, its value, the state to tell, and the
    scoring attempt it belongs to (the trials of a batch failed by one shared engine call share one)."""

    attrs: dict[str, Any]
    value: float | None
    state: TrialState
    attempt: int

    @classmethod
    def of(cls, scored: tuple[dict[str, Any], float | None], attempt: int) -> _Outcome:
        """COMPLETE with a value, FAIL without."""
        attrs, value = scored
        return cls(attrs, value, TrialState.FAIL if value is None else TrialState.COMPLETE, attempt)


def _score_batch(
    trials: list[optuna.Trial], k: int, worker: str, backend: Backend, objective: Objective
) -> list[_Outcome]:
    """:func:`_score` for several trials at once (:func:`~dmo_search.study.evaluate_mixtures`: one
    engine batch where the objective and backend allow it); each trial records the batch's size."""
    mixtures = [_suggest(t, k, worker) for t in trials]
    out: list[_Outcome] = []
    first_with: dict[int, int] = {}  # id of an exception shared by several mixtures -> its attempt
    for i, (trial, got) in enumerate(zip(trials, evaluate_mixtures(backend, objective, mixtures), strict=True)):
        if isinstance(got, Exception):
            out.append(_Outcome.of(_failed(trial, got), first_with.setdefault(id(got), i)))
            continue
        try:
            attrs, value = _scored(*got)
        except Exception as e:  # a value that is not finite
            out.append(_Outcome.of(_failed(trial, e), i))
            continue
        out.append(_Outcome.of(({**attrs, "batch_size": len(trials)}, value), i))
    return out


def _score_claimed(
    trials: list[optuna.Trial], k: int, worker: str, backend: Backend, objective: Objective
) -> list[_Outcome]:
    """Score claimed trials, one alone (``objective.fidelities`` may prune it) or several as a batch."""
    if len(trials) > 1:
        return _score_batch(trials, k, worker, backend, objective)
    try:
        return [_Outcome.of(_score(trials[0], k, worker, backend, objective), 0)]
    except optuna.TrialPruned:
        return [_Outcome({}, None, TrialState.PRUNED, 0)]


def _store(
    study: optuna.Study, trial: optuna.Trial, attrs: dict[str, Any], value: float | None, state: TrialState
) -> bool:
    """Store the trial's attrs and tell it; False if another worker failed it meanwhile."""
    try:
        for key, v in attrs.items():
            trial.set_user_attr(key, v)
        return _tell(study, trial, state, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def run_trials(
    study: optuna.Study,
    cfg: StudyConfig,
    backend: Backend,
    objective: Objective,
    *,
    n_trials: int | None = None,
    progress: bool = False,
    say: Callable[[str], None] = _log.info,
) -> WorkerReport:
    """Claim, merge, score and tell trials until the study holds ``n_trials`` COMPLETE trials.

    Args:
        study: the study (its storage is wrapped in a :class:`RetryingStorage` here).
        cfg: the study's config (``search``, ``worker`` settings).
        backend: a loaded backend with the config's experts.
        objective: the objective, with the fixed subsets the study records.
        n_trials: the study's budget of COMPLETE trials (default ``cfg.search.n_trials``).
        progress: draw a progress bar on stderr.
        say: where progress messages go.

    Raises:
        StudyError: ``cfg.worker.max_consecutive_failures`` trials failed in a row (a batch failed by
            one shared engine call counting once), or the DB stayed unreachable.
    """
    target = n_trials if n_trials is not None else cfg.search.n_trials
    k = cfg.n_domains
    if backend.expert_names != cfg.expert_names:
        raise StudyError(f"backend experts {backend.expert_names} differ from the config's {cfg.expert_names}")
    study = with_retries(study)
    check_objective(study, objective)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    done = failed = streak = 0
    last_error = ""
    bar = _Progress(study, target, progress, cfg.objective.subset_size)
    q = cfg.worker.batch_size
    try:
        while trials := _claim(study, cfg, target, say, q):
            with contextlib.ExitStack() as beats:
                for trial in trials:
                    beats.enter_context(_Heartbeat(study._storage, trial._trial_id, cfg.worker.heartbeat_interval))
                try:
                    scored = _score_claimed(trials, k, worker, backend, objective)
                except optuna.exceptions.UpdateFinishedTrialError:
                    scored = []  # another worker failed a trial while it was suggested
                told = [
                    _store(study, trial, o.attrs, o.value, o.state) for trial, o in zip(trials, scored, strict=False)
                ]
            last_error = next(
                (str(o.attrs["error"]) for o in reversed(scored) if o.state == TrialState.FAIL), last_error
            )
            scored += [_Outcome({}, None, TrialState.FAIL, i) for i in range(len(scored), len(trials))]
            told += [False] * (len(trials) - len(told))
            counted: set[int] = set()  # attempts of this claim already in the streak
            for trial, o, ok in zip(trials, scored, told, strict=True):
                if not ok:
                    say(f"trial {trial.number} was failed by another worker (its heartbeat expired); it is retried")
                    continue
                bar(study, study._storage.get_trial(trial._trial_id))
                if o.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    done, streak = done + (o.state == TrialState.COMPLETE), 0
                    continue
                failed += 1
                if o.attempt not in counted:  # a batch whose shared call failed counts once
                    counted.add(o.attempt)
                    streak += 1
                if streak >= cfg.worker.max_consecutive_failures:
                    once = " (a batch failed by one shared engine call counts once)" if q > 1 else ""
                    raise StudyError(f"stopped after {streak} failed trials in a row{once}; last error: {last_error}")
    finally:
        bar.close()
    complete, _, _ = _counts(study)
    return WorkerReport(completed=done, failed=failed, study_complete=complete)


def join_study(
    study_name: str,
    storage: str | None,
    *,
    n_trials: int | None = None,
    backend: str | None = None,
    force: bool = False,
    batch_size: int | None = None,
) -> tuple[optuna.Study, StudyConfig]:
    """Load a study and its stored config, and check the model files against the stored fingerprints.

    Args:
        study_name: the study's name.
        storage: its DB URL (default: the SQLite file under ``studies/<study_name>/``).
        n_trials: a new budget of COMPLETE trials for the study (in the returned config;
            :func:`store_budget` stores it for every worker).
        backend: override ``backend.name`` for this process only.
        force: continue even if the base or expert files changed since launch.
        batch_size: override ``worker.batch_size`` for this process only.

    Raises:
        StudyError: no such study, or its files changed and ``force`` is false.
    """
    from dmo_search.config import apply_overrides

    study, cfg = load_study(study_name, storage)
    stored = study.user_attrs.get("fingerprints", {})
    missing = [str(p) for p in [cfg.base_model, *(e.path for e in cfg.experts)] if not Path(p).exists()]
    if missing:
        raise StudyError(
            f"study {study_name!r} needs model files missing on this machine: {missing[:4]}; "
            "make them available at the same paths (shared storage) before starting a worker"
        )
    fp_diffs = _diff(stored, _fingerprints(cfg))
    if fp_diffs and not force:
        lines = "\n  ".join(f"model files changed: {d}" for d in fp_diffs[:8])
        raise StudyError(
            f"study {study_name!r} was launched with other model files:\n  {lines}\n"
            "Restore the files, launch a new study (--study-name NAME), or pass --force to continue anyway."
        )
    if n_trials is not None or backend is not None or batch_size is not None:
        cfg = apply_overrides(cfg, n_trials=n_trials, backend=backend, batch_size=batch_size)
    return study, cfg


def store_budget(study: optuna.Study, n_trials: int | None) -> None:
    """Store ``n_trials`` (if given) as the study's budget of COMPLETE trials, so that every worker
    follows it. Callers store it once the backend has loaded: a run refused for a bad model file leaves
    the study DB as it was."""
    if n_trials is None:
        return
    raw = dict(study.user_attrs["config"])
    raw["search"] = {**raw["search"], "n_trials": n_trials}
    study.set_user_attr("config", json.loads(json.dumps(raw)))


def run_worker(
    study_name: str,
    storage: str | None,
    *,
    n_trials: int | None = None,
    backend: str | None = None,
    force: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
    say: Callable[[str], None] = _log.info,
) -> dict[str, Any]:
    """Join ``study_name`` (see :func:`join_study`), load the backend and run trials until the study's
    budget is complete; returns what this worker did, as a JSON-ready dict."""
    from dmo_search.backends import make_backend
    from dmo_search.objectives import make_objective

    study, cfg = join_study(study_name, storage, n_trials=n_trials, backend=backend, force=force, batch_size=batch_size)
    say(f"worker {socket.gethostname()}:{os.getpid()} joined study {study_name!r} (budget {cfg.search.n_trials})")
    objective = make_objective(cfg.objective)
    done = nothing_to_run(study, cfg)
    if done is not None:  # no engine start (minutes on a GPU) for a study with nothing left to run
        store_budget(study, n_trials)
        say(done)
        rep = WorkerReport(completed=0, failed=0, study_complete=_counts(study)[0])
    else:
        say(f"loading base and {cfg.n_domains} experts on backend {cfg.backend.name!r} ...")
        engine = make_backend(cfg)
        try:
            store_budget(study, n_trials)
            rep = run_trials(study, cfg, engine, objective, progress=progress, say=say)
        finally:
            engine.close()
    return {
        "study_name": study_name,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "completed_by_this_worker": rep.completed,
        "failed_by_this_worker": rep.failed,
        "study_complete": rep.study_complete,
        "n_trials_target": cfg.search.n_trials,
    }
