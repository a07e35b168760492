"""dmo-search: Bayesian-optimisation search over data-mixture weights.

Heavy dependencies (torch, BoTorch) load on first use, not at ``import dmo_search``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["SimplexOptimizationResult", "__version__", "optimize_simplex"]

# Public name -> the private module that defines it, imported on first access.
_LAZY_EXPORTS = {
    "SimplexOptimizationResult": "dmo_search.optimize",
    "optimize_simplex": "dmo_search.optimize",
}

if TYPE_CHECKING:
    from dmo_search.optimize import SimplexOptimizationResult, optimize_simplex


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dmo_search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
