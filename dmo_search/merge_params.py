"""The merge methods' names and hyper-parameters with their defaults (no torch: the config reads it).

The defaults are those of the paper's ``model_merging.py`` (BerasiDavide/mLLMs_merging_4_DMO, adapted
from WalkerWorldPeace/MLLMerging ``LLaMA-Factory/model_merging.py``); :mod:`dmo_search.merge_methods`
holds the definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

__all__ = ["METHOD_PARAMS", "MergeMethodName", "ParamValue", "resolve_params"]

MergeMethodName = Literal["linear", "ties", "dare_linear", "dare_ties", "tsv", "iso", "wudi", "wudi2"]
ParamValue = float | int | bool | str

# method -> {parameter: default}. The value's type is the parameter's type (an int default also takes
# whole floats such as 300.0; a float default also takes ints).
METHOD_PARAMS: dict[str, dict[str, ParamValue]] = {
    "linear": {},
    "ties": {"mask_rate": 0.8, "scaling_coefficient": 1.0},
    "dare_linear": {"drop_rate": 0.2, "rescale": True, "scaling_coefficient": 1.0},
    "dare_ties": {"drop_rate": 0.2, "rescale": True, "mask_rate": 0.8, "scaling_coefficient": 1.0},
    "tsv": {"scope": "all_2d", "scaling_coefficient": 1.0},
    "iso": {"scaling_coefficient": 1.0},
    "wudi": {"steps": 300, "lr": 1e-5, "scaling_coefficient": 1.0},
    "wudi2": {"steps": 300, "lr": 1e-4, "momentum": 0.9, "scaling_coefficient": 1.0},
}
assert set(METHOD_PARAMS) == set(get_args(MergeMethodName))

_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {("tsv", "scope"): ("all_2d", "lm_head")}
_UNIT: set[str] = {"mask_rate", "drop_rate", "momentum"}  # fractions in [0, 1)


def _coerce(method: str, name: str, value: object, default: ParamValue) -> ParamValue:
    where = f"merge.params.{name} (method {method!r})"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
            raise ValueError(f"{where} must be a whole number >= 1, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} must be a number, got {value!r}")
        x = float(value)
        if name in _UNIT and not 0.0 <= x < 1.0:
            raise ValueError(f"{where} must lie in [0, 1), got {value!r}")
        if name == "lr" and x <= 0:
            raise ValueError(f"{where} must be > 0, got {value!r}")
        return x
    choices = _CHOICES[(method, name)]
    if value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")
    return str(value)


def resolve_params(method: str, params: Mapping[str, object] | None = None) -> dict[str, ParamValue]:
    """The method's full parameter set: its defaults overridden by ``params``, type-checked.

    Raises:
        ValueError: an unknown method, an unknown parameter (the message lists the allowed ones) or a
            value of the wrong type or range.
    """
    if method not in METHOD_PARAMS:
        raise ValueError(f"unknown merge method {method!r}; choose one of {list(METHOD_PARAMS)}")
    defaults = METHOD_PARAMS[method]
    given = dict(params or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        allowed = sorted(defaults) or "none"
        raise ValueError(f"merge.params {unknown} are not parameters of method {method!r}; allowed: {allowed}")
    return {k: _coerce(method, k, given[k], d) if k in given else d for k, d in defaults.items()}
