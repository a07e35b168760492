"""What every objective returns, and how per-domain scores are aggregated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from dmo_search.backends import Backend

__all__ = ["Objective", "ObjectiveError", "ObjectiveResult", "aggregate", "bootstrap_se"]


class ObjectiveError(RuntimeError):
    """A domain could not be scored; the candidate fails instead of being scored on fewer domains."""


@dataclass(frozen=True)
class ObjectiveResult:
    """A candidate's scores.

    Attributes:
        value: the aggregate (higher is better).
        scores: per-domain scores.
        value_se: bootstrap standard error of ``value`` over the validation examples (:func:`bootstrap_se`).
        n_examples: examples scored per domain.
    """

    value: float
    scores: dict[str, float]
    value_se: float
    n_examples: dict[str, int] = field(default_factory=dict)


class Objective(Protocol):
    """Scores the model the backend currently serves."""

    domains: list[str]
    fidelities: list[int] | None  # nested subset sizes for multi-fidelity pruning (None: off)

    def evaluate(self, backend: Backend, *, n: int | None = None) -> ObjectiveResult:
        """Score the backend's current model on every domain; ``n``: on a nested seeded sub-sample of
        ``n`` examples per domain of the fixed subset (all when None)."""
        ...

    def record(self) -> dict[str, object]:
        """What the study stores about the objective (e.g. the fixed subsets)."""
        ...


def aggregate(scores: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """Unweighted mean of ``scores``, or their weighted mean with ``weights`` (must cover them all).

    Raises:
        ObjectiveError: a domain is missing a score or a weight; nothing is dropped silently.
    """
    if not scores:
        raise ObjectiveError("no domain was scored")
    if weights is None:
        return float(np.mean(list(scores.values())))
    missing = sorted(set(weights) - set(scores))
    if missing:
        raise ObjectiveError(f"domains {missing} have an aggregation weight but no score")
    total = sum(weights.values())
    return float(sum(weights[d] * scores[d] for d in weights) / total)


def bootstrap_se(
    per_example: Mapping[str, Sequence[float]],
    weights: Mapping[str, float] | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> float:
    """Bootstrap standard error of the aggregate: resample each domain's examples independently.

    A domain of two or more scores in ``[0, 1]`` (accuracy, exact match) is resampled from its scores
    plus one pseudo-score 0 and one 1 (Laplace smoothing): the plain bootstrap gives 0 whenever a domain's
    examples all agree, e.g. 2 of 2 correct, although the accuracy is then known only to within tens of
    points, and a study scored on a small subset looked noiseless. The smoothed variance is
    ``p(1 - p) / n`` with ``p = (correct + 1) / (n + 2)`` for 0/1 scores (one right answer of 2: as
    before); its effect fades as ``1 / n``. A domain of one score (a corpus-level metric) counts as exact.
    """
    rng = np.random.default_rng(seed)
    domains = list(per_example)
    arrays = {d: np.asarray(per_example[d], dtype=float) for d in domains}
    pools = {d: _smoothed(a) for d, a in arrays.items()}
    boots = np.empty(n_boot)
    for b in range(n_boot):
        means = {d: float(pools[d][rng.integers(0, len(pools[d]), len(a))].mean()) for d, a in arrays.items()}
        boots[b] = aggregate(means, weights)
    return float(boots.std(ddof=1))


def _smoothed(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """``scores`` with a pseudo-score 0 and 1 appended when there are two or more, all in ``[0, 1]``."""
    if len(scores) < 2 or not bool(np.all((scores >= 0.0) & (scores <= 1.0))):
        return scores
    return np.concatenate([scores, [0.0, 1.0]])
