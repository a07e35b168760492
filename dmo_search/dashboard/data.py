"""What the mixture views read from a study: its experts, trials and recommended mixture.

Read-only: loading never writes to the study DB (the dashboard's storage refuses writes anyway).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage

from dmo_search.study import TrialRecord, trial_records

__all__ = ["StudyData", "UnknownStudyError", "list_study_names", "load_study_data", "with_recommendation"]


class UnknownStudyError(ValueError):
    """No study of that name in the DB; the message lists the studies there."""


@dataclass(frozen=True)
class StudyData:
    """A study as the mixture views see it.

    Attributes:
        study_name: the study's name.
        expert_names: the K mixture components, in weight order (``w0..`` when the study has no names).
        direction: ``maximize`` or ``minimize`` (the first objective's).
        trials: every trial in number order (multi-objective values are averaged into ``value``).
        recommended: the recommended mixture (GP posterior-mean argmax for ``gp-simplex`` studies,
            else the best observed one), or None before any completed trial.
        sampler: the stored config's sampler, if the study was made by dmo-search.
        n_trials_target: the stored config's trial budget, if any.
        subset_size: the stored config's ``objective.subset_size``, if any (for the noise check's advice).
    """

    study_name: str
    expert_names: list[str]
    direction: str
    trials: list[TrialRecord]
    recommended: list[float] | None
    sampler: str | None = None
    n_trials_target: int | None = None
    subset_size: int | None = None

    @property
    def best(self) -> TrialRecord | None:
        """The best completed trial with weights, by value in the study's direction."""
        done = [t for t in self.trials if t.value is not None and t.weights is not None and math.isfinite(t.value)]
        if not done:
            return None
        sign = 1.0 if self.direction == "maximize" else -1.0
        return max(done, key=lambda t: (sign * (t.value or 0.0), -t.number))

    def counts(self) -> dict[str, int]:
        """Trials per state."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out


def list_study_names(storage: BaseStorage) -> list[str]:
    """Names of every study in the storage, sorted."""
    return sorted(s.study_name for s in storage.get_all_studies())


def _expert_names(attrs: dict[str, Any], trials: list[TrialRecord]) -> list[str]:
    names = attrs.get("expert_names")
    if not names:
        cfg = attrs.get("config") or {}
        names = [e.get("name") for e in cfg.get("experts", []) if isinstance(e, dict)]
    if names and all(isinstance(n, str) for n in names):
        return list(names)
    k = max((len(t.weights) for t in trials if t.weights), default=0)
    return [f"w{i}" for i in range(k)]


def with_recommendation(storage: BaseStorage, data: StudyData) -> StudyData:
    """``data`` with its recommended mixture: the argmax of the GP posterior mean for ``gp-simplex``
    studies (fits the GP: about a second), else the best observed mixture."""
    best = data.best
    if best is None:
        return dataclasses.replace(data, recommended=None)
    if data.sampler != "gp-simplex":
        return dataclasses.replace(data, recommended=best.weights)
    from dmo_search.config import ConfigError
    from dmo_search.sampler import SimplexGPSampler
    from dmo_search.study import config_from_study, recommended_weights

    study = optuna.load_study(study_name=data.study_name, storage=storage)
    if len(study.directions) != 1:
        return dataclasses.replace(data, recommended=best.weights)
    try:  # what `dmo-search best` recommends: the study's seed and constraints
        rec = recommended_weights(study, config_from_study(study))
    except ConfigError:  # a stored config this version cannot read: the GP without its constraints
        seed = int(((study.user_attrs.get("config") or {}).get("search") or {}).get("seed", 0))
        rec = SimplexGPSampler(len(data.expert_names), seed=seed).recommend(study)
    return dataclasses.replace(data, recommended=rec)


def load_study_data(storage: BaseStorage, study_name: str, *, recommend: bool = True) -> StudyData:
    """Read one study for the mixture views.

    Args:
        storage: an Optuna storage (the dashboard's read-only one).
        study_name: the study's name.
        recommend: add the recommended mixture (:func:`with_recommendation`). Default True; False
            leaves ``recommended`` None.

    Raises:
        UnknownStudyError: no study of that name in the storage.
    """
    names = list_study_names(storage)
    if study_name not in names:
        raise UnknownStudyError(f"no study {study_name!r} in this DB; studies there: {names or 'none'}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    attrs = study.user_attrs
    cfg = attrs.get("config") or {}
    trials = trial_records(study)
    search = cfg.get("search") or {}
    data = StudyData(
        study_name=study_name,
        expert_names=_expert_names(attrs, trials),
        direction=study.directions[0].name.lower(),
        trials=trials,
        recommended=None,
        sampler=search.get("sampler"),
        n_trials_target=search.get("n_trials"),
        subset_size=(cfg.get("objective") or {}).get("subset_size"),
    )
    return with_recommendation(storage, data) if recommend else data
