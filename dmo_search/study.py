"""Studies: create or load them in the study DB, run the trial loop, resume after a crash.

The path of one trial: the sampler proposes cube parameters, :mod:`dmo_search.simplex` decodes them
into weights, the backend writes ``theta(w)`` into its live model, the objective scores it, and the
value plus per-domain scores and timings go to the study DB (Optuna's RDB storage through
SQLAlchemy). Each trial stores in its user attributes:

``weights`` (K floats summing to 1), ``scores`` ({domain: score}), ``value_se``, ``n_examples``,
``merge_seconds``, ``eval_seconds``, ``worker`` (host:pid) and, for a failed trial, ``error``.

The study's user attributes hold the config (``config``), the objective's fixed subsets
(``objective``), fingerprints of the base and experts (``fingerprints``) and the package version.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import make_url

from dmo_search import simplex
from dmo_search.config import ConfigError, StudyConfig, parse_config
from dmo_search.experts import fingerprint
from dmo_search.noise import study_noise
from dmo_search.sampler import VALUE_SE_ATTR
from dmo_search.sampling import make_sampler

if TYPE_CHECKING:
    from dmo_search.backends import Backend
    from dmo_search.objectives import Objective, ObjectiveResult
    from dmo_search.sampler import SimplexGPSampler

__all__ = [
    "OVER_BUDGET_ATTR",
    "StudyError",
    "TrialRecord",
    "best_record",
    "check_objective",
    "evaluate_mixture",
    "evaluate_mixtures",
    "existing_study",
    "failure_reason",
    "hide_password",
    "load_study",
    "nothing_to_run",
    "open_storage",
    "prepare_study",
    "reap_stale_trials",
    "recommended_weights",
    "run_study",
    "trial_records",
]

_log = logging.getLogger("dmo_search")
# The study attribute that holds the dmo-search version that created it (written first).
_VERSION_ATTR = "dmo_search_version"
#: User attribute of a trial that a worker failed unrun: it was claimed while the DB restarted, and
#: other workers took its place in the study's budget meanwhile.
OVER_BUDGET_ATTR = "over_budget"

HEARTBEAT_INTERVAL = 5
GRACE_PERIOD = 15
# Fields of the config that define what a study measures; changing them needs a new study.
_IDENTITY_FIELDS = ("base_model", "experts", "objective", "merge")


class StudyError(RuntimeError):
    """A study cannot be created, loaded or continued; the message says what to do."""


@dataclass(frozen=True)
class TrialRecord:
    """One trial as ``status --json`` shows it."""

    number: int
    state: str
    weights: list[float] | None
    value: float | None
    value_se: float | None
    scores: dict[str, float] | None
    merge_seconds: float | None
    eval_seconds: float | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path)


def open_storage(
    url: str, *, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD, create: bool = True
) -> RDBStorage:
    """Open the study DB with heartbeats on (a killed worker's trial is failed and retried).

    SQLite files get WAL journaling and a 60 s lock timeout so a reader (status, dashboard) never
    breaks a writer.

    Raises:
        StudyError: the SQLite file does not exist and ``create`` is false.
    """
    engine_kwargs: dict[str, Any] = {}
    db = _sqlite_path(url)
    if db is not None:
        if not db.exists():
            if not create:
                raise StudyError(f"no study DB at {db}; check the study name or pass --storage URL")
            db.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(db) as con:
            con.execute("PRAGMA journal_mode=WAL")
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif "://" in url:
        engine_kwargs["pool_pre_ping"] = True  # after a DB restart, pooled connections are tested, not used dead
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in optuna since 2.8; we rely on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
    except (ImportError, ValueError, sqlalchemy_exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise StudyError(
            f"cannot open the study DB {hide_password(url)!r}: {first}; pass a SQLAlchemy URL such as "
            "sqlite:///studies/NAME/study.db or postgresql+psycopg://USER:PASSWORD@HOST:5432/DB, "
            "with the server running"
        ) from None


def hide_password(url: str) -> str:
    """``url`` with its password masked, for messages (unchanged if it is not a SQLAlchemy URL)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _current_schema(stored: dict[str, Any]) -> dict[str, Any]:
    """A config stored by an earlier version, re-validated with today's schema so fields added since
    (with their defaults) do not read as a different setup; as stored if it no longer validates."""
    try:
        return dict(json.loads(parse_config(stored, source="the stored config").to_json()))
    except ConfigError:
        return stored


def _identity(cfg_json: dict[str, Any]) -> dict[str, Any]:
    return {k: cfg_json.get(k) for k in _IDENTITY_FIELDS}


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: stored {json.dumps(a, default=str)}, given {json.dumps(b, default=str)}"]


def _fingerprints(cfg: StudyConfig) -> dict[str, str]:
    fps = {"base": fingerprint(cfg.base_model)}
    for e in cfg.experts:
        fps[e.name] = fingerprint(e.path)
    return fps


def _sampler_for(cfg: StudyConfig, n_existing: int) -> optuna.samplers.BaseSampler:
    """The config's sampler. Optuna's own samplers keep their RNG in the process, so a process that
    joins a study with trials offsets their seed by the trial count (else a resumed random sampler would
    replay the first proposals); gp-simplex derives everything from (seed, trial number) already."""
    offset = 0 if cfg.search.sampler == "gp-simplex" else n_existing
    return make_sampler(cfg.search.sampler, cfg.n_domains, seed=cfg.search.seed + offset, constraints=cfg.constraints())


def prepare_study(cfg: StudyConfig, *, force: bool = False) -> optuna.Study:
    """Create the study in the DB (enqueuing the designs), or attach to the existing one.

    Attaching checks that the base, experts, objective and merge settings are the ones the study was
    launched with, and that the model files did not change since.

    Raises:
        StudyError: the stored study differs from ``cfg`` (pass ``force=True`` to continue anyway).
    """
    url = cfg.storage_url()
    storage = open_storage(url, heartbeat_interval=cfg.worker.heartbeat_interval, grace_period=cfg.worker.grace_period)
    cfg_json = json.loads(cfg.to_json())
    fingerprints = _fingerprints(cfg)
    study = _stored_study(storage, cfg.study_name)
    if study is not None:
        study.sampler = _sampler_for(cfg, len(study.trials))
        stored = study.user_attrs.get("config")
        if stored is None and _unfinished_setup(study):
            _log.warning(f"study {cfg.study_name!r}: its first launch stopped while creating it; creating it again")
            optuna.delete_study(study_name=cfg.study_name, storage=storage)
            return _create_study(cfg, storage, cfg_json, fingerprints)
        if stored is None:
            raise StudyError(
                f"study {cfg.study_name!r} in {url} was not made by dmo-search; choose another --study-name"
            )
        stored_k = len(stored.get("experts") or [])
        if stored_k != cfg.n_domains:  # no --force: trials encode K-1 parameters
            raise StudyError(
                f"study {cfg.study_name!r} in {url} mixes {stored_k} experts but the config has {cfg.n_domains}; "
                "its trials cannot be continued with another K. Launch a new study with --study-name NAME"
            )
        diffs = _diff(_identity(_current_schema(stored)), _identity(cfg_json))
        fp_diffs = _diff(study.user_attrs.get("fingerprints", {}), fingerprints)
        if (diffs or fp_diffs) and not force:
            lines = "\n  ".join((diffs + [f"model files changed: {d}" for d in fp_diffs])[:12])
            raise StudyError(
                f"study {cfg.study_name!r} in {url} was launched with a different setup:\n  {lines}\n"
                "Launch a new study with --study-name NAME, or pass --force to continue this one anyway."
            )
        study.set_user_attr("config", cfg_json)
        return study
    return _create_study(cfg, storage, cfg_json, fingerprints)


def existing_study(cfg: StudyConfig) -> optuna.Study | None:
    """``cfg``'s study as its DB holds it, unchecked and unchanged, or None (also for one whose creation
    stopped half-way, which :func:`prepare_study` creates anew). Creates no SQLite file."""
    url = cfg.storage_url()
    db = _sqlite_path(url)
    if db is not None and not db.exists():
        return None
    storage = open_storage(url, heartbeat_interval=cfg.worker.heartbeat_interval, grace_period=cfg.worker.grace_period)
    study = _stored_study(storage, cfg.study_name)
    return None if study is None or _unfinished_setup(study) else study


def _stored_study(storage: RDBStorage, study_name: str) -> optuna.Study | None:
    """The study ``study_name`` in ``storage``, or None if there is none."""
    names = {s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    return optuna.load_study(study_name=study_name, storage=storage) if study_name in names else None


def _create_study(
    cfg: StudyConfig, storage: RDBStorage, cfg_json: dict[str, Any], fingerprints: dict[str, str]
) -> optuna.Study:
    """Create the study: its version first (made by dmo-search), the designs, the config last.

    Each write is its own commit. A study without its config is not one that ``resume``, ``worker`` or
    ``status`` open (:func:`load_study` says the launch stopped), and :func:`prepare_study` creates it
    again: a launch killed half-way (Ctrl-C, SIGKILL) leaves no study with some designs or no fingerprints.
    """
    from dmo_search import __version__

    study = optuna.create_study(
        study_name=cfg.study_name, storage=storage, sampler=_sampler_for(cfg, 0), direction="maximize"
    )
    study.set_user_attr(_VERSION_ATTR, __version__)
    study.set_user_attr("expert_names", cfg.expert_names)
    study.set_user_attr("fingerprints", fingerprints)
    for w in cfg.designs():
        study.enqueue_trial(simplex.weights_to_params(w), user_attrs={"design": True})
    study.set_user_attr("config", cfg_json)  # last: the study is complete
    return study


def _unfinished_setup(study: optuna.Study) -> bool:
    """A study whose creation by :func:`_create_study` stopped before its config was stored: it has our
    version mark and only waiting designs, or nothing at all (stopped right after ``create_study``)."""
    attrs = study.user_attrs
    if "config" in attrs:
        return False
    trials = study.get_trials(deepcopy=False)
    if _VERSION_ATTR in attrs:
        return all(t.state == TrialState.WAITING for t in trials)
    return not attrs and not trials


def load_study(study_name: str, storage: str | None = None) -> tuple[optuna.Study, StudyConfig]:
    """Load a dmo-search study and its stored config.

    Args:
        study_name: the study's name.
        storage: the DB URL; default ``sqlite:///studies/<study_name>/study.db``.

    Raises:
        StudyError: no such DB or study, or it was not made by dmo-search.
    """
    from dmo_search.config import default_storage

    url = storage or default_storage(study_name)
    st = open_storage(url, create=False)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(st, include_best_trial=False)]
    if study_name not in names:
        raise StudyError(f"no study {study_name!r} in {url}; studies there: {names or 'none'}")
    study = optuna.load_study(study_name=study_name, storage=st)
    raw = study.user_attrs.get("config")
    if raw is None and _unfinished_setup(study):
        raise StudyError(
            f"study {study_name!r} in {url}: its launch stopped while creating it, before its config was "
            "stored; run `dmo-search launch CONFIG` again (it creates the study anew)"
        )
    if raw is None:
        raise StudyError(f"study {study_name!r} in {url} was not made by dmo-search (it has no stored config)")
    cfg = parse_config({**raw, "storage": url}, source=f"config stored in study {study_name!r}")
    st = open_storage(
        url, heartbeat_interval=cfg.worker.heartbeat_interval, grace_period=cfg.worker.grace_period, create=False
    )
    study = optuna.load_study(study_name=study_name, storage=st)
    study.sampler = _sampler_for(cfg, len(study.trials))
    return study, cfg


def check_objective(study: optuna.Study, objective: Objective) -> None:
    """Record the objective's fixed subsets on first use; afterwards require they are unchanged.

    Raises:
        StudyError: a validation file changed, so later trials would not be comparable.
    """
    rec = objective.record()
    stored = study.user_attrs.get("objective")
    if stored is None:
        study.set_user_attr("objective", rec)
        return
    diffs = _diff(stored, json.loads(json.dumps(rec)))
    if diffs:
        raise StudyError(
            "the validation data differ from the ones this study was scored on:\n  "
            + "\n  ".join(diffs[:5])
            + "\nRestore the original files, or launch a new study (--study-name NAME)."
        )


def evaluate_mixture(
    backend: Backend, objective: Objective, weights: Sequence[float], *, trial: optuna.Trial | None = None
) -> tuple[ObjectiveResult, float, float]:
    """Apply ``weights`` to the backend and score it; returns (result, merge_seconds, eval_seconds).

    With a ``trial`` and an objective with ``fidelities``, scoring goes level by level and may raise
    ``optuna.TrialPruned`` (see :mod:`dmo_search.fidelity`)."""
    t0 = time.perf_counter()
    backend.set_mixture(weights)
    t1 = time.perf_counter()
    fidelities = getattr(objective, "fidelities", None)
    if trial is not None and fidelities:
        from dmo_search.fidelity import evaluate_with_fidelities

        trial.set_user_attr("merge_seconds", t1 - t0)  # a pruned trial records it too
        result = evaluate_with_fidelities(trial, backend, objective, fidelities)
    else:
        result = objective.evaluate(backend)
    return result, t1 - t0, time.perf_counter() - t1


def evaluate_mixtures(
    backend: Backend, objective: Objective, mixtures: Sequence[Sequence[float]]
) -> list[tuple[ObjectiveResult, float, float] | Exception]:
    """Score several mixtures: in one engine batch when the objective has ``evaluate_many`` and the
    backend batches mixtures (vLLM's ``lora`` mode; a failure then fails the whole batch), else one
    after another with :func:`evaluate_mixture` (a failure fails its mixture only). In vLLM's dense mode
    a batched call would apply every mixture once per domain: one after another, each is applied once.

    Returns, per mixture, ``(result, merge_seconds, eval_seconds)`` or the exception that failed it. A
    batch has no separate merge (each adapter is built inside the engine call): it reports merge 0 and
    each mixture's share of the call's seconds as its eval seconds.
    """
    from dmo_search.backends import BatchBackend

    many = getattr(objective, "evaluate_many", None)
    if many is not None and len(mixtures) > 1 and isinstance(backend, BatchBackend) and backend.batches_mixtures:
        t0 = time.perf_counter()
        try:
            results: list[ObjectiveResult] = many(backend, mixtures)
        except Exception as e:
            return [e for _ in mixtures]
        share = (time.perf_counter() - t0) / len(mixtures)
        return [(r, 0.0, share) for r in results]
    out: list[tuple[ObjectiveResult, float, float] | Exception] = []
    for w in mixtures:
        try:
            out.append(evaluate_mixture(backend, objective, w))
        except Exception as e:
            out.append(e)
    return out


def failure_reason(t: FrozenTrial) -> str | None:
    """Why a trial failed, for ``status`` and the dashboard (None unless it failed).

    The worker stores the error of a merge or evaluation that raised; a trial failed unrun for the
    budget carries :data:`OVER_BUDGET_ATTR`; a trial failed with neither was failed for its process:
    interrupted, or reaped once its heartbeat lapsed (killed, or its machine lost).
    """
    if t.state != TrialState.FAIL:
        return None
    if t.user_attrs.get("error"):
        return str(t.user_attrs["error"])
    if t.user_attrs.get(OVER_BUDGET_ATTR):
        return "not run: others filled the budget while the DB restarted"
    return "its process stopped before reporting (interrupted or killed)"


def _record(t: FrozenTrial) -> TrialRecord:
    ua = t.user_attrs
    values = t.values if t.state == TrialState.COMPLETE else None
    return TrialRecord(
        number=t.number,
        state=t.state.name,
        weights=ua.get("weights"),
        value=float(sum(values) / len(values)) if values else None,
        value_se=ua.get(VALUE_SE_ATTR),
        scores=ua.get("scores"),
        merge_seconds=ua.get("merge_seconds"),
        eval_seconds=ua.get("eval_seconds"),
        error=failure_reason(t),
    )


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study, in number order (with several objectives ``value`` is their mean)."""
    return [_record(t) for t in study.get_trials(deepcopy=False)]


def best_record(study: optuna.Study) -> TrialRecord | None:
    """The completed trial with the highest value (None before any completed)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    return _record(max(done, key=lambda t: (t.value if t.value is not None else float("-inf"), -t.number)))


def recommended_weights(study: optuna.Study, cfg: StudyConfig) -> list[float] | None:
    """The mixture the study recommends: for ``gp-simplex`` the argmax of the GP's posterior mean over
    the simplex (robust to noisy scores), else the best observed mixture. None before any completed trial."""
    best = best_record(study)
    if best is None:
        return None
    if cfg.search.sampler != "gp-simplex":
        return best.weights
    return study_gp(study, cfg).recommend(study)


def study_gp(study: optuna.Study, cfg: StudyConfig) -> SimplexGPSampler:
    """The study's ``gp-simplex`` sampler (the one it runs with, else one built from its config): the
    model behind :func:`recommended_weights` and the ranking of promotion candidates."""
    from dmo_search.sampler import SimplexGPSampler

    sampler = study.sampler
    if isinstance(sampler, SimplexGPSampler):
        return sampler
    return SimplexGPSampler(cfg.n_domains, seed=cfg.search.seed, constraints=cfg.constraints())


def _fail_heartbeatless(study: optuna.Study, storage: Any, *, older_than: float) -> None:
    """Fail RUNNING trials that never recorded a heartbeat and started over ``older_than`` s ago.

    Optuna only reaps trials whose heartbeat row is old; a process killed between creating a trial and
    its first heartbeat leaves a trial with no row, which would stay RUNNING forever. A live worker
    records its first heartbeat as the trial starts, so such a trial's process is gone.
    """
    from datetime import datetime, timedelta

    from optuna.storages._rdb import models

    if not isinstance(storage, RDBStorage):
        return
    now = datetime.now()
    old = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None and now - t.datetime_start > timedelta(seconds=older_than)
    ]
    if not old:
        return
    session = storage.scoped_session()
    try:
        ids = [t._trial_id for t in old]
        with_heartbeat = {
            tid
            for (tid,) in session.query(models.TrialHeartbeatModel.trial_id).filter(
                models.TrialHeartbeatModel.trial_id.in_(ids)
            )
        }
    finally:
        session.close()
    callback = storage.get_heartbeat_stale_trial_callback()
    for t in old:
        if t._trial_id in with_heartbeat:
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL) and callback is not None:
                callback(study, storage.get_trial(t._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another process settled it


def reap_stale_trials(study: optuna.Study, *, wait: bool = True, say: Callable[[str], None] = _log.warning) -> int:
    """Fail trials left RUNNING by a process that died, waiting for their heartbeats to expire.

    A trial is failed only once its heartbeat is older than the grace period, so trials of live
    workers are never touched. Returns how many trials were failed.
    """
    storage = getattr(study._storage, "_backend", study._storage)  # optuna wraps RDBStorage in a cache
    grace = getattr(storage, "grace_period", None) or GRACE_PERIOD
    interval = getattr(storage, "heartbeat_interval", None) or HEARTBEAT_INTERVAL

    def running() -> list[FrozenTrial]:
        return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    before = {t.number for t in running()}
    if not before:
        return 0

    def reap() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)

    reap()
    if wait and running():
        say(
            f"trial(s) {sorted(t.number for t in running())} are RUNNING; waiting up to {grace + interval}s "
            "for their heartbeat to expire (a live worker keeps its trials)"
        )
        deadline = time.monotonic() + grace + interval + 1
        while running() and time.monotonic() < deadline:
            time.sleep(1.0)
            reap()
        _fail_heartbeatless(study, storage, older_than=grace + interval)
    failed = before - {t.number for t in running()}
    if failed:
        say(f"marked trial(s) {sorted(failed)} FAILED (their process stopped); their mixtures are retried")
    return len(failed)


class _Progress:
    """The progress bar on stderr: completed trials, the best so far, failed trials' reasons, and the
    noise check's advice once, when the study first becomes noise-limited (:mod:`dmo_search.noise`)."""

    def __init__(self, study: optuna.Study, total: int, enabled: bool, subset_size: int | None = None) -> None:
        self.bar: Any = None
        self._subset_size = subset_size
        self._noise_told = False
        if enabled:
            from tqdm.auto import tqdm

            done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            self.bar = tqdm(total=total, initial=min(done, total), desc="trials", unit="trial", dynamic_ncols=True)
            self._postfix(study)

    def _postfix(self, study: optuna.Study) -> None:
        best = best_record(study)
        if self.bar is not None and best is not None and best.weights is not None:
            w = ",".join(f"{x:.2f}" for x in best.weights)
            self.bar.set_postfix_str(f"best {best.value:.4f} @ ({w}) #{best.number}")

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.bar is None:
            return
        if trial.state == TrialState.COMPLETE:
            self.bar.update(1)
            self._postfix(study)
            self._tell_noise(study)
        elif trial.state == TrialState.FAIL:
            self.bar.write(f"trial {trial.number} failed: {failure_reason(trial)}", file=sys.stderr)

    def _tell_noise(self, study: optuna.Study) -> None:
        if self._noise_told:
            return
        check = study_noise(trial_records(study), self._subset_size)
        if check is not None and check.limited:
            self.bar.write(check.describe(), file=sys.stderr)
            self._noise_told = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def run_study(
    study: optuna.Study,
    cfg: StudyConfig,
    backend: Backend,
    objective: Objective,
    *,
    n_trials: int | None = None,
    progress: bool = True,
    say: Callable[[str], None] = _log.info,
) -> int:
    """Run trials until the study holds ``n_trials`` (default ``cfg.search.n_trials``) completed ones.

    The budget is the study's, not this process's: a resumed or second worker only adds what is
    missing. A raising candidate becomes a FAIL trial with its ``error`` recorded; after
    ``cfg.worker.max_consecutive_failures`` failures in a row the run stops with :class:`StudyError`.
    With the ``grid`` sampler only the enqueued designs run. Returns the number of completed trials.
    """
    from dmo_search.worker import run_trials  # the trial loop shared with `dmo-search worker`

    target = n_trials if n_trials is not None else cfg.search.n_trials
    done = nothing_to_run(study, cfg, target)
    if done is not None:
        say(done)
        return _n_complete(study)
    return run_trials(study, cfg, backend, objective, n_trials=target, progress=progress, say=say).study_complete


def nothing_to_run(study: optuna.Study, cfg: StudyConfig, n_trials: int | None = None) -> str | None:
    """Why the study needs no trial run, or None: it holds ``n_trials`` (default
    ``cfg.search.n_trials``) completed trials, or its ``grid`` sampler has no design left. Checked
    before a backend is loaded (an engine start takes minutes on a GPU)."""
    from dmo_search.config import default_storage

    target = n_trials if n_trials is not None else cfg.search.n_trials
    complete = _n_complete(study)
    if complete >= target:
        url = cfg.storage_url()
        where = "" if url == default_storage(study.study_name) else f" --storage {hide_password(url)}"
        return (
            f"study {study.study_name!r} already has {complete} completed trials (target {target}); "
            f"`dmo-search resume {study.study_name}{where} --n-trials N` runs more"
        )
    if cfg.search.sampler == "grid" and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return "sampler 'grid' runs only the designs, and none is left to run"
    return None


def config_from_study(study: optuna.Study) -> StudyConfig:
    """The config a study was launched with."""
    raw = study.user_attrs.get("config")
    if raw is None:
        raise ConfigError(f"study {study.study_name!r} has no stored dmo-search config")
    return parse_config(raw, source=f"config stored in study {study.study_name!r}")
