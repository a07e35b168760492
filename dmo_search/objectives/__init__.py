"""What a trial is scored on. Each objective returns per-domain scores; aggregation is explicit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmo_search.objectives.base import Objective, ObjectiveError, ObjectiveResult, aggregate, bootstrap_se

if TYPE_CHECKING:
    from dmo_search.config import ObjectiveConfig

__all__ = ["Objective", "ObjectiveError", "ObjectiveResult", "aggregate", "bootstrap_se", "make_objective"]


def make_objective(cfg: ObjectiveConfig) -> Objective:
    """Build the objective named by ``cfg.type`` (loads and subsets the validation files)."""
    from dmo_search.objectives.local import ExactMatchObjective, LoglikObjective

    if cfg.type == "exact_match":
        return ExactMatchObjective(cfg)
    if cfg.type == "loglik":
        return LoglikObjective(cfg)
    if cfg.type == "lm_eval":
        from dmo_search.objectives.harness import LMEvalObjective

        return LMEvalObjective(cfg)
    if cfg.type == "lmms_eval":
        from dmo_search.objectives.lmms import LMMSEvalObjective

        return LMMSEvalObjective(cfg)
    raise ValueError(f"unknown objective type {cfg.type!r}; choose 'exact_match', 'loglik', 'lm_eval' or 'lmms_eval'")
