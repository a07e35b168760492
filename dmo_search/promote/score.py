"""Scoring promoted models the way the study scored its proxies: the study's objective (same fixed
validation subsets) on the study's backend.

A trained checkpoint is served by the study's own backend started with the checkpoint as its base
model and no mixture applied (the backend serves ``theta_0``, here the SFT model), so generation,
prompt formatting and metrics are the very code that scored the merged proxies. A
:class:`CheckpointScorer` keeps that backend for the next checkpoints and loads each into it in place
where it can (``hf``, vLLM's dense mode), instead of starting an engine per checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmo_search.backends import Backend
    from dmo_search.config import StudyConfig
    from dmo_search.objectives import Objective, ObjectiveResult

__all__ = [
    "CheckpointScorer",
    "Score",
    "full_objective",
    "score_mixtures",
    "score_mixtures_many",
    "score_model_many",
    "scoring_config",
]


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


class CheckpointScorer:
    """Scores checkpoints one after another on as few backend starts as it can.

    The first checkpoint starts the study's backend on it (:func:`scoring_config`); each later one is
    loaded into that running backend in place when it can serve checkpoints (``serve_checkpoint``: vLLM
    in ``dense`` mode, a fraction of a second for the toy world where an engine start takes ~20 s; ``hf``
    without loading the experts again), else, or after an in-place load failed (an engine that died,
    another architecture), a new backend is started on it. Use it as a context manager; :meth:`close`
    stops the backend.
    """

    def __init__(self, cfg: StudyConfig) -> None:
        self.cfg = cfg
        self.backend: Backend | None = None
        self.starts = 0
        self.last_load = ""  # how the last checkpoint was put in place, for progress lines

    def _serve(self, model_dir: Path) -> Backend:
        """The backend, serving ``model_dir``: loaded in place, or on a new backend started on it.

        Raises:
            BackendError: the new backend did not start (with why the in-place load failed first, if it did).
        """
        from dmo_search.backends import BackendError, CheckpointBackend, make_backend

        t0 = time.perf_counter()
        b = self.backend
        refused = ""
        if isinstance(b, CheckpointBackend) and b.serves_checkpoints:
            try:
                b.serve_checkpoint(model_dir)
                self.last_load = f"checkpoint loaded in place in {time.perf_counter() - t0:.2f}s"
                return b
            except Exception as e:  # a dead engine, another architecture: a new backend is tried
                refused = f"in-place load failed ({type(e).__name__}: {e}); "
        self.close()
        try:
            self.backend = make_backend(scoring_config(self.cfg, model_dir))
        except Exception as e:
            if not refused:
                raise
            raise BackendError(f"{refused}a new backend on it failed too: {type(e).__name__}: {e}") from e
        self.starts += 1
        self.last_load = f"{refused}engine started on it in {time.perf_counter() - t0:.1f}s"
        return self.backend

    def score(self, model_dir: Path, objectives: Sequence[Objective]) -> list[Score]:
        """Score the checkpoint at ``model_dir`` with each objective."""
        backend = self._serve(Path(model_dir))
        out = []
        for objective in objectives:
            t0 = time.perf_counter()
            result = objective.evaluate(backend)
            out.append(Score.of(result, time.perf_counter() - t0))
        return out

    def close(self) -> None:
        """Stop the backend (a later :meth:`score` starts a new one)."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self) -> CheckpointScorer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def score_model_many(cfg: StudyConfig, model_dir: Path, objectives: Sequence[Objective]) -> list[Score]:
    """Score the checkpoint at ``model_dir`` with each objective, on one start of the study's backend."""
    with CheckpointScorer(cfg) as scorer:
        return scorer.score(model_dir, objectives)


def score_mixtures(cfg: StudyConfig, weights: Sequence[Sequence[float]], objective: Objective) -> list[Score]:
    """Proxy scores of mixtures: each merged in place on one backend and scored (as a trial is)."""
    return [scores[0] for scores in score_mixtures_many(cfg, [(w, [objective]) for w in weights])]


def score_mixtures_many(
    cfg: StudyConfig, jobs: Sequence[tuple[Sequence[float], Sequence[Objective]]]
) -> list[list[Score]]:
    """Proxy scores of ``(mixture, objectives)`` jobs, all on one start of the study's backend: each
    mixture merged in place and scored by each of its objectives."""
    from dmo_search.backends import make_backend
    from dmo_search.study import evaluate_mixture

    if not jobs:
        return []
    backend = make_backend(cfg)
    try:
        out = []
        for w, objectives in jobs:
            scores = []
            for objective in objectives:
                result, _merge_s, eval_s = evaluate_mixture(backend, objective, w)
                scores.append(Score.of(result, eval_s))
            out.append(scores)
        return out
    finally:
        backend.close()
