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

from dmo_search.config import StudyConfig, parse_config

if TYPE_CHECKING:
    from dmo_search.objectives.base import ObjectiveResult

__all__ = ["config_with_method", "score_with_method"]


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
    order, and shuts the backend down (a vLLM engine is closed) before returning.

    Args:
        cfg: the study config (base, experts, objective, backend).
        method: a merge method name (README: Merge methods).
        mixtures: weight vectors, K floats each, in ``cfg.expert_names`` order.
        params: the method's hyper-parameters (defaults: the paper code's).
        seed: ``merge.seed`` for DARE (default: the config's).
    """
    from dmo_search.backends import make_backend
    from dmo_search.objectives import make_objective
    from dmo_search.study import evaluate_mixture

    mcfg = config_with_method(cfg, method, params, seed=seed)
    objective = make_objective(mcfg.objective)
    backend = make_backend(mcfg)
    try:
        out = [evaluate_mixture(backend, objective, w)[0] for w in mixtures]
        backend.restore_base()
        return out
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
