"""Warm starts: an earlier study's trials inform a new one (another model, or other domains).

Domains are matched by name. A source mixture keeps the weights of the domains both studies share,
gives 0 to the new study's other domains and is renormalised; a mixture that put less than half of
its weight on shared domains says little about the new study and is left out. The mapped trials are
used twice:

* as a **prior**: the new study's GP takes the source's posterior mean (standardised) as its prior
  mean, scaled and shifted by two hyper-parameters fitted with the new data (so a source on another
  model's score scale still helps, and a misleading one is scaled down). The source GP lives on the
  shared domains only: a new mixture ``w`` is read as its shared part ``w_S / m`` (``m = sum w_S``)
  and the prior there is shrunk by ``m`` towards the source's average, so the prior says nothing at a
  new domain's vertex, where the source has no data (see :class:`dmo_search.sampler.SimplexGPSampler`).
  ``prior=False`` (``launch --warm-start-designs-only``) keeps only the designs;
* as **designs**: the source's best mixtures (a domain the source lacks at its uniform share ``1/K``),
  projected onto the new study's constraints, are the new study's first trials, in place of the
  space-filling design.

Everything is recorded in the study's user attribute :data:`WARM_START_ATTR` (the source's name and
storage, the domain mapping, the mapped points), so any process that opens the study uses the same
prior and the study says where its prior came from.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from dmo_search import simplex

if TYPE_CHECKING:
    import optuna

    from dmo_search.config import StudyConfig
    from dmo_search.constraints import MixtureConstraints

__all__ = [
    "MIN_SHARED_MASS",
    "WARM_START_ATTR",
    "SourcePrior",
    "WarmStart",
    "WarmStartError",
    "apply_warm_start",
    "enqueue_warm_start",
    "load_warm_start",
    "map_mixture",
    "mark_designs_enqueued",
    "stored_prior",
    "warm_start_from_study",
    "warm_start_from_trials",
]

WARM_START_ATTR = "warm_start"
"""Study user attribute recording a warm start (see the module docstring)."""
# In the stored record: its designs are in the study (set after they are enqueued).
_ENQUEUED = "designs_enqueued"

MIN_SHARED_MASS = 0.5
"""A source mixture is used only if at least this share of its weight is on shared domains."""

# Best source mixtures enqueued as designs, and the least distance between two of them.
_N_DESIGNS = 3
_MIN_DESIGN_DISTANCE = 0.05


class WarmStartError(ValueError):
    """A warm start cannot be built; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """Source trials mapped onto a new study's domains.

    Attributes:
        names: the new study's domains, in weight order.
        X: the mapped mixtures (``n x K`` rows on the simplex, not projected: the prior covers the
            whole simplex).
        Y: their values, oriented so that larger is better.
        designs: the best mapped mixtures (with each new domain at its uniform share ``1/K`` and the
            shared ones scaled down to make room), projected onto the new study's constraints, to run
            first.
        source: where the trials came from (study name, storage, domains, trial counts).
        mapping: ``shared`` domains, ``new`` ones (no source data: weight 0 in every mapped point)
            and ``dropped`` source domains.
        use_prior: whether the GP takes the source's posterior mean as its prior mean (else the
            source only gives the first designs).
    """

    names: tuple[str, ...]
    X: tuple[tuple[float, ...], ...]
    Y: tuple[float, ...]
    designs: tuple[tuple[float, ...], ...]
    source: dict[str, Any]
    mapping: dict[str, list[str]]
    use_prior: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored in the study (:data:`WARM_START_ATTR`)."""
        return {
            "source": self.source,
            "mapping": self.mapping,
            "names": list(self.names),
            "X": [list(x) for x in self.X],
            "Y": list(self.Y),
            "designs": [list(d) for d in self.designs],
            "prior": self.use_prior,
        }


def map_mixture(
    weights: Sequence[float], source_names: Sequence[str], names: Sequence[str]
) -> tuple[list[float], float]:
    """Map a source mixture onto ``names`` by domain name.

    Returns:
        the mapped mixture (shared weights renormalised, 0 for domains the source lacks) and the share
        of the source's weight that was on shared domains (0 when none: the mixture is then all zeros).
    """
    index = {n: i for i, n in enumerate(source_names)}
    raw = [float(weights[index[n]]) if n in index else 0.0 for n in names]
    mass = math.fsum(raw)
    if mass <= 1e-12:
        return [0.0] * len(names), 0.0
    return [x / mass for x in raw], mass


def warm_start_from_trials(
    source_names: Sequence[str],
    weights: Sequence[Sequence[float]],
    values: Sequence[float],
    names: Sequence[str],
    *,
    maximize: bool = True,
    constraints: MixtureConstraints | None = None,
    n_designs: int = _N_DESIGNS,
    source: dict[str, Any] | None = None,
    prior: bool = True,
) -> WarmStart:
    """Map ``(weights, values)`` observed over ``source_names`` onto a study over ``names``.

    Args:
        source_names: the source's domains, in its weight order.
        weights: the source's mixtures.
        values: their values (NaN and infinite ones are skipped).
        names: the new study's domains.
        maximize: whether larger source values are better. Defaults to True.
        constraints: the new study's constraints (the designs are projected onto them).
        n_designs: how many best mixtures to run first. Defaults to 3.
        source: provenance to record (study name, storage, ...).
        prior: use the source's posterior mean as the GP's prior mean (the designs are used either
            way). Defaults to True.

    Raises:
        WarmStartError: no shared domain, or no source mixture with enough weight on shared domains.
    """
    in_source, in_study = set(source_names), set(names)
    shared = [n for n in names if n in in_source]
    if not shared:
        raise WarmStartError(
            f"the source study's domains {list(source_names)} share none with this study's {list(names)}; "
            "warm starts match domains by expert name"
        )
    if len(weights) != len(values):
        raise ValueError(f"{len(weights)} mixtures but {len(values)} values")
    sign = 1.0 if maximize else -1.0
    xs: list[list[float]] = []
    ys: list[float] = []
    for w, v in zip(weights, values, strict=True):
        if not math.isfinite(float(v)):
            continue
        mapped, mass = map_mixture(w, source_names, names)
        if mass >= MIN_SHARED_MASS - 1e-12:
            xs.append(mapped)
            ys.append(sign * float(v))
    if not xs:
        raise WarmStartError(
            f"no completed source trial puts at least {MIN_SHARED_MASS:.0%} of its weight on the shared domains "
            f"{shared}; the source says nothing about this study's mixtures"
        )
    new = [j for j, n in enumerate(names) if n not in in_source]
    designs: list[list[float]] = []
    for i in np.argsort(-np.asarray(ys), kind="stable"):
        if len(designs) >= n_designs:
            break
        d = _with_new_domains(xs[i], new)
        d = constraints.project(d) if constraints is not None else simplex.check_weights(d)
        if all(simplex.simplex_distance(d, o) >= _MIN_DESIGN_DISTANCE for o in designs):
            designs.append(d)
    mapping = {
        "shared": shared,
        "new": [names[j] for j in new],
        "dropped": [n for n in source_names if n not in in_study],
    }
    info = {**(source or {}), "domains": list(source_names), "n_trials_used": len(xs), "n_trials_seen": len(values)}
    return WarmStart(
        names=tuple(names),
        X=tuple(tuple(x) for x in xs),
        Y=tuple(ys),
        designs=tuple(tuple(d) for d in designs),
        source=info,
        mapping=mapping,
        use_prior=prior,
    )


def _with_new_domains(w: Sequence[float], new: Sequence[int]) -> list[float]:
    """A mapped source mixture with each new domain given its uniform share ``1/K`` (the source says
    nothing about them; a design on the face where they are 0 would make the search start blind to them)."""
    k = len(w)
    share = len(new) / k
    out = [(1.0 - share) * x for x in w]
    for j in new:
        out[j] = 1.0 / k
    return out


def warm_start_from_study(
    study: optuna.Study,
    names: Sequence[str],
    *,
    constraints: MixtureConstraints | None = None,
    n_designs: int = _N_DESIGNS,
    storage_label: str | None = None,
    prior: bool = True,
) -> WarmStart:
    """Map the completed trials of a dmo-search (or :func:`dmo_search.optimize_simplex`) study.

    The source's domain names are its ``expert_names`` user attribute; a study without one (made by
    ``optimize_simplex``) must have as many domains as ``names`` and is taken in the same order.

    Raises:
        WarmStartError: the study is multi-objective, has no completed trial with weights, or shares no domain.
    """
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    if len(study.directions) != 1:
        raise WarmStartError(f"study {study.study_name!r} is multi-objective; warm starts need one value per trial")
    source_names = study.user_attrs.get("expert_names")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    k = len(source_names) if source_names else None
    weights: list[list[float]] = []
    values: list[float] = []
    for t in done:
        w = t.user_attrs.get("weights")
        if w is None and k is not None:
            try:
                w = simplex.params_to_weights(t.params, k)
            except ValueError:
                continue
        if w is not None and t.value is not None:
            weights.append(list(w))
            values.append(float(t.value))
    if not weights:
        raise WarmStartError(f"study {study.study_name!r} has no completed trial with weights to start from")
    if source_names is None:
        if len(weights[0]) != len(names):
            raise WarmStartError(
                f"study {study.study_name!r} records no domain names and mixes {len(weights[0])} domains, not "
                f"{len(names)}; warm starts match domains by name"
            )
        source_names = list(names)
    source = {"study": study.study_name}
    if storage_label is not None:
        source["storage"] = storage_label
    return warm_start_from_trials(
        source_names,
        weights,
        values,
        names,
        maximize=study.direction == StudyDirection.MAXIMIZE,
        constraints=constraints,
        n_designs=n_designs,
        source=source,
        prior=prior,
    )


def apply_warm_start(study: optuna.Study, warm: WarmStart) -> list[list[float]]:
    """Record ``warm`` in ``study`` and return its designs (for the caller to enqueue first, with
    ``skip_if_exists``, and then to call :func:`mark_designs_enqueued`).

    A study keeps the warm start it was launched with: the same source again returns nothing, or the
    recorded designs again while they are not marked enqueued (a launch stopped between the two);
    another source is refused (its trials were proposed under the first prior).

    Raises:
        WarmStartError: the study already records a different warm start, or its directions differ.
    """
    if len(study.directions) != 1:
        raise WarmStartError("warm starts need a single-objective study")
    record = warm.to_dict()
    stored = study.user_attrs.get(WARM_START_ATTR)
    if stored is not None and stored.get("source", {}).get("study") != record["source"].get("study"):
        raise WarmStartError(
            f"study {study.study_name!r} was warm-started from {stored['source'].get('study')!r}; it cannot take "
            f"another prior ({record['source'].get('study')!r}). Launch a new study with --study-name NAME"
        )
    if stored is None:
        study.set_user_attr(WARM_START_ATTR, {**record, _ENQUEUED: False})
        return [list(d) for d in warm.designs]
    if stored.get(_ENQUEUED, True):  # records made before the mark had their designs enqueued at once
        return []
    return [list(d) for d in stored["designs"]]


def mark_designs_enqueued(study: optuna.Study) -> None:
    """Mark the recorded warm start's designs as enqueued (after :func:`apply_warm_start`'s caller has)."""
    stored = study.user_attrs.get(WARM_START_ATTR)
    if stored is not None and not stored.get(_ENQUEUED, True):
        study.set_user_attr(WARM_START_ATTR, {**stored, _ENQUEUED: True})


@dataclasses.dataclass(frozen=True, eq=False)
class SourcePrior:
    """What the sampler's prior mean is fitted on: the source points restricted to the shared domains.

    Attributes:
        X: ``n x S`` source mixtures over the shared domains (rows on the simplex).
        y: their values, larger is better.
        shared: the shared domains' indices in the new study's weight order (``S`` of them).
    """

    X: NDArray[np.float64]
    y: NDArray[np.float64]
    shared: tuple[int, ...]

    def key(self) -> tuple[bytes, bytes, tuple[int, ...]]:
        """A hashable identity (for caching the source GP)."""
        return self.X.tobytes(), self.y.tobytes(), self.shared


def stored_prior(study: optuna.Study, n_domains: int) -> SourcePrior | None:
    """The source prior a study was warm-started with (:data:`WARM_START_ATTR`), or None."""
    rec = study.user_attrs.get(WARM_START_ATTR)
    if not isinstance(rec, dict) or not rec.get("X") or rec.get("prior") is False:
        return None
    X = np.asarray(rec["X"], dtype=np.float64)
    y = np.asarray(rec["Y"], dtype=np.float64)
    names = list(rec.get("names") or [])
    shared = tuple(names.index(n) for n in rec.get("mapping", {}).get("shared", []) if n in names)
    if X.ndim != 2 or X.shape[1] != n_domains or len(X) != len(y) or not shared:
        return None
    xs = X[:, list(shared)]
    return SourcePrior(xs / xs.sum(axis=1, keepdims=True), y, shared)


def load_warm_start(cfg: StudyConfig, source: str, storage: str | None = None, *, prior: bool = True) -> WarmStart:
    """Read study ``source`` and map its trials onto ``cfg``'s experts and constraints (``launch --warm-start``).

    Args:
        cfg: the new study's config.
        source: the source study's name.
        storage: the source's DB URL. Defaults to ``cfg.storage`` when set (one shared DB), else the
            source's default SQLite file ``studies/<source>/study.db``.
        prior: use the source's posterior mean as the GP's prior mean (else only its best mixtures).

    Raises:
        WarmStartError: the source is the study itself, is missing, or cannot inform this study.
    """
    import optuna

    from dmo_search.config import default_storage
    from dmo_search.study import hide_password, open_storage

    url = storage or cfg.storage or default_storage(source)
    if source == cfg.study_name and url == cfg.storage_url():
        raise WarmStartError(f"study {source!r} cannot warm-start from itself; name another study")
    st = open_storage(url, create=False)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(st, include_best_trial=False)]
    if source not in names:
        raise WarmStartError(
            f"no study {source!r} to warm-start from in {hide_password(url)}; studies there: {names or 'none'}; "
            "pass --warm-start-storage URL"
        )
    study = optuna.load_study(study_name=source, storage=st)
    return warm_start_from_study(
        study, cfg.expert_names, constraints=cfg.constraints(), storage_label=hide_password(url), prior=prior
    )


def enqueue_warm_start(study: optuna.Study, warm: WarmStart) -> int:
    """Record ``warm`` in ``study`` (:func:`apply_warm_start`) and enqueue its designs; returns how many
    were enqueued now."""
    designs = apply_warm_start(study, warm)
    before = len(study.get_trials(deepcopy=False))
    for w in designs:
        study.enqueue_trial(
            simplex.weights_to_params(w), user_attrs={"design": True, "warm_start": True}, skip_if_exists=True
        )
    mark_designs_enqueued(study)
    return len(study.get_trials(deepcopy=False)) - before
