"""Scoring promoted models the way the study scored its proxies: the study's objective (same fixed
validation subsets) on the study's backend.

A trained checkpoint is served by the study's own backend with no mixture applied, so generation,
prompt formatting and metrics are the very code that scored the merged proxies. A
:class:`PromotionScorer` keeps one backend for a promotion's merged proxies and then its checkpoints,
loading each checkpoint into it in place where it can (``hf``, vLLM's dense mode), instead of starting
an engine for the proxies and one per checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dmo_search.backends.keeper import KeptBackend

if TYPE_CHECKING:
    from dmo_search.backends import Backend
    from dmo_search.config import StudyConfig
    from dmo_search.objectives import Objective, ObjectiveResult

__all__ = ["PromotionScorer", "Score", "full_objective", "scoring_config"]


@dataclass(frozen=True)
class Score:
    """An aggregate value, its bootstrap SE, per-domain scores and the scoring wall time."""

    value: float
    value_se: float
    scores: dict[str, float]
    eval_seconds: float

    @classmethod
    def of(cls, result: ObjectiveResult, seconds: float) -> Score:
        """From an objective's result."""
        return cls(result.value, result.value_se, dict(result.scores), seconds)


def full_objective(cfg: StudyConfig) -> Objective:
    """The study's objective on every validation example (no subset, no fidelities)."""
    from dmo_search.objectives import make_objective

    return make_objective(cfg.objective.model_copy(update={"subset_size": None, "fidelities": None}))


def scoring_config(cfg: StudyConfig, model_dir: Path) -> StudyConfig:
    """``cfg`` with ``model_dir`` as its base model (the backend then serves that checkpoint)."""
    return cfg.model_copy(update={"base_model": Path(model_dir).resolve()})


class PromotionScorer(KeptBackend):
    """Scores a promotion's merged proxies and trained checkpoints on as few backend starts as it can.

    Merged proxies (:meth:`score_mixtures`) are scored on the study's backend (started on the study's
    base model, or kept from earlier proxies: a checkpoint served meanwhile is replaced by the base
    before the next merge). A checkpoint (:meth:`score`) is loaded into the running backend in place
    when it can serve checkpoints (``serve_checkpoint``: vLLM in ``dense`` mode, a fraction of a second
    for the toy world where an engine start takes ~20 s; ``hf`` without loading the experts again),
    else, or after an in-place load failed (an engine that died, another architecture), a new backend is
    started on it (:func:`scoring_config`), which then serves no merges. Use it as a context manager;
    :meth:`close` stops the backend.
    """

    def __init__(self, cfg: StudyConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def score_mixtures(self, jobs: Sequence[tuple[Sequence[float], Sequence[Objective]]]) -> list[list[Score]]:
        """Proxy scores of ``(mixture, objectives)`` jobs: each mixture merged in place (as a trial is)
        and scored by each of its objectives.

        Raises:
            BackendError: the study's backend did not start.
        """
        if not jobs:
            return []
        # a backend started on a checkpoint merges relative to it, not to the study's base: not reused
        backend = self.get(self.cfg, lambda _b: self.started_cfg is self.cfg, "study backend kept")
        out = []
        for w, objectives in jobs:
            backend.set_mixture(w)  # once for all its objectives
            out.append(_evaluate(backend, objectives))
        return out

    def score(self, model_dir: Path, objectives: Sequence[Objective]) -> list[Score]:
        """Score the checkpoint at ``model_dir`` with each objective.

        Raises:
            BackendError: no backend could serve it (the in-place failure and the start failure named).
        """
        from dmo_search.backends import CheckpointBackend

        def in_place(b: Backend) -> bool:
            if not (isinstance(b, CheckpointBackend) and b.serves_checkpoints):
                return False
            b.serve_checkpoint(model_dir)
            return True

        return _evaluate(self.get(scoring_config(self.cfg, model_dir), in_place, "checkpoint loaded"), objectives)


def _evaluate(backend: Backend, objectives: Sequence[Objective]) -> list[Score]:
    """Each objective's score of the model the backend serves now, with its wall time."""
    out = []
    for objective in objectives:
        t0 = time.perf_counter()
        result = objective.evaluate(backend)
        out.append(Score.of(result, time.perf_counter() - t0))
    return out
