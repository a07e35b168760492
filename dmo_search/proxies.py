"""Scoring mixtures under another merge method: the proxies a comparison of methods needs.

A merge method is a config field (``merge.method``, ``merge.params``, ``merge.seed``), so comparing
proxies is scoring the same mixtures with configs that differ only there:

    >>> for method in ("linear", "ties", "tsv"):                         # doctest: +SKIP
    ...     results = score_with_method(cfg, method, mixtures)
    ...     proxy[method] = [r.value for r in results]

``dmo-search report --compare-methods`` can then rank-correlate each ``proxy[method]`` with the SFT
scores of the same mixtures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dmo_search.backends.keeper import KeptBackend
from dmo_search.config import StudyConfig, parse_config

if TYPE_CHECKING:
    from dmo_search.backends import Backend
    from dmo_search.objectives import Objective
    from dmo_search.objectives.base import ObjectiveResult

__all__ = ["MethodScorer", "config_with_method", "score_with_method"]


def config_with_method(
    cfg: StudyConfig,
    method: str,
    params: Mapping[str, object] | None = None,
    *,
    seed: int | None = None,
) -> StudyConfig:
    """``cfg`` with ``merge.method`` / ``merge.params`` (and ``merge.seed`` if given) replaced, re-validated.

    A ``lora``-mode vLLM backend is switched to ``auto`` for a non-linear method (the rank
    concatenation is linear only; ``auto`` then picks the dense path).

    Raises:
        ConfigError: an unknown method or parameter (the message lists the allowed ones).
    """
    data: dict[str, Any] = json.loads(cfg.to_json())
    data["merge"] = {**data["merge"], "method": method, "params": dict(params or {})}
    if seed is not None:
        data["merge"]["seed"] = seed
    if method != "linear" and data["backend"].get("mode") == "lora":
        data["backend"]["mode"] = "auto"
    return parse_config(data, source=f"config with merge.method {method!r}")


class MethodScorer(KeptBackend):
    """Scores mixtures under one merge method after another on as few backend starts as it can: the
    first method starts the study's backend, each later one is switched in place (``set_merge``: the
    base and the experts stay loaded) where the backend can (``hf``, vLLM in dense mode), else a new
    backend is started for it. A context manager; :meth:`close` stops the backend."""

    def __init__(self, cfg: StudyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._objective: Objective | None = None  # the same for every method: built once

    def score(
        self,
        method: str,
        mixtures: Sequence[Sequence[float]],
        *,
        params: Mapping[str, object] | None = None,
        seed: int | None = None,
    ) -> list[ObjectiveResult]:
        """Score each mixture's merged model under ``method`` (see :func:`score_with_method`)."""
        from dmo_search.backends import MethodBackend
        from dmo_search.objectives import make_objective
        from dmo_search.study import evaluate_mixture

        mcfg = config_with_method(self.cfg, method, params, seed=seed)

        def in_place(b: Backend) -> bool:
            if not isinstance(b, MethodBackend) or self.started_cfg is None or self.started_cfg.backend != mcfg.backend:
                return False  # another backend mode (a non-linear method leaves vLLM's lora mode)
            b.set_merge(mcfg.merge)
            return True

        backend = self.get(mcfg, in_place, "method switched")
        if self._objective is None:
            self._objective = make_objective(self.cfg.objective)  # a method changes the merge, not this
        out = [evaluate_mixture(backend, self._objective, w)[0] for w in mixtures]
        backend.restore_base()
        return out


def score_with_method(
    cfg: StudyConfig,
    method: str,
    mixtures: Sequence[Sequence[float]],
    *,
    params: Mapping[str, object] | None = None,
    seed: int | None = None,
) -> list[ObjectiveResult]:
    """Score each mixture's merged model under ``method`` with the study's backend and objective.

    Starts one backend for the method (it loads the base and experts once), scores the mixtures in
    order, and shuts the backend down (a vLLM engine is closed) before returning. To score several
    methods on one backend, use :class:`MethodScorer`.

    Args:
        cfg: the study config (base, experts, objective, backend).
        method: a merge method name (README: Merge methods).
        mixtures: weight vectors, K floats each, in ``cfg.expert_names`` order.
        params: the method's hyper-parameters (defaults: the paper code's).
        seed: ``merge.seed`` for DARE (default: the config's).
    """
    with MethodScorer(cfg) as scorer:
        return scorer.score(method, mixtures, params=params, seed=seed)
